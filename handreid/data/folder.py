"""Any folder of ``<root>/<identity>/<image>`` (jpg, jpeg, png, bmp), split at random."""

from __future__ import annotations

from pathlib import Path

from handreid.config import TrainConfig
from handreid.data.base import Record
from handreid.data.splits import Catalog
from handreid.errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def load_catalog(root: Path, cfg: TrainConfig) -> Catalog:
    """One identity per subfolder; hidden folders and other files are ignored."""
    records = []
    try:
        for folder in sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            for path in sorted(folder.iterdir()):
                # not is_file(): a FIFO or folder named like an image is refused, not skipped
                if is_image(path) and path.exists():
                    records.append(Record(path, folder.name, folder.name))
    except OSError as exc:  # an unreadable subfolder: say which, not a traceback
        raise DataError(f"cannot list {exc.filename or root}: {exc.strerror or exc}") from None
    if not records:
        raise DataError(
            f"no identity left: {root} has no <identity>/<image> subfolders with "
            f"{'/'.join(e[1:] for e in EXTENSIONS)} images"
        )
    return Catalog(layout="folder", records=records, found=[r.path for r in records])


__all__ = ["EXTENSIONS", "is_image", "load_catalog"]
