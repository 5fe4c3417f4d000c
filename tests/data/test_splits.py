from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from handreid.config import TrainConfig
from handreid.data import DATASETS, detect_layout, get_loader, load_splits
from handreid.data.base import Partition
from handreid.errors import DataError


def _quiet_load(cfg: TrainConfig, root: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_splits(cfg, root)


def check_partition(part: Partition, num_splits: int, distractors: set[str] = frozenset()) -> None:
    """Disjoint query/gallery, one gallery image per identity, distractors gallery-only."""
    assert len(part.splits) == num_splits
    n = len(part.records)
    evaluated = {r.identity for r in part.records} - distractors
    for query, gallery in part.splits:
        assert query.dtype == np.int64 and gallery.dtype == np.int64
        assert not set(query.tolist()) & set(gallery.tolist())
        assert sorted(query.tolist() + gallery.tolist()) == list(range(n))
        gal_ids = [part.records[i].identity for i in gallery]
        real = [i for i in gal_ids if i not in distractors]
        assert sorted(real) == sorted(evaluated)  # exactly one per identity
        assert {part.records[i].identity for i in query} == evaluated
        assert all(i in gal_ids for i in distractors)


def _ids(records) -> set[str]:
    return {r.identity for r in records}


def test_sample_random_split_is_disjoint(sample_11k):
    cfg = TrainConfig(split="random", aspects=("all",), num_splits=3)
    splits = _quiet_load(cfg, sample_11k)
    train, val, test = _ids(splits.train), _ids(splits.val.records), _ids(splits.test.records)
    assert not train & val and not train & test and not val & test
    assert splits.stats["split"] == "random"
    check_partition(splits.val, 3)
    check_partition(splits.test, 3)
    # A random split keeps every aspect of a subject on one side.
    subjects = {
        s: {r.subject for r in rs}
        for s, rs in [("v", splits.val.records), ("t", splits.test.records)]
    }
    assert not subjects["v"] & subjects["t"]
    evaluated = {r.subject for r in splits.val.records + splits.test.records}
    assert not evaluated & {r.subject for r in splits.train}
    assert splits.stats["images_dropped"] > 0  # single-image views of evaluated subjects
    # Validation takes about val_fraction of the training identities.
    n_train_side = len(train) + len(val)
    assert 0.05 * n_train_side <= len(val) <= 0.3 * n_train_side


def test_split_seed_decides_the_splits_and_seed_does_not(sample_11k):
    a = _quiet_load(TrainConfig(split_seed=3, seed=0, num_splits=4), sample_11k)
    b = _quiet_load(TrainConfig(split_seed=3, seed=7, num_splits=4), sample_11k)
    c = _quiet_load(TrainConfig(split_seed=4, seed=0, num_splits=4), sample_11k)
    assert (
        a.train == b.train and a.val.records == b.val.records and a.test.records == b.test.records
    )
    for part in ("val", "test"):
        pairs = zip(getattr(a, part).splits, getattr(b, part).splits, strict=True)
        for (qa, ga), (qb, gb) in pairs:
            assert np.array_equal(qa, qb) and np.array_equal(ga, gb)
    assert _ids(a.test.records) != _ids(c.test.records)
    # The query/gallery splits differ from one another.
    assert not np.array_equal(a.test.splits[0][1], a.test.splits[1][1])


def test_validation_folds_rotate_over_the_training_side(sample_11k):
    """K folds: disjoint validation sets covering every evaluable training-side identity, the
    same test side, no person on both sides of any fold, and fold k's own query streams."""
    base = TrainConfig(split="random", aspects=("all",), num_splits=2, val_folds=3)
    runs = [_quiet_load(base.replace(val_fold=k), sample_11k) for k in range(3)]
    vals = [_ids(r.val.records) for r in runs]
    assert all(vals) and not (vals[0] & vals[1] or vals[0] & vals[2] or vals[1] & vals[2])
    sizes = [len({r.subject for r in run.val.records}) for run in runs]
    assert max(sizes) - min(sizes) <= 1
    for run in runs:
        assert run.test.records == runs[0].test.records
        assert not _ids(run.train) & _ids(run.val.records)
        assert not {r.subject for r in run.train} & {r.subject for r in run.val.records}
        check_partition(run.val, 2)
    # every evaluable training-side identity validates in exactly one fold
    single = _quiet_load(base.replace(val_folds=1), sample_11k)
    side = _ids(single.train) | _ids(single.val.records)
    by_id = {}
    for r in single.train + single.val.records:
        by_id.setdefault(r.identity, []).append(r)
    evaluable = {i for i in side if len(by_id[i]) >= 2}
    assert set().union(*vals) == evaluable


def test_one_fold_is_the_single_validation_split(sample_11k):
    a = _quiet_load(TrainConfig(num_splits=3), sample_11k)
    b = _quiet_load(TrainConfig(num_splits=3, val_folds=1, val_fold=0), sample_11k)
    assert a.val.records == b.val.records and a.train == b.train
    for (qa, ga), (qb, gb) in zip(a.val.splits, b.val.splits, strict=True):
        assert np.array_equal(qa, qb) and np.array_equal(ga, gb)


def test_refit_trains_on_every_training_side_identity(sample_11k):
    normal = _quiet_load(TrainConfig(split="random", num_splits=2), sample_11k)
    refit = _quiet_load(TrainConfig(split="random", num_splits=2, refit=True), sample_11k)
    assert not refit.val.records
    assert _ids(refit.train) == _ids(normal.train) | _ids(normal.val.records)
    assert refit.test.records == normal.test.records


def test_too_many_folds_is_one_line(sample_11k):
    with pytest.raises(DataError, match=r"val_folds=90: the training side has only \d+ subjects"):
        _quiet_load(TrainConfig(split="random", num_splits=2, val_folds=90, val_fold=0), sample_11k)


def write_hd(root: Path, ids: range, distractors: range, per_id: int = 3) -> Path:
    folder = root / "Original Images"
    folder.mkdir(parents=True)
    for i in list(ids) + list(distractors):
        for n in range(1, per_id + 1):
            (folder / f"{i}_{n}.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored")
    return root


def test_hd_distractors_join_every_test_gallery(tmp_path):
    root = write_hd(tmp_path / "hd", range(1, 21), range(502, 507), per_id=3)
    assert detect_layout(root) == "hd"
    cfg = TrainConfig(dataset="hd", num_splits=4, split="auto")
    splits = load_splits(cfg, root)
    distractors = {str(i) for i in range(502, 507)}
    assert splits.stats["distractors"] == 15
    assert splits.stats["split"] == "random"
    train, val, test = _ids(splits.train), _ids(splits.val.records), _ids(splits.test.records)
    assert not (train | val) & distractors
    assert distractors <= test
    assert train | val | (test - distractors) == {str(i) for i in range(1, 21)}
    assert not train & val and not train & test and not val & test
    assert len(test - distractors) == 10  # test_fraction 0.5 of ids 1-20
    check_partition(splits.test, 4, distractors)
    check_partition(splits.val, 4)
    for query, gallery in splits.test.splits:
        assert sum(splits.test.records[i].identity in distractors for i in gallery) == 15
        assert not any(splits.test.records[i].identity in distractors for i in query)
    assert splits.aspects == ("",)


def test_hd_published_split_is_refused(tmp_path):
    root = write_hd(tmp_path / "hd", range(1, 9), range(0))
    with pytest.raises(DataError, match="published"):
        load_splits(TrainConfig(dataset="hd", split="published"), root)


def test_folder_layout(tmp_path):
    root = tmp_path / "mine"
    for k in range(12):
        (root / f"person{k:02d}").mkdir(parents=True)
        for n in range(2 + k % 3):
            (root / f"person{k:02d}" / f"{n}.{['jpg', 'png', 'JPEG'][n % 3]}").write_bytes(b"")
    (root / "person00" / "readme.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    assert detect_layout(root) == "folder"
    splits = load_splits(TrainConfig(dataset="folder", num_splits=2, seed=1), root)
    train, val, test = _ids(splits.train), _ids(splits.val.records), _ids(splits.test.records)
    assert train | val | test == {f"person{k:02d}" for k in range(12)}
    assert len(test) == 6 and len(val) == 2
    assert not train & val and not train & test and not val & test
    assert splits.stats["images_used"] == sum(2 + k % 3 for k in range(12))
    check_partition(splits.test, 2)


def test_detect_layout_11k_and_unknown(tmp_path, sample_11k):
    assert detect_layout(sample_11k) == "11k"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the layout"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        detect_layout(tmp_path / "missing")


def test_registry_lists_valid_names():
    assert set(DATASETS) == {"11k", "hd", "folder"}
    with pytest.raises(
        DataError, match=r"unknown dataset 'coco'; choose one of \['11k', 'folder', 'hd'\]"
    ):
        get_loader("coco")


def test_too_few_identities(tmp_path):
    root = write_hd(tmp_path / "hd", range(1, 3), range(0))
    with pytest.raises(DataError, match="validation"):
        load_splits(TrainConfig(dataset="hd"), root)


# ---- confirm identities -----------------------------------------------------------------------


def _id_sets(splits) -> dict[str, set[str]]:
    return {
        "train": _ids(splits.train),
        "val": _ids(splits.val.records),
        "test": _ids(splits.test.records),
    }


@pytest.mark.parametrize("folds", [1, 3])
def test_confirm_identities_are_never_trained_or_validated_on(synthetic_root, folds):
    base = dict(split="random", num_splits=2, split_seed=5, val_folds=folds)
    held = TrainConfig(confirm_fraction=0.25, **base)
    plain = _id_sets(_quiet_load(TrainConfig(**base), synthetic_root))
    runs = [_id_sets(_quiet_load(held.replace(val_fold=k), synthetic_root)) for k in range(folds)]
    confirm = _id_sets(_quiet_load(held.replace(confirm_run=True), synthetic_root))
    conf_ids = confirm["val"]
    # 40 subjects, 50 % test: 20 on the training side, a quarter of them confirm subjects
    assert len(conf_ids) == 5
    for run in runs:
        assert not conf_ids & (run["train"] | run["val"])
        assert run["test"] == plain["test"]  # the test side does not move
    # the study's identities are what the confirm run trains on: every other training-side one
    study = set().union(*(r["train"] | r["val"] for r in runs))
    assert confirm["train"] == study
    assert conf_ids | study == plain["train"] | plain["val"]
    assert confirm["test"] == plain["test"]


def test_confirm_identities_follow_the_split_seed_and_refit_trains_on_them(synthetic_root):
    cfg = TrainConfig(split="random", num_splits=2, confirm_fraction=0.25, confirm_run=True)
    a = _ids(_quiet_load(cfg, synthetic_root).val.records)
    assert a == _ids(_quiet_load(cfg.replace(seed=9), synthetic_root).val.records)
    assert a != _ids(_quiet_load(cfg.replace(split_seed=1), synthetic_root).val.records)
    refit = _quiet_load(cfg.replace(confirm_run=False, refit=True), synthetic_root)
    assert a <= _ids(refit.train)
    assert "confirm" not in refit.stats["identities"]
    held = _quiet_load(cfg.replace(confirm_run=False), synthetic_root)
    assert held.stats["identities"]["confirm"] == len(a)


def test_too_few_subjects_for_confirm_identities_is_one_clear_error(synthetic_root):
    cfg = TrainConfig(split="random", num_splits=2, test_fraction=0.9, confirm_fraction=0.5)
    with pytest.raises(DataError, match=r"confirm_fraction=0.5: the training side has 4 subjects"):
        _quiet_load(cfg, synthetic_root)
