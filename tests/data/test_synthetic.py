from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from PIL import Image

from handreid.config import ASPECTS, TrainConfig
from handreid.data import load_splits
from handreid.data.hands11k import COLUMNS
from handreid.data.synthetic import write_synthetic


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "Hands").iterdir())}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = write_synthetic(tmp_path / "a", ids=3, per_id=2, size=32, seed=7)
    b = write_synthetic(tmp_path / "b", ids=3, per_id=2, size=32, seed=7)
    c = write_synthetic(tmp_path / "c", ids=3, per_id=2, size=32, seed=8)
    assert a == tmp_path / "a"
    assert _files(a) == _files(b)
    assert (a / "HandInfo.csv").read_bytes() == (b / "HandInfo.csv").read_bytes()
    assert _files(a) != _files(c)


def test_csv_shape_and_images(tmp_path):
    root = write_synthetic(tmp_path / "s", ids=12, per_id=5, size=48, seed=0)
    with open(root / "HandInfo.csv", newline="") as f:
        header = f.readline().strip()
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert header.replace('"', "").split(",") == list(COLUMNS)
    assert len(rows) == 12 * 5 * 4
    assert {r["id"] for r in rows} == {f"{i:07d}" for i in range(12)}
    assert Counter(r["aspectOfHand"] for r in rows) == {a: 60 for a in ASPECTS}
    assert len({r["imageName"] for r in rows}) == len(rows)
    # Rings (accessories = 1) appear for some subjects, never in their first three images.
    assert 0 < sum(r["accessories"] == "1" for r in rows) < len(rows)
    assert {r["nailPolish"] for r in rows} <= {"0", "1"}
    for r in rows[::37]:
        with Image.open(root / "Hands" / r["imageName"]) as img:
            assert img.size == (48, 48) and img.mode == "RGB"


def test_loads_as_11k_dataset(tmp_path):
    root = write_synthetic(tmp_path / "s", ids=10, per_id=4, size=32, seed=0)
    splits = load_splits(TrainConfig(aspects=("all",)), root)
    assert splits.stats["images_missing"] == 0
    assert splits.stats["split"] == "random"  # all ids are below the published thresholds
    ids = {r.identity for r in splits.train} | {r.identity for r in splits.test.records}
    ids |= {r.identity for r in splits.val.records}
    assert len(ids) == 40
