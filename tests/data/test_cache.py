from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from handreid.data import cache
from handreid.data.cache import load_images
from handreid.errors import DataError


def make_images(folder: Path, n: int = 5, size: tuple[int, int] = (40, 30)) -> list[Path]:
    """n JPEGs of (w, h) = size with distinct content."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img{i}.jpg"
        Image.fromarray(arr).save(path, quality=95)
        paths.append(path)
    return paths


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(cache, "decode_image", fail)


def test_shape_dtype_and_values(tmp_path):
    paths = make_images(tmp_path / "img", n=4, size=(40, 30))
    out = load_images(paths, (16, 24), cache_dir=tmp_path / "c", workers=2)
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 16, 24)
    expected = np.asarray(Image.open(paths[2]).convert("RGB").resize((24, 16), Image.BILINEAR))
    assert np.array_equal(out[2].permute(1, 2, 0).numpy(), expected)
    assert load_images([], (8, 8), cache_dir=tmp_path / "c").shape == (0, 3, 8, 8)


def test_second_call_reuses_cache(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "img")
    first = load_images(paths, (20, 20), cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1
    assert not list((tmp_path / "c").glob("*.tmp"))
    _forbid_decoding(monkeypatch)
    second = load_images(paths, (20, 20), cache_dir=tmp_path / "c")
    assert torch.equal(first, second)


def test_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDREID_CACHE", str(tmp_path / "env-cache"))
    load_images(make_images(tmp_path / "img", n=2), (8, 8))
    assert len(list((tmp_path / "env-cache").glob("*.npy"))) == 1


def _count_decodes(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = cache.decode_image

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def test_touch_modify_and_size_change_invalidate(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "img", n=3)
    load_images(paths, (12, 12), cache_dir=tmp_path / "c")
    calls = _count_decodes(monkeypatch)

    load_images(paths, (12, 12), cache_dir=tmp_path / "c")
    assert calls == []

    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch
    load_images(paths, (12, 12), cache_dir=tmp_path / "c")
    assert len(calls) == 3

    Image.new("RGB", (40, 30), (255, 0, 0)).save(paths[1])  # new content
    red = load_images(paths, (12, 12), cache_dir=tmp_path / "c")
    assert len(calls) == 6
    assert red[1, 0].min() > 200 and red[1, 1].max() < 60

    load_images(paths, (12, 16), cache_dir=tmp_path / "c")  # other size
    assert len(calls) == 9
    load_images(paths[:2], (12, 12), cache_dir=tmp_path / "c")  # other file list
    assert len(calls) == 11


def test_corrupt_images_are_named(tmp_path):
    paths = make_images(tmp_path / "img", n=6)
    for p in paths[1:5]:
        p.write_bytes(p.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError) as err:
        load_images(paths, (16, 16), cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert msg.startswith("4 image(s) could not be read:")
    assert "img1.jpg" in msg and "img3.jpg" in msg and "and 1 more" in msg
    assert "img0.jpg" not in msg and "\n" not in msg
    assert not list((tmp_path / "c").glob("*.npy"))


def test_a_fifo_or_folder_named_like_an_image_is_named_and_never_opened(tmp_path, mkfifo):
    paths = make_images(tmp_path / "img", n=2)
    fifo = mkfifo(tmp_path / "img" / "pipe.jpg")
    (tmp_path / "img" / "dir.jpg").mkdir()
    with pytest.raises(DataError) as err:
        load_images([*paths, fifo, tmp_path / "img" / "dir.jpg"], (16, 16), tmp_path / "c")
    msg = str(err.value)
    assert msg.startswith("2 image(s) could not be read:") and "dir.jpg" in msg
    assert f"{fifo} is a FIFO (named pipe), not an image file" in decode_error(fifo)


def decode_error(path: Path) -> str:
    with pytest.raises(OSError) as err:
        cache.decode_image(path, (16, 16))
    return str(err.value)


def test_missing_file_is_named(tmp_path):
    paths = make_images(tmp_path / "img", n=2) + [tmp_path / "img" / "gone.jpg"]
    with pytest.raises(DataError, match="image not found: .*gone.jpg"):
        load_images(paths, (16, 16), cache_dir=tmp_path / "c")


def test_large_jpeg_uses_draft_and_matches_full_decode(tmp_path):
    # A smooth 1600x1200 picture: draft decoding at 1/4 scale must stay close to a full decode.
    small = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((1600, 1200), Image.BILINEAR)
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    out = load_images([path], (224, 224), cache_dir=tmp_path / "c")[0].permute(1, 2, 0).numpy()
    full = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 3


def test_grey_and_png_become_rgb(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(tmp_path / "a.png")
    out = load_images([tmp_path / "g.png", tmp_path / "a.png"], (5, 5), cache_dir=tmp_path / "c")
    assert out[0].unique().tolist() == [77]
    assert out[1, :, 0, 0].tolist() == [1, 2, 3]
