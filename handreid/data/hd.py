"""PolyU HD (hand dorsal): ``<root>/Original Images/<id>_<n>.jpg``.

Ids 1-501 are split into training and test identities; ids 502-712 are distractors that join
every test gallery and are never queries.
"""

from __future__ import annotations

import re
from pathlib import Path

from handreid.config import TrainConfig
from handreid.data.base import Record
from handreid.data.splits import Catalog
from handreid.errors import DataError

IMAGE_DIR = "Original Images"
FIRST_DISTRACTOR = 502
_NAME = re.compile(r"^(\d+)_(\d+)\.(jpe?g|png|bmp)$", re.IGNORECASE)


def load_catalog(root: Path, cfg: TrainConfig) -> Catalog:
    """Records of ids below 502 plus distractor records of ids 502 and above."""
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"{image_dir} not found; an HD folder holds '{IMAGE_DIR}/<id>_<n>.jpg'")
    try:
        paths = sorted(image_dir.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list {image_dir}: {exc.strerror or exc}") from None
    records, distractors, found = [], [], []
    for path in paths:
        match = _NAME.match(path.name)
        if not match or not path.exists():  # a FIFO or folder here is refused, not skipped
            continue
        found.append(path)
        subject = str(int(match.group(1)))
        record = Record(path, subject, subject)
        (distractors if int(subject) >= FIRST_DISTRACTOR else records).append(record)
    if not records:
        raise DataError(
            f"no identity left: {image_dir} holds no images named <id>_<n>.jpg with id below "
            f"{FIRST_DISTRACTOR} ({len(distractors)} distractor images)"
        )
    return Catalog(layout="hd", records=records, found=found, distractors=distractors)


__all__ = ["FIRST_DISTRACTOR", "IMAGE_DIR", "load_catalog"]
