from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from handreid.cli import main
from handreid.config import ASPECTS, TrainConfig
from handreid.data import load_splits
from handreid.data.inspect import format_inspect, inspect_data
from handreid.data.synthetic import write_synthetic
from handreid.errors import DataError

KEYS = {
    "root",
    "layout",
    "aspects",
    "images_found",
    "images_missing",
    "images_unreadable",
    "images_unreadable_used",
    "images_used",
    "split",
    "split_reason",
    "distractors",
    "identities",
    "images",
    "warnings",
}


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.fixture
def synth(tmp_path) -> Path:
    return write_synthetic(tmp_path / "s", ids=8, per_id=3, size=32, seed=0)


def test_report_keys_and_counts(synth):
    report = inspect_data(synth, aspects=("dorsal right",))
    assert set(report) == KEYS
    assert report["layout"] == "11k" and report["aspects"] == ["dorsal right"]
    assert report["images_found"] == 8 * 3 * 4 and report["images_missing"] == 0
    assert report["images_unreadable"] == []
    assert set(report["identities"]) == set(report["images"]) == {"train", "val", "test"}
    assert sum(report["identities"].values()) == 8
    json.dumps(report)
    text = format_inspect(report)
    assert "layout 11k" in text and "identities:  train" in text


def test_unreadable_images_are_named(synth):
    victim = sorted((synth / "Hands").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:100])
    (synth / "Hands" / "Hand_9999999.jpg").write_bytes(b"not a jpeg")  # not in the CSV: ignored
    report = inspect_data(synth)
    assert report["images_unreadable"] == [victim.name]
    assert report["images_unreadable_used"] == [victim.name]
    assert victim.name in format_inspect(report)


def _aspect_of(root: Path, name: str) -> str:
    with open(root / "HandInfo.csv", newline="") as f:
        return next(r["aspectOfHand"] for r in csv.DictReader(f) if r["imageName"] == name)


def test_unreadable_image_outside_the_selected_aspects_is_not_used(synth):
    victim = sorted((synth / "Hands").iterdir())[0]
    victim.write_bytes(b"broken")
    other = next(a for a in ASPECTS if a != _aspect_of(synth, victim.name))
    report = inspect_data(synth, aspects=(other,))
    assert report["images_unreadable"] == [victim.name]
    assert report["images_unreadable_used"] == []


def test_cli_inspect_fails_on_images_train_would_refuse_but_prints_the_report(synth, capsys):
    victim = sorted((synth / "Hands").iterdir())[3]
    victim.write_bytes(b"broken")
    assert _run(["inspect", "--data", str(synth), "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["images_unreadable_used"] == [victim.name]
    assert err.startswith(f"error: 1 image(s) a run would use cannot be decoded ({victim.name})")
    assert err.count("\n") == 1
    # the same data without that image's aspect inspects clean
    other = next(a for a in ASPECTS if a != _aspect_of(synth, victim.name))
    assert _run(["inspect", "--data", str(synth), "--aspects", other]) == 0


def test_loader_warnings_are_in_the_report(synth):
    text = (synth / "HandInfo.csv").read_text()
    lines = text.splitlines(keepends=True)
    lines[1] = lines[1].replace('"dorsal right"', '"dorsal middle"')
    (synth / "HandInfo.csv").write_text("".join(lines))
    report = inspect_data(synth)
    assert len(report["warnings"]) == 1 and "'dorsal middle' x1" in report["warnings"][0]
    assert "warning:     " in format_inspect(report)


def test_folder_layout_and_unknown_aspect(tmp_path, synth):
    for k in range(6):
        (tmp_path / "f" / f"id{k}").mkdir(parents=True)
        for n in range(2):
            src = sorted((synth / "Hands").iterdir())[k * 3 + n]
            (tmp_path / "f" / f"id{k}" / src.name).write_bytes(src.read_bytes())
    report = inspect_data(tmp_path / "f")
    assert report["layout"] == "folder" and report["aspects"] == []
    assert report["images_found"] == 12
    with pytest.raises(DataError, match="unknown aspect 'dorsal middle'"):
        inspect_data(synth, aspects=("dorsal middle",))
    with pytest.raises(DataError, match="unknown dataset"):
        inspect_data(synth, dataset="coco")


def test_cli_inspect_json_on_sample(sample_11k, capsys):
    assert _run(["inspect", "--data", str(sample_11k), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images_found"] == 1108
    assert report["images_missing"] == 9968
    assert report["images_unreadable"] == []
    assert report["split"] == "random"


def test_cli_inspect_text_and_errors(synth, tmp_path, capsys):
    assert _run(["inspect", "--data", str(synth), "--aspects", "palmar", "left"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown aspect 'palmar'") and err.count("\n") == 1
    assert _run(["inspect", "--data", str(tmp_path / "nope")]) == 2
    assert "error: data root" in capsys.readouterr().err
    assert _run(["inspect", "--data", str(synth), "--aspects", "palmar left"]) == 0
    assert "split:" in capsys.readouterr().out


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "new"
    assert _run(["synth", "--out", str(out), "--ids", "2", "--per-id", "2", "--size", "24"]) == 0
    assert "wrote 2 identities" in capsys.readouterr().out
    assert len(list((out / "Hands").glob("*.jpg"))) == 16
    assert _run(["synth", "--out", str(out), "--ids", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ids=0")
    assert _run(["synth", "--out", str(out), "--size", "4"]) == 2
    assert "error: size=4 is out of range" in capsys.readouterr().err
    assert _run(["synth", "--out", str(out), "--seed", "-1"]) == 2
    assert "error: seed=-1" in capsys.readouterr().err


# ---- images that are no regular file: refused or reported, never opened -------------------------
def _replace_with_fifo(path: Path, mkfifo) -> Path:
    path.unlink()
    return mkfifo(path)


def test_a_fifo_among_the_images_a_run_uses_is_refused_by_name(synth, mkfifo):
    victim = _replace_with_fifo(sorted((synth / "Hands").iterdir())[1], mkfifo)
    with pytest.raises(DataError, match=f"{victim} is a FIFO \\(named pipe\\), not an image file"):
        inspect_data(synth)
    cfg = TrainConfig(data_root=str(synth), aspects=(_aspect_of(synth, victim.name),))
    with pytest.raises(DataError, match=f"{victim} is a FIFO"):
        load_splits(cfg)


def test_a_fifo_outside_the_selected_aspects_is_reported_unreadable_unopened(synth, mkfifo):
    victim = _replace_with_fifo(sorted((synth / "Hands").iterdir())[1], mkfifo)
    other = next(a for a in ASPECTS if a != _aspect_of(synth, victim.name))
    report = inspect_data(synth, aspects=(other,))
    assert report["images_unreadable"] == [victim.name]
    assert report["images_unreadable_used"] == []


def test_a_link_to_a_regular_image_is_fine(synth):
    victim = sorted((synth / "Hands").iterdir())[1]
    moved = victim.rename(synth / "elsewhere.jpg")
    victim.symlink_to(moved)
    assert inspect_data(synth)["images_unreadable"] == []


@pytest.mark.parametrize("layout", ["hd", "folder"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_hd_and_folder_layouts_refuse_an_image_name_that_is_no_regular_file(
    tmp_path, layout, kind, mkfifo
):
    # these loaders skipped such names silently; a folder or FIFO named 3_1.jpg is a mistake
    root = tmp_path / layout
    names = [f"{i}_{n}.jpg" for i in range(1, 7) for n in (1, 2)]
    if layout == "hd":
        paths = [root / "Original Images" / name for name in names]
    else:
        paths = [root / f"id{name[0]}" / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(path)
    victim = paths[3]
    victim.unlink()
    if kind == "fifo":
        mkfifo(victim)
        what = "a FIFO \\(named pipe\\)"
    else:
        victim.mkdir()
        what = "a folder"
    with pytest.raises(DataError, match=f"{victim} is {what}, not an image file"):
        load_splits(TrainConfig(dataset=layout, data_root=str(root), split="random"))
