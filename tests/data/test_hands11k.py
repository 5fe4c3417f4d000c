from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from pathlib import Path

import pytest

from handreid.config import ASPECTS, TrainConfig
from handreid.data import load_splits
from handreid.data.hands11k import COLUMNS, PUBLISHED_TRAIN_MAX, read_rows
from handreid.errors import ConfigError, DataError


def _all_identities(splits) -> set[str]:
    return (
        {r.identity for r in splits.train}
        | {r.identity for r in splits.val.records}
        | {r.identity for r in splits.test.records}
    )


def _independent_counts(root: Path, aspect: str, accessories_zero: bool) -> set[str]:
    """Subject ids of ``aspect`` with a present image, counted with the csv module only."""
    present = set(os.listdir(root / "Hands"))
    ids = set()
    with open(root / "HandInfo.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["aspectOfHand"] != aspect or row["imageName"] not in present:
                continue
            if accessories_zero and row["accessories"] != "0":
                continue
            ids.add(row["id"].strip())
    return ids


def write_csv(root: Path, rows: list[dict], images: bool = True, columns=COLUMNS) -> Path:
    """A small 11k layout: HandInfo.csv plus (empty) image files for every row."""
    (root / "Hands").mkdir(parents=True, exist_ok=True)
    with open(root / "HandInfo.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            full = {"age": 30, "gender": "male", "skinColor": "fair", "accessories": 0}
            full.update({"nailPolish": 0, "irregularities": 0, **row})
            writer.writerow(full)
            if images:
                (root / "Hands" / row["imageName"]).write_bytes(b"")
    return root


def rows_for(ids: list[int], aspects=ASPECTS, per_id: int = 3, accessories: int = 0) -> list[dict]:
    rows, n = [], 0
    for subject in ids:
        for aspect in aspects:
            for _ in range(per_id):
                rows.append(
                    {
                        "id": f"{subject:07d}",
                        "aspectOfHand": aspect,
                        "imageName": f"Hand_{n:07d}.jpg",
                        "accessories": accessories,
                    }
                )
                n += 1
    return rows


# The published protocol's training-id thresholds (MBA-Net, CLIP-HandID), written out here rather
# than read from the module, so a wrong constant there fails these tests.
THRESHOLD = {"dorsal right": 1050, "dorsal left": 1037, "palmar right": 1051, "palmar left": 1042}


def test_module_thresholds_are_the_published_ones():
    assert PUBLISHED_TRAIN_MAX == THRESHOLD


# ---- the real sample: full official CSV, 1,108 present images ----------------------------------


def test_reads_full_official_csv(sample_11k):
    rows = read_rows(sample_11k)
    assert len(rows) == 11076
    with open(sample_11k / "HandInfo.csv", newline="") as f:
        raw = {row["id"] for row in csv.DictReader(f)}
    assert len(raw) == 190 and "1200000 " in raw and "1200000" in raw
    ids = {r["id"] for r in rows}
    assert len(ids) == 189  # "1200000 " is subject 1200000 with a stray space
    assert all(i == i.strip() for i in ids)


def test_sample_present_images_and_one_warning(sample_11k):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits(TrainConfig(aspects=("all",), exclude_accessories=False), sample_11k)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "11076" in messages[0] and "9968" in messages[0] and "1108" in messages[0]
    assert splits.stats["images_found"] == 1108
    assert splits.stats["images_missing"] == 9968
    total = len(splits.train) + len(splits.val.records) + len(splits.test.records)
    assert total == splits.stats["images_used"]
    # The random split drops single-image views of evaluated subjects (people stay disjoint).
    assert total + splits.stats["images_dropped"] == 1108
    assert all(r.path.is_file() for r in splits.train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = TrainConfig(aspects=("all",), exclude_accessories=False, split="published")
        published = load_splits(cfg, sample_11k)
    used = len(published.train) + len(published.val.records) + len(published.test.records)
    assert published.stats["images_used"] == used
    assert used + published.stats["images_dropped"] == 1108
    # test-side identities never train, even those with one image (unusable as query + gallery),
    # and each aspect has its own threshold
    assert published.train
    for r in published.train:
        assert int(r.subject) <= THRESHOLD[r.aspect], (r.subject, r.aspect)


@pytest.mark.parametrize("accessories_zero", [False, True])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_per_aspect_identities_match_independent_count(sample_11k, aspect, accessories_zero):
    cfg = TrainConfig(aspects=(aspect,), exclude_accessories=accessories_zero)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_splits(cfg, sample_11k)
    assert _all_identities(splits) == _independent_counts(sample_11k, aspect, accessories_zero)
    assert {r.aspect for r in splits.train} == {aspect}


def test_several_aspects_use_subject_aspect_identities(sample_11k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = TrainConfig(aspects=("dorsal right", "palmar left"), split="published")
        splits = load_splits(cfg, sample_11k)
    expected = {f"{i}|dorsal right" for i in _independent_counts(sample_11k, "dorsal right", True)}
    expected |= {f"{i}|palmar left" for i in _independent_counts(sample_11k, "palmar left", True)}
    found = _all_identities(splits)
    assert found <= expected
    # only single-image test-side identities and other views of validation subjects are unused
    val_subjects = {r.subject for r in splits.val.records}
    for ident in expected - found:
        subject, aspect = ident.split("|")
        assert int(subject) > THRESHOLD[aspect] or subject in val_subjects, ident
    record = splits.train[0]
    assert record.identity == f"{record.subject}|{record.aspect}"
    assert splits.aspects == ("dorsal right", "palmar left")


def test_auto_does_not_use_published_split_on_partial_sample(sample_11k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_splits(TrainConfig(split="auto"), sample_11k)
    assert splits.stats["split"] == "random"
    assert "present" in splits.stats["split_reason"]


def test_published_split_on_request_follows_thresholds(sample_11k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_splits(TrainConfig(split="published", aspects=("all",)), sample_11k)
    assert splits.stats["split"] == "published"
    for r in splits.test.records:
        assert int(r.subject) > THRESHOLD[r.aspect], (r.subject, r.aspect)
    # The rule of handreid/data/splits.py: training and validation hold training-side ids only.
    # A test-side identity with a single image cannot be evaluated (no query besides its gallery
    # image), and it does not train either: it is dropped, and counted as dropped.
    for r in list(splits.train) + list(splits.val.records):
        assert int(r.subject) <= THRESHOLD[r.aspect], (r.subject, r.aspect)
    per_identity = Counter(
        (r["id"], r["aspectOfHand"])
        for r in read_rows(sample_11k)
        if r["imageName"] in set(os.listdir(sample_11k / "Hands")) and r["accessories"] == "0"
    )
    single_test_side = {
        key for key, n in per_identity.items() if n == 1 and int(key[0]) > THRESHOLD[key[1]]
    }
    assert single_test_side, "the sample has single-image test-side identities to check"
    used = {(r.subject, r.aspect) for r in list(splits.train) + list(splits.val.records)} | {
        (r.subject, r.aspect) for r in splits.test.records
    }
    assert not single_test_side & used
    assert splits.stats["images_dropped"] >= len(single_test_side)


# ---- published split on a synthetic CSV around the thresholds ---------------------------------


def test_auto_uses_published_split_when_complete(tmp_path):
    ids = [1000, 1020, 1030, 1036, 1037, 1038, 1041, 1042, 1043, 1049, 1050, 1051, 1052, 1060, 1070]
    root = write_csv(tmp_path / "d", rows_for(ids))
    splits = load_splits(TrainConfig(aspects=("all",), split="auto", val_fraction=0.2), root)
    assert splits.stats["split"] == "published"
    test_ids = {r.identity for r in splits.test.records}
    expected_test = {
        f"{i:07d}|{a}" for i in ids for a in ASPECTS if i > THRESHOLD[a]
    }  # e.g. 1038 is a test id for dorsal left (> 1037) but a training id for dorsal right
    assert test_ids == expected_test
    assert "0001038|dorsal left" in test_ids and "0001038|dorsal right" not in test_ids
    assert "0001051|palmar right" not in test_ids and "0001051|dorsal right" in test_ids
    train_side = {r.identity for r in splits.train} | {r.identity for r in splits.val.records}
    assert train_side == {f"{i:07d}|{a}" for i in ids for a in ASPECTS} - expected_test


def test_auto_falls_back_to_random_when_one_side_is_empty(tmp_path):
    root = write_csv(tmp_path / "d", rows_for(list(range(10)), aspects=("dorsal right",)))
    splits = load_splits(TrainConfig(split="auto"), root)
    assert splits.stats["split"] == "random"
    assert splits.stats["identities"]["test"] == 5


def test_exclude_accessories_keeps_only_zero(tmp_path):
    rows = rows_for([1, 2, 3, 4, 5, 6], aspects=("dorsal right",))
    rows += rows_for([7, 8], aspects=("dorsal right",), accessories=1)
    for k, row in enumerate(rows[-6:]):
        row["imageName"] = f"Hand_9{k:06d}.jpg"
    root = write_csv(tmp_path / "d", rows)
    kept = _all_identities(load_splits(TrainConfig(), root))
    assert kept == {f"{i:07d}" for i in range(1, 7)}
    assert len(_all_identities(load_splits(TrainConfig(exclude_accessories=False), root))) == 8


# ---- bad input: one clear line --------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(TrainConfig(), tmp_path / "nowhere")


def test_no_root_given():
    with pytest.raises(DataError, match="no data root"):
        load_splits(TrainConfig())


def test_csv_without_expected_columns_names_them(tmp_path):
    cols = [c for c in COLUMNS if c not in ("aspectOfHand", "imageName")]
    root = write_csv(tmp_path / "d", [], columns=cols)
    with pytest.raises(DataError, match="missing column\\(s\\) aspectOfHand, imageName") as err:
        load_splits(TrainConfig(), root)
    assert "\n" not in str(err.value)


def test_unknown_aspect_in_config():
    with pytest.raises(ConfigError, match="unknown aspect 'dorsal middle'"):
        TrainConfig(aspects=("dorsal middle",))


def test_no_identity_left_after_filtering(tmp_path):
    rows = rows_for([1, 2, 3], aspects=("dorsal right",))
    rows += rows_for([4, 5], aspects=("palmar left",), accessories=1)
    for k, row in enumerate(rows[-6:]):
        row["imageName"] = f"Hand_9{k:06d}.jpg"
    root = write_csv(tmp_path / "d", rows)
    with pytest.raises(DataError, match="no identity left after filtering"):
        load_splits(TrainConfig(aspects=("palmar left",)), root)


def test_no_image_present(tmp_path):
    root = write_csv(tmp_path / "d", rows_for([1, 2]), images=False)
    with pytest.raises(DataError, match="none of the 24 images"):
        load_splits(TrainConfig(), root)


def test_wrong_layout_is_named(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="looks like the 'folder' layout"):
        load_splits(TrainConfig(dataset="11k"), tmp_path)


def test_singletons_stay_in_training(tmp_path):
    rows = rows_for(list(range(8)), aspects=("dorsal right",))
    rows += rows_for([100, 101, 102], aspects=("dorsal right",), per_id=1)
    for k, row in enumerate(rows[-3:]):
        row["imageName"] = f"Hand_9{k:06d}.jpg"
    root = write_csv(tmp_path / "d", rows)
    for seed in range(5):
        splits = load_splits(TrainConfig(seed=seed), root)
        train = {r.identity for r in splits.train}
        assert {"0000100", "0000101", "0000102"} <= train
        evaluated = {r.identity for r in splits.val.records + splits.test.records}
        assert not evaluated & {"0000100", "0000101", "0000102"}


def test_stats_count_what_the_splits_hold(tmp_path):
    root = write_csv(tmp_path / "d", rows_for(list(range(12)), aspects=("dorsal right",)))
    splits = load_splits(TrainConfig(val_fraction=0.3), root)
    ids, imgs = splits.stats["identities"], splits.stats["images"]
    assert ids == {"train": 4, "val": 2, "test": 6}  # 6 test; 30% of 6 -> 2 validation
    assert ids["train"] == len(splits.train_identities) and ids["val"] == len(splits.val.identities)
    assert imgs == {"train": 12, "val": 6, "test": 18}


# ---- malformed CSVs: one line naming the problem, or a warning that counts the rows ----------


def test_non_utf8_csv_names_the_byte(tmp_path):
    root = write_csv(tmp_path / "d", rows_for([1, 2, 3], aspects=("dorsal right",)))
    raw = (root / "HandInfo.csv").read_bytes()
    (root / "HandInfo.csv").write_bytes(raw.replace(b"male", b"m\xe4le", 1))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe4 at offset \d+\)"):
        load_splits(TrainConfig(), root)


def test_short_row_names_its_line_and_the_missing_column(tmp_path):
    root = write_csv(tmp_path / "d", rows_for(list(range(6)), aspects=("dorsal right",)))
    with open(root / "HandInfo.csv", "a") as f:
        f.write("0000099,30,male,fair,0,0,dorsal right\n")  # cut before imageName
    with pytest.raises(DataError, match=r"line 20: 7 cell\(s\), so no imageName") as err:
        load_splits(TrainConfig(), root)
    assert "\n" not in str(err.value)


def test_row_without_the_optional_last_column_is_read(tmp_path):
    root = write_csv(tmp_path / "d", rows_for(list(range(6)), aspects=("dorsal right",)))
    text = (root / "HandInfo.csv").read_text().splitlines()
    text[1] = text[1].rsplit(",", 1)[0]  # drop "irregularities", which the loader does not read
    (root / "HandInfo.csv").write_text("\n".join(text) + "\n")
    assert len(read_rows(root)) == 18


def test_unparsable_csv_is_a_data_error(tmp_path):
    root = write_csv(tmp_path / "d", rows_for([1, 2], aspects=("dorsal right",)))
    with open(root / "HandInfo.csv", "a") as f:
        f.write("1," + "x" * 200_000 + ",x\n")  # past the csv module's field size limit
    with pytest.raises(DataError, match="line 8: not a readable CSV row"):
        read_rows(root)


def test_empty_id_is_skipped_with_a_count(tmp_path):
    rows = rows_for(list(range(6)), aspects=("dorsal right",))
    for row in rows[:2]:
        row["id"] = "  "
    root = write_csv(tmp_path / "d", rows)
    with pytest.warns(UserWarning, match=r"2 row\(s\) with an empty id were skipped"):
        splits = load_splits(TrainConfig(), root)
    assert "" not in _all_identities(splits)
    assert len(_all_identities(splits)) == 6  # subject 0 keeps its third image


def test_unknown_aspect_is_skipped_with_the_value_and_count(tmp_path):
    rows = rows_for(list(range(6)), aspects=("dorsal right",))
    for row in rows[:3]:
        row["aspectOfHand"] = "dorsal middle"
    rows[3]["aspectOfHand"] = "Dorsal Right"  # case differs: still dorsal right
    root = write_csv(tmp_path / "d", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits(TrainConfig(), root)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "3 row(s) with an unknown aspectOfHand ('dorsal middle' x3)" in messages[0]
    assert "0000000" not in _all_identities(splits) and len(_all_identities(splits)) == 5


def test_accessories_must_be_0_or_1(tmp_path):
    rows = rows_for(list(range(6)), aspects=("dorsal right",))
    rows[4]["accessories"] = "2"
    root = write_csv(tmp_path / "d", rows)
    with pytest.raises(DataError, match="accessories='2' for 'Hand_0000004.jpg' is not 0 or 1"):
        load_splits(TrainConfig(), root)
    load_splits(TrainConfig(exclude_accessories=False), root)  # not read then


def test_non_ascii_digit_ids_have_no_published_rule(tmp_path):
    ids = [1000, 1020, 1030, 1036, 1040, 1060, 1070, 1080]
    rows = rows_for(ids, aspects=("dorsal right",))
    for row in rows[:3]:
        row["id"] = "\u00b2"  # str.isdigit() is true for a superscript two; int() refuses it
    root = write_csv(tmp_path / "d", rows)
    splits = load_splits(TrainConfig(split="auto"), root)
    assert splits.stats["split"] == "random"
    with pytest.raises(DataError, match="split='published' is defined only for 11k"):
        load_splits(TrainConfig(split="published"), root)
