"""11k Hands: ``HandInfo.csv`` + ``Hands/Hand_XXXXXXX.jpg``.

The CSV lists every image of the release; copies that hold only part of the images are
common, so rows whose file is absent are skipped with one warning that gives the counts.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections import Counter
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
    """Rows of ``HandInfo.csv`` with stripped keys and values; checks the required columns.

    Blank rows are skipped and cells past the header ignored; a row too short to hold a
    required column (a truncated file) is an error naming its line.
    """
    path = root / CSV_NAME
    if not path.is_file():
        raise DataError(f"{path} not found; an 11k Hands folder holds {CSV_NAME} and {IMAGE_DIR}/")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 (the official file is plain ASCII)"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _rows(reader, path)
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: not a readable CSV row ({exc})") from None


def _rows(reader, path: Path) -> list[dict[str, str]]:
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}"
        )
    # a row must reach the last position of every required column (dict(zip) keeps the last)
    need = max(len(header) - header[::-1].index(c) for c in REQUIRED)
    rows = []
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        if len(row) < need:
            absent = [c for c in REQUIRED if c not in header[: len(row)]]
            raise DataError(
                f"{path} line {reader.line_num}: {len(row)} cell(s), so no "
                f"{', '.join(absent) or 'value for a repeated column'}; the header has "
                f"{len(header)} columns (a truncated or hand-edited file?)"
            )
        rows.append({k: v.strip() for k, v in zip(header, row, strict=False)})
    return rows


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
    rows = _usable(read_rows(root), root)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(
            f"{image_dir} not found; an 11k Hands folder holds {CSV_NAME} and {IMAGE_DIR}/"
        )
    try:
        present = set(os.listdir(image_dir))
    except OSError as exc:
        raise DataError(f"cannot list {image_dir}: {exc.strerror or exc}") from None
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


def _usable(rows: list[dict[str, str]], root: Path) -> list[dict[str, str]]:
    """Rows with an id and a known aspect. The others are skipped with a warning that counts
    them: an empty id must not become an identity, and a misspelt aspect must not vanish."""
    no_id = sum(not r["id"] for r in rows)
    if no_id:
        warnings.warn(
            f"{root / CSV_NAME}: {no_id} row(s) with an empty id were skipped", stacklevel=5
        )
    unknown = Counter(r["aspectOfHand"] for r in rows if r["aspectOfHand"].lower() not in ASPECTS)
    if unknown:
        listed = ", ".join(f"{a[:40]!r} x{n}" for a, n in unknown.most_common(3))
        more = f" and {len(unknown) - 3} more values" if len(unknown) > 3 else ""
        warnings.warn(
            f"{root / CSV_NAME}: {sum(unknown.values())} row(s) with an unknown aspectOfHand "
            f"({listed}{more}) were skipped; known aspects are {list(ASPECTS)}",
            stacklevel=5,
        )
    return [r for r in rows if r["id"] and r["aspectOfHand"].lower() in ASPECTS]


def _keep(
    row: dict[str, str], aspects: tuple[str, ...], exclude_accessories: bool, root: Path
) -> bool:
    if row["aspectOfHand"].lower() not in aspects:
        return False
    if not exclude_accessories:
        return True
    if row["accessories"] not in ("0", "1"):
        raise DataError(
            f"{root / CSV_NAME}: accessories={row['accessories'][:40]!r} for "
            f"{row['imageName'][:60]!r} is not 0 or 1"
        )
    return row["accessories"] == "0"


def _record(row: dict[str, str], root: Path, several_aspects: bool) -> Record:
    subject = row["id"]
    aspect = row["aspectOfHand"].lower()
    identity = f"{subject}|{aspect}" if several_aspects else subject
    return Record(root / IMAGE_DIR / row["imageName"], identity, subject, aspect)


def _published_rule(records: list[Record]):
    if not all(r.subject.isascii() and r.subject.isdigit() for r in records):
        return None  # the thresholds compare ids as integers

    def is_train(record: Record) -> bool:
        return int(record.subject) <= PUBLISHED_TRAIN_MAX[record.aspect]

    return is_train


__all__ = ["COLUMNS", "PUBLISHED_TRAIN_MAX", "check_aspects", "load_catalog", "read_rows"]
