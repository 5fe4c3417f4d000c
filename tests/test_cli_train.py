from __future__ import annotations

import json

import pytest
import yaml

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


def test_train_writes_outputs_and_evaluate_reproduces_them(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        ["train", "--config", str(config_file), "--out", str(out), "--quiet"], capsys
    )
    assert code == 0
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
