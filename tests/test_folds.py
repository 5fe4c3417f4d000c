"""Split seed apart from the training seed, validation folds, refit: through fit() and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from handreid.cli import main
from handreid.engine import fit, prepare_data
from handreid.stats import pooled_map


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_fit_keeps_the_best_epochs_identity_ap(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=2)
    result = fit(cfg, data=prepare_data(cfg), device="cpu")
    assert set(result.val_identity_ap) == set(result.data.splits.val.identities)
    assert pooled_map(result.val_identity_ap) == pytest.approx(result.best_map, abs=1e-9)


def test_refit_trains_on_every_training_identity_and_keeps_the_last_epoch(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=2, refit=True, early_stop_patience=1)
    data = prepare_data(cfg)
    normal = prepare_data(tiny_cfg)
    assert data.num_classes == normal.num_classes + len(normal.splits.val.identities)
    result = fit(cfg, data=data, device="cpu")
    assert result.epochs_run == 2 and result.best_epoch == 1 and result.best == {}
    assert all("mAP" not in h for h in result.history)
    assert result.val_identity_ap == {}


def test_folds_change_validation_not_the_seed(tiny_cfg):
    a = prepare_data(tiny_cfg.replace(val_folds=3, val_fold=0))
    b = prepare_data(tiny_cfg.replace(val_folds=3, val_fold=1, seed=5))
    assert not set(a.splits.val.identities) & set(b.splits.val.identities)
    assert a.splits.test.records == b.splits.test.records
    assert torch.equal(a.test.images, b.test.images)


def test_train_records_identities_seed_keeps_them_split_seed_changes_them(
    tiny_cfg, tmp_path, capsys
):
    config = tmp_path / "c.yaml"
    tiny_cfg.replace(epochs=1).save(config)
    lists = {}
    for name, extra in [("s1", "seed=1"), ("s2", "seed=2"), ("split1", "split_seed=1")]:
        out = tmp_path / name
        args = ["train", "--config", config, "--out", out, "--quiet", "--set", extra]
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        lists[name] = json.loads((out / "metrics.json").read_text())["identities"]
    assert lists["s1"] == lists["s2"]
    assert lists["s1"]["val"] and lists["s1"]["test"]
    assert lists["s1"]["val"] != lists["split1"]["val"]
    assert lists["s1"]["digest"] != lists["split1"]["digest"]


def test_train_refit_reports_test_without_validation(tiny_cfg, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    tiny_cfg.replace(epochs=1).save(config)
    out = tmp_path / "refit"
    code, stdout, err = run_cli(
        ["train", "--config", config, "--out", out, "--quiet", "--refit"], capsys
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["refit"] is True and metrics["val"] is None
    assert metrics["identities"]["val"] == [] and 0 <= metrics["test"]["mAP"] <= 1
    assert "refit on all training-side identities" in stdout
