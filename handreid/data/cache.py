"""Decode and resize images once into a uint8 array on disk, then reuse it.

Decoding 1600x1200 JPEGs every epoch dominated the seed trainer's time. Here each image is
decoded once (JPEG draft mode lets libjpeg shrink by 2/4/8 while decoding), resized to the
training size and stored in one ``.npy`` file keyed by the file list, their sizes and
modification times and the target size. Later calls, in this process or another, map that
file instead of decoding; any change to the files or the size gives a new key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from handreid.data.base import special_kind
from handreid.errors import DataError
from handreid.threads import thread_map

CACHE_ENV = "HANDREID_CACHE"
_FORMAT = 1  # bump when the stored layout or the decoding changes


def default_cache_dir() -> Path:
    """``$HANDREID_CACHE`` or ``~/.cache/handreid``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "handreid")


def decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 ``(3, h, w)`` RGB, resized (bilinear, antialiased) to ``size=(h, w)``."""
    h, w = size
    kind = special_kind(path)
    if kind is not None:  # open() on a FIFO or a device waits forever
        raise OSError(f"{path} is {kind}, not an image file")
    with Image.open(path) as img:
        img.draft("RGB", (w, h))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, still >= (w, h)
        img = img.convert("RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        return np.asarray(img).transpose(2, 0, 1)


def cache_key(paths: Sequence[Path], size: tuple[int, int]) -> str:
    """Hash of the files (absolute path, byte size, mtime) and the target size."""
    digest = hashlib.sha256(f"v{_FORMAT} {size[0]}x{size[1]}\n".encode())
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"image not found: {path}") from None
        digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def load_images(
    paths: Sequence[Path],
    size: tuple[int, int],
    cache_dir: str | Path | None = None,
    workers: int = 0,
) -> torch.Tensor:
    """All images as one uint8 tensor ``(N, 3, h, w)`` (``size=(h, w)``), cached on disk.

    ``cache_dir``: ``None`` or ``""`` means ``default_cache_dir()``. ``workers``: decoding
    threads, 0 for ``os.cpu_count()`` (Pillow releases the GIL while decoding and resizing).
    Unreadable images raise ``DataError`` naming them. A cached result is a copy-on-write
    memory map, so processes on one machine share its pages. Take batches with
    ``images.index_select(0, idx)`` (on the CPU about 10x faster than ``images[idx]``).
    """
    paths = [Path(p) for p in paths]
    size = (int(size[0]), int(size[1]))
    if not paths:
        return torch.empty((0, 3, *size), dtype=torch.uint8)
    folder = Path(cache_dir) if cache_dir not in (None, "") else default_cache_dir()
    file = folder / f"images-{size[0]}x{size[1]}-n{len(paths)}-{cache_key(paths, size)}.npy"
    cached = _read(file, (len(paths), 3, *size))
    if cached is not None:
        return torch.from_numpy(cached)
    array = decode_all(paths, size, workers)
    _write(file, array)
    return torch.from_numpy(array)


def decode_all(paths: Sequence[Path], size: tuple[int, int], workers: int = 0) -> np.ndarray:
    """Decode ``paths`` in parallel into uint8 ``(N, 3, h, w)``; DataError names failures."""
    out = np.empty((len(paths), 3, *size), dtype=np.uint8)
    failed: list[tuple[Path, str]] = []

    def work(i: int) -> None:
        try:
            out[i] = decode_image(paths[i], size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            failed.append((paths[i], str(exc) or type(exc).__name__))

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) == 1:
        for i in range(len(paths)):
            work(i)
    else:
        thread_map(work, range(len(paths)), min(workers, len(paths)))
    if failed:
        failed.sort()
        names = ", ".join(str(p) for p, _ in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise DataError(f"{len(failed)} image(s) could not be read: {names}{more} ({failed[0][1]})")
    return out


def _read(file: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not file.is_file():
        return None
    try:
        # Copy-on-write map: pages load on demand, the tensor is writable, the file never changes.
        array = np.load(file, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if array.shape != shape or array.dtype != np.uint8:
        return None
    return array


def _write(file: Path, array: np.ndarray) -> None:
    """Write ``array`` atomically (temporary file + rename), so readers never see half a file."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        warnings.warn(f"could not write the image cache {file}: {exc}", stacklevel=3)


__all__ = [
    "CACHE_ENV",
    "cache_key",
    "decode_all",
    "decode_image",
    "default_cache_dir",
    "load_images",
]
