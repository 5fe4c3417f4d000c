from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml

from handreid import checkpoint
from handreid.cli import main


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def config_file(tiny_cfg, tmp_path):
    path = tmp_path / "tiny.yaml"
    tiny_cfg.replace(epochs=2).save(path)
    return path


def test_train_writes_outputs_and_evaluate_reproduces_them(tiny_cfg, tmp_path, capsys, monkeypatch):
    # data_root relative to where the run starts; evaluate runs from another folder
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    config_file = start / "tiny.yaml"
    tiny_cfg.replace(data_root=os.path.relpath(tiny_cfg.data_root, start)).save(config_file)
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        ["train", "--config", str(config_file), "--out", str(out), "--quiet"], capsys
    )
    assert code == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())["data_root"]
    assert stored == str(Path(tiny_cfg.data_root).resolve())
    monkeypatch.chdir(tmp_path)
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.json", "best.pt"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["val"]) >= {"rank1", "rank5", "rank10", "mAP", "epoch"}
    assert 1 <= metrics["val"]["epoch"] <= 2
    assert metrics["test"]["num_splits"] == 3
    for key in ("rank1", "rank5", "rank10", "mAP"):
        assert 0.0 <= metrics["test"][key] <= 1.0 and f"{key}_std" in metrics["test"]
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert {"loss", "lr_modules", "mAP"} <= set(metrics["history"][0])
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 2
    assert "val mAP" in stdout and "test (3 splits)" in stdout
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

    code, stdout, _ = run_cli(["evaluate", "--checkpoint", str(out / "best.pt"), "--json"], capsys)
    assert code == 0
    again = json.loads(stdout)
    for key in ("rank1", "rank5", "rank10", "mAP", "mAP_std"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-6)


def test_train_on_the_real_11k_sample(sample_11k, tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg.replace(
        data_root=str(sample_11k),
        epochs=1,
        aspects=("dorsal right", "dorsal left"),
        split="random",
        num_splits=2,
    )
    path = tmp_path / "c.yaml"
    cfg.save(path)
    code, stdout, _ = run_cli(
        ["train", "--config", str(path), "--out", str(tmp_path / "r"), "--quiet"], capsys
    )
    assert code == 0, stdout
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["num_splits"] == 2 and metrics["epochs_run"] == 1


ONE_EPOCH = ["--set", "epochs=1", "--set", "warmup_epochs=0"]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_an_earlier_run_is_replaced_only_with_overwrite(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "metrics.json", "best.pt"):
        (out / name).write_text(f"earlier {name}")
    before = _files(tmp_path)
    argv = [
        "train",
        "--config",
        str(config_file),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "epochs=1",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "already holds a run; pass --overwrite" in err
    assert _files(tmp_path) == before
    code, _, _ = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.yaml"]


def test_disk_full_while_writing_the_run_is_one_line_and_leaves_nothing(
    config_file, tmp_path, capsys, monkeypatch
):
    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    before = _files(tmp_path)
    code, _, err = run_cli(
        ["train", "--config", str(config_file), "--out", str(tmp_path / "runs" / "r"), "--quiet"]
        + ONE_EPOCH,
        capsys,
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: cannot write the run folder")
    assert f"{tmp_path}/runs/r/best.pt: No space left on device" in err
    assert _files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nor an empty runs/


class _FullDisk:
    """A file whose disk fills after ``room`` bytes, as the kernel reports it: an OSError from
    write(), which torch's zip writer turns into a RuntimeError of its own."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_real_full_disk_inside_torch_save_is_one_line_and_leaves_nothing(
    config_file, tmp_path, capsys, monkeypatch
):
    real_save = checkpoint.torch.save
    monkeypatch.setattr(
        checkpoint.torch, "save", lambda obj, f: real_save(obj, _FullDisk(f, room=4096))
    )
    code, _, err = run_cli(
        ["train", "--config", str(config_file), "--out", str(tmp_path / "r"), "--quiet"]
        + ONE_EPOCH,
        capsys,
    )
    assert code == 2, err
    assert "Traceback" not in err and "inline_container" not in err
    assert err.count("\n") == 1
    assert f"{tmp_path}/r/best.pt: No space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_warmup_over_the_whole_run_is_a_warning(config_file, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")  # fail right after the config is read
    code, _, err = run_cli(
        ["train", "--config", str(config_file), "--out", str(tmp_path / "taken")]
        + ["--set", "epochs=2", "--set", "warmup_epochs=2"],
        capsys,
    )
    assert code == 2
    warning, error = err.splitlines()
    assert warning.startswith("warning: warmup_epochs=2 >= epochs=2: the whole run is warmup")
    assert error.startswith("error: --out") and "is a file" in error
