"""`hpo run|export|show|ls` end to end on CPU with tiny towers."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from handreid.config import TrainConfig
from hpo.cli import main
from hpo.common.attrs import attrs_of
from hpo.records.space import load_space


def hpo(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.integration
def test_synthetic_study_resumes_exports_and_the_export_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = ["run", "--backbone", "tiny-vit", "--data", "synthetic", "--epochs", "2", "--quiet"]
    code, out, err = hpo([*run, "--trials", "4"], capsys)
    assert code == 0, err
    storage = "sqlite:///studies/handreid.db"
    study = load(storage, "handreid-tiny-vit")
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert trials[0].user_attrs["baseline"] == "default"
    baseline = {k: v for k, v in load_space("tiny-vit").baselines[0].items() if k != "name"}
    assert trials[0].params == baseline
    assert "best trial" in out and "study handreid-tiny-vit: " in out
    assert Path("studies/synthetic-64x16-64px-seed0/HandInfo.csv").is_file()
    floors = study.user_attrs["floors"]
    assert "floors (no training; val / test mAP): pixel floor" in out and "(computed in" in out
    assert floors["backbone_label"] == "untrained tiny-vit"

    code, out, err = hpo([*run, "--trials", "6"], capsys)
    assert code == 0, err
    assert "(stored)" in out and "(computed in" not in out, "the rerun reuses the floors"
    assert load(storage, "handreid-tiny-vit").user_attrs["floors"] == floors
    trials = load(storage, "handreid-tiny-vit").get_trials()
    assert len(trials) == 6, "the rerun adds exactly two trials"
    assert sum(t.user_attrs.get("baseline") is not None for t in trials) == 1, (
        "baselines are enqueued once"
    )

    code, out, _ = hpo(["show"], capsys)
    assert code == 0 and "top trials (val mAP ± SE):" in out
    assert "floors (no training; val / test mAP)" in out
    code, out, _ = hpo(["ls"], capsys)
    assert code == 0 and out.splitlines()[1].split()[:2] == ["handreid-tiny-vit", "6"]

    code, out, err = hpo(["export"], capsys)
    assert code == 0, err
    exported = Path("studies/handreid-tiny-vit/best.yaml")
    text = exported.read_text()
    best = load(storage, "handreid-tiny-vit").best_trial
    assert text.startswith("# handreid trainer config exported from study 'handreid-tiny-vit'")
    assert f"# trial {best.number}" in text
    assert f"objective (best-epoch validation mAP) {best.value:.3f} ± " in text
    assert "not confirmed" in text
    assert "# floors (no training; val / test mAP): pixel floor" in text
    space = load_space("tiny-vit")
    cfg = TrainConfig.from_yaml(exported)
    for key, value in space.trainer_values(best.params).items():  # a template's code -> text
        assert getattr(cfg, key) == value
    for key, value in space.base.items():
        if key not in ("aspects", "image_size", "epochs"):  # --epochs 2 replaced the base's 8
            assert getattr(cfg, key) == value, key
    assert cfg.epochs == 2 and cfg.data_root.endswith("synthetic-64x16-64px-seed0")
    from hpo.records.artifacts import config_attrs

    assert config_attrs(cfg).attrs["config_sha256"] == attrs_of(best)["config_sha256"]

    from handreid.cli import main as handreid_main

    with pytest.raises(SystemExit) as exc:
        handreid_main(["train", "--config", str(exported), "--out", "runs/best", "--quiet"])
    assert exc.value.code == 0
    metrics = json.loads(Path("runs/best/metrics.json").read_text())
    assert metrics["val"]["mAP"] == pytest.approx(best.value, abs=1e-6), (
        "the export reproduces its trial"
    )


@pytest.mark.integration
def test_study_on_the_real_11k_sample(sample_11k, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = hpo(
        [
            "run",
            "--backbone",
            "tiny-vit",
            "--trials",
            "3",
            "--epochs",
            "2",
            "--data",
            sample_11k,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    study = load("sqlite:///studies/handreid.db", "handreid-tiny-vit")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials()) == 3
    assert study.user_attrs["data"] == str(sample_11k.resolve())
    # raw pixels beat every 2-epoch tiny-vit here: the run's summary says so
    pixels_val = study.user_attrs["floors"]["pixels"][0]
    assert pixels_val > 0.8
    words = " ".join(out.split())  # the summary wraps at the terminal's width
    assert f"the pixel floor ({pixels_val:.3f})" in words and "warning: the best trial" in words


def no_study_created(tmp_path: Path) -> bool:
    db = tmp_path / "studies" / "handreid.db"
    if not db.exists():
        return True
    return not optuna.get_all_study_summaries(f"sqlite:///{db}")


def test_bad_search_space_lists_every_problem(tmp_path, synthetic_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "bad.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "base": {"model": "tiny-vit", "pretrained": "none", "image_size": [64, 64]},
                "space": {
                    "lr_modules": {"type": "float", "low": 1e-2, "high": 1e-4},
                    "bnneck_dim": {"type": "categorical", "choices": []},
                },
            }
        )
    )
    code, _, err = hpo(
        ["run", "--backbone", "tiny-vit", "--space", space, "--data", synthetic_root], capsys
    )
    assert code == 2
    assert "space.lr_modules: low=0.01 must be below high=0.0001" in err
    assert "space.bnneck_dim: categorical needs a non-empty list of choices" in err
    assert no_study_created(tmp_path)


def test_export_show_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = hpo(["export"], capsys)
    assert code == 2 and "no study database at studies/handreid.db" in err
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="empty", storage=storage)
    code, _, err = hpo(["export", "--storage", storage, "--study", "nope"], capsys)
    assert code == 2 and "no study named 'nope'" in err and "['empty']" in err
    code, _, err = hpo(["export", "--storage", storage], capsys)
    assert code == 2 and "has no completed trial yet" in err
    assert not (tmp_path / "studies" / "empty").exists()


def assert_fits(text: str, columns: int, whole: list[str]) -> None:
    """Every line within ``columns``, and each of ``whole`` (a path, a sentence) readable
    across the wrapped lines: wrapped at spaces, no word cut."""
    wide = [line for line in text.splitlines() if len(line) > columns]
    assert not wide, wide
    words = " ".join(text.split())
    for phrase in whole:
        assert phrase in words, phrase


def test_run_wraps_its_header_floors_and_summary_at_word_boundaries(
    tmp_path, synthetic_root, monkeypatch, capsys
):
    from hpo.commands import run as run_module
    from hpo.views import report

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")

    def one_trial(args, study, *rest) -> int:  # no training: the texts around it are tested
        attrs = {"value_se": 0.021, "rank1": 0.5}
        study.add_trial(optuna.trial.create_trial(value=0.612, user_attrs=attrs))
        return 0

    monkeypatch.setattr(run_module, "_run_here", one_trial)
    # the dashboard note's line is the report's (hpo.views.report), not run's own
    monkeypatch.setattr(report, "annotate_after_run", lambda *a, **k: None)
    storage = "sqlite:///a-folder-with-a-long-name/handreid-studies.db"
    (tmp_path / "a-folder-with-a-long-name").mkdir()
    name = "handreid-tiny-vit-on-synthetic-hands"
    argv = ["run", "--backbone", "tiny-vit", "--data", synthetic_root, "--study", name]
    code, out, err = hpo([*argv, "--storage", storage, "--trials", "1"], capsys)
    assert code == 0, err
    assert_fits(
        out,
        80,
        [
            f"study '{name}' in {storage}: tiny-vit, 1 trials, sampler tpe (seed ",
            f"data {synthetic_root}",
            "floors (no training; val / test mAP): pixel floor ",
            "best trial 1: val mAP 0.612 ± 0.021 (1 split), rank1 0.500",  # 0: the baseline
            "`hpo confirm` re-trains the top trials and the baseline on fresh seeds",
        ],
    )
