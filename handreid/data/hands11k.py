"""11k Hands: ``HandInfo.csv`` + ``Hands/Hand_XXXXXXX.jpg``.

The CSV lists every image of the release; copies that hold only part of the images are
common, so rows whose file is absent are skipped with one warning that gives the counts.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

from handreid.config import ASPECTS, TrainConfig
from handreid.data.base import Record
from handreid.data.splits import Catalog
from handreid.errors import DataError

CSV_NAME = "HandInfo.csv"
IMAGE_DIR = "Hands"
COLUMNS = (
    "id",
    "age",
    "gender",
    "skinColor",
    "accessories",
    "nailPolish",
    "aspectOfHand",
    "imageName",
    "irregularities",
)
REQUIRED = ("id", "accessories", "aspectOfHand", "imageName")  # the columns the loader reads
# Published protocol (MBA-Net, CLIP-HandID): subject ids up to these are training ids.
PUBLISHED_TRAIN_MAX = {
    "dorsal right": 1050,
    "dorsal left": 1037,
    "palmar right": 1051,
    "palmar left": 1042,
}


def read_rows(root: Path) -> list[dict[str, str]]:
    """Rows of ``HandInfo.csv`` with stripped keys and values; checks the required columns."""
    path = root / CSV_NAME
    if not path.is_file():
        raise DataError(f"{path} not found; an 11k Hands folder holds {CSV_NAME} and {IMAGE_DIR}/")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}"
            )
        return [
            {
                k: v.strip() for k, v in zip(header, row, strict=False)
            }  # ragged rows: extra cells ignored
            for row in reader
            if any(c.strip() for c in row)
        ]


def check_aspects(aspects: tuple[str, ...]) -> tuple[str, ...]:
    """Normalise aspect names; ``("all",)`` means all four."""
    aspects = tuple(a.strip().lower() for a in aspects)
    if aspects == ("all",):
        return ASPECTS
    for a in aspects:
        if a not in ASPECTS:
            raise DataError(f"unknown aspect {a!r}; choose from {list(ASPECTS)} or 'all'")
    if not aspects:
        raise DataError(f"no aspect given; choose from {list(ASPECTS)} or 'all'")
    return aspects


def load_catalog(root: Path, cfg: TrainConfig) -> Catalog:
    """Records of the selected aspects (and accessory filter) whose image exists."""
    aspects = check_aspects(cfg.aspects)
    rows = read_rows(root)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(
            f"{image_dir} not found; an 11k Hands folder holds {CSV_NAME} and {IMAGE_DIR}/"
        )
    present = set(os.listdir(image_dir))
    found = sorted({r["imageName"] for r in rows if r["imageName"] in present})
    missing = sum(r["imageName"] not in present for r in rows)
    if not found:
        raise DataError(f"none of the {len(rows)} images listed in {CSV_NAME} exist in {image_dir}")
    if missing:
        warnings.warn(
            f"{CSV_NAME} lists {len(rows)} images; {missing} are missing from {image_dir} and "
            f"were skipped ({len(found)} found)",
            stacklevel=4,  # point at the caller of load_splits
        )
    selected = [r for r in rows if _keep(r, aspects, cfg.exclude_accessories, root)]
    records = [_record(r, root, len(aspects) > 1) for r in selected if r["imageName"] in present]
    if not records:
        accessories = ", accessories == 0" if cfg.exclude_accessories else ""
        raise DataError(
            f"no identity left after filtering (aspects {list(aspects)}{accessories}): "
            f"{len(selected)} listed rows match, none with an image present"
        )
    return Catalog(
        layout="11k",
        records=records,
        found=[image_dir / name for name in found],
        missing=missing,
        coverage=len(records) / len(selected),
        aspects=aspects,
        published=_published_rule(records),
    )


def _keep(
    row: dict[str, str], aspects: tuple[str, ...], exclude_accessories: bool, root: Path
) -> bool:
    if row["aspectOfHand"].lower() not in aspects:
        return False
    if not exclude_accessories:
        return True
    try:
        return int(row["accessories"]) == 0
    except ValueError:
        raise DataError(
            f"{root / CSV_NAME}: accessories={row['accessories']!r} for {row['imageName']} is not 0 or 1"
        ) from None


def _record(row: dict[str, str], root: Path, several_aspects: bool) -> Record:
    subject = row["id"]
    aspect = row["aspectOfHand"].lower()
    identity = f"{subject}|{aspect}" if several_aspects else subject
    return Record(root / IMAGE_DIR / row["imageName"], identity, subject, aspect)


def _published_rule(records: list[Record]):
    if not all(r.subject.isdigit() for r in records):
        return None  # the thresholds compare ids as integers

    def is_train(record: Record) -> bool:
        return int(record.subject) <= PUBLISHED_TRAIN_MAX[record.aspect]

    return is_train


__all__ = ["COLUMNS", "PUBLISHED_TRAIN_MAX", "check_aspects", "load_catalog", "read_rows"]
