from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from handreid.config import ASPECTS, TrainConfig
from handreid.data import load_splits
from handreid.data.hands11k import COLUMNS
from handreid.data.synthetic import STAMP, write_synthetic
from handreid.errors import DataError


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


# ---- never destroy data: only a folder synth wrote may be replaced ------------------------------
def _tree(root: Path) -> dict[str, bytes | None]:
    """relative path -> bytes (None for folders) of everything under root."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def test_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    data = tmp_path / "11k"
    (data / "Hands").mkdir(parents=True)
    (data / "HandInfo.csv").write_text("id,aspectOfHand,imageName\n1,dorsal right,Hand_1.jpg\n")
    (data / "Hands" / "Hand_0000001.jpg").write_bytes(b"a real photo")
    before = _tree(data)
    for force in (False, True):
        with pytest.raises(DataError, match="not empty and was not written by synth"):
            write_synthetic(data, ids=2, per_id=2, size=32, force=force)
        assert _tree(data) == before


def test_writes_into_an_empty_folder_and_stamps_it(tmp_path):
    (tmp_path / "empty").mkdir()
    root = write_synthetic(tmp_path / "empty", ids=2, per_id=2, size=32, seed=3)
    stamp = json.loads((root / STAMP).read_text())
    files = stamp.pop("files")
    assert stamp == {"ids": 2, "per_id": 2, "size": 32, "seed": 3}
    # every file synth wrote is listed with its size and SHA-256, and nothing else
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {STAMP}
    assert set(files) == written
    csv_bytes = (root / "HandInfo.csv").read_bytes()
    assert files["HandInfo.csv"] == [len(csv_bytes), hashlib.sha256(csv_bytes).hexdigest()]


def test_force_deletes_nothing_of_real_data_under_a_copied_stamp(tmp_path):
    """A stamp copied into a real 11k folder whose images have synth's names: --force must
    not take the names as proof; the images are not the ones the stamp lists."""
    other = write_synthetic(tmp_path / "other", ids=2, per_id=2, size=32)
    real = tmp_path / "11k"
    (real / "Hands").mkdir(parents=True)
    for p in (other / "Hands").iterdir():
        (real / "Hands" / p.name).write_bytes(b"a real photo " + p.name.encode())
    (real / "HandInfo.csv").write_text("real catalogue\n")
    (real / STAMP).write_bytes((other / STAMP).read_bytes())
    before = _tree(real)
    with pytest.raises(DataError, match=r"changed since synth wrote it\); --force replaces only"):
        write_synthetic(real, ids=2, per_id=2, size=32, force=True)
    assert _tree(real) == before


def test_force_refuses_a_stamp_that_lists_no_files(tmp_path):
    root = write_synthetic(tmp_path / "s", ids=2, per_id=2, size=32)
    (root / STAMP).write_text('{"ids": 2, "per_id": 2, "size": 32, "seed": 0}\n')
    before = _tree(root)
    with pytest.raises(DataError, match="stamp that lists no files"):
        write_synthetic(root, ids=2, per_id=2, size=32, force=True)
    assert _tree(root) == before


def test_force_replaces_only_its_own_set(tmp_path):
    root = write_synthetic(tmp_path / "s", ids=3, per_id=2, size=32, seed=0)
    before = _tree(root)
    with pytest.raises(DataError, match="pass --force to replace it"):
        write_synthetic(root, ids=2, per_id=2, size=32, seed=1)
    assert _tree(root) == before
    write_synthetic(root, ids=2, per_id=2, size=32, seed=1, force=True)
    assert len(list((root / "Hands").iterdir())) == 2 * 2 * 4  # no image of the old set is left
    assert _files(root) == _files(
        write_synthetic(tmp_path / "fresh", ids=2, per_id=2, size=32, seed=1)
    )


@pytest.mark.parametrize("foreign", ["notes.txt", "Hands/mine.png", "Hands/Hand_0000000.jpg/"])
def test_force_refuses_a_stamped_folder_that_holds_other_files(tmp_path, foreign):
    root = write_synthetic(tmp_path / "s", ids=2, per_id=2, size=32)
    if foreign.endswith("/"):
        (root / foreign).unlink()
        (root / foreign).mkdir()
    else:
        (root / foreign).write_text("keep me")
    before = _tree(root)
    with pytest.raises(DataError, match="--force replaces only what synth wrote"):
        write_synthetic(root, ids=2, per_id=2, size=32, force=True)
    assert _tree(root) == before


def test_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        write_synthetic(tmp_path / "f", ids=2, per_id=2, size=32)
    assert (tmp_path / "f").read_text() == "x"
