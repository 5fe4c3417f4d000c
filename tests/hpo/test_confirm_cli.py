"""`hpo run` with folds, `hpo confirm`, `hpo export`, and `handreid train` on the export:
the whole path with real tiny training; and a killed confirm that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from handreid.cli import main as handreid_main
from hpo.cli import main
from hpo.common.attrs import attrs_of
from hpo.decide import confirm as cf


def hpo(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


STORAGE = "sqlite:///studies/handreid.db"
NAME = "handreid-tiny-vit"


@pytest.mark.integration
def test_folds_confirm_export_and_the_export_trains(
    tmp_path, studies_with_demo_data, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    # No pruning, so that --top 2 always races a searched trial against the baseline
    # (fold pruning itself is covered in test_confirm.py).
    run = ["run", "--backbone", "tiny-vit", "--trials", "4", "--epochs", "2", "--pruner", "none"]
    code, out, err = hpo([*run, "--data", "synthetic", "--set", "val_folds=3", "--quiet"], capsys)
    assert code == 0, err
    study = optuna.load_study(study_name=NAME, storage=STORAGE)
    finished = [t for t in study.get_trials() if t.state.is_finished()]
    assert [t.state for t in finished] == [TrialState.COMPLETE] * 4
    for t in finished:
        folds = attrs_of(t)["fold_values"]
        assert len(folds) == 3 and attrs_of(t)["n_folds"] == 3
        assert t.value == pytest.approx(sum(folds) / 3, abs=1e-5)
        assert t.user_attrs["value_se"] > 0
    assert "± " in out  # the best value is shown with its standard error

    code, out, err = hpo(["confirm", "--study", NAME, "--top", "3", "--seeds", "3"], capsys)
    assert code == 0, err
    summary = cf.current(optuna.load_study(study_name=NAME, storage=STORAGE))
    assert summary["seeds"] == [1, 2, 3] and summary["complete"]
    assert len(summary["rows"]) >= 3  # searched trials and the baseline
    # one run per seed, on the confirm identities (the study's folds are its own)
    assert summary["measured_on"] == cf.CONFIRM_IDS and summary["identities"] > 0
    assert all(r["n"] == 3 for r in summary["rows"])
    assert "95% CI" in out and "baseline" in out
    assert "floors (no training; val / test mAP): pixel floor" in out

    code, out, err = hpo(["export", "--study", NAME], capsys)
    assert code == 0, err
    exported = Path(f"studies/{NAME}/best.yaml")
    header = [line for line in exported.read_text().splitlines() if line.startswith("#")]
    winner = summary["winner"]
    assert any(line.startswith(f"# trial {winner}") for line in header)
    assert any(
        "confirmed on fresh training seeds [1, 2, 3]" in h and "confirm identities" in h
        for h in header
    )
    assert any(h.startswith("# floors (no training") for h in header)
    assert any(
        "baseline" in h and ("distinguishable" in h or "best confirmed" in h) for h in header
    )

    with pytest.raises(SystemExit) as exc:
        handreid_main(["train", "--config", str(exported), "--out", "runs/best", "--quiet"])
    assert exc.value.code == 0
    metrics = json.loads(Path("runs/best/metrics.json").read_text())
    assert yaml.safe_load(exported.read_text())["val_folds"] == 3
    assert len(metrics["identities"]["val"]) > 0


def confirm_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", "confirm", "--study", NAME, *extra]


@pytest.mark.integration
def test_a_killed_confirm_resumes_without_repeating_finished_runs(
    tmp_path, studies_with_demo_data, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run = ["run", "--backbone", "tiny-vit", "--trials", "3", "--epochs", "1", "--quiet"]
    code, _, err = hpo([*run, "--data", "synthetic", "--pruner", "none"], capsys)
    assert code == 0, err
    cmd = confirm_cmd("--top", "3", "--seeds", "3")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, text=True)
    companion = None
    end = time.monotonic() + 240
    while time.monotonic() < end:
        try:
            companion = optuna.load_study(study_name=f"{NAME}.confirm", storage=STORAGE)
        except KeyError:
            time.sleep(0.5)
            continue
        states = [t.state for t in companion.get_trials()]
        if TrialState.COMPLETE in states and TrialState.RUNNING in states:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("the confirm never had a finished and a running run at once")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = [
        (t.user_attrs["candidate"], t.user_attrs["confirm_seed"])
        for t in companion.get_trials()
        if t.state == TrialState.COMPLETE
    ]
    assert before

    done = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name=f"{NAME}.confirm", storage=STORAGE).get_trials()
    complete = [
        (t.user_attrs["candidate"], t.user_attrs["confirm_seed"])
        for t in trials
        if t.state == TrialState.COMPLETE
    ]
    assert len(complete) == len(set(complete)), "a finished run was repeated"
    assert set(before) <= set(complete)
    summary = cf.current(optuna.load_study(study_name=NAME, storage=STORAGE))
    assert summary["complete"] and len(complete) == 3 * len(
        set(summary["candidates"]) | set(summary["baselines"])
    )
    assert sum(t.state == TrialState.FAIL for t in trials) == 1  # the killed run, failed once


def test_a_resumed_confirm_counts_the_runs_queued_before_as_to_do(
    tmp_path, monkeypatch, capsys, synthetic_root
):
    """The runs an interrupted confirm queued but never ran are run by the next start: its
    first line counts them."""
    from hpo.decide import confirm
    from tests.test_bad_input import study_with_space

    monkeypatch.chdir(tmp_path)
    study_with_space(trials=("complete", "complete"))(tmp_path, synthetic_root)
    monkeypatch.setattr(confirm, "work", lambda *args, **kwargs: 0)  # stops before any run
    argv = ["confirm", "--study", "handreid-tiny-vit", "--top", "2", "--seeds", "5", "--quiet"]
    code, out, err = hpo(argv, capsys)
    assert code == 0, err
    assert ": 10 runs, 10 to do" in " ".join(out.split())  # the line wraps at the terminal's width
    code, out, err = hpo(argv, capsys)  # resumed: the two queued runs are still to do
    assert code == 0, err
    assert ": 10 runs, 10 to do" in " ".join(out.split()), out


@pytest.mark.integration
def test_confirm_keeps_the_winners_model_and_export_hands_it_out(
    tmp_path, monkeypatch, capsys, synthetic_root
):
    """Confirm keeps the seed-1, fold-0 model of its winner and of the reference baseline (the
    others' are removed once it has decided); `hpo export --checkpoint` copies the winner's,
    `handreid evaluate` gives back the test metrics inside it, and `handreid train` with the
    printed overrides trains the same model again."""
    import torch

    from hpo.records.artifacts import open_artifact_store
    from hpo.records.checkpoints import trial_checkpoint
    from hpo.records.optuna_internals import trial_record

    monkeypatch.chdir(tmp_path)
    run = ["run", "--backbone", "tiny-vit", "--trials", "3", "--epochs", "2", "--pruner", "none"]
    run += ["--data", str(synthetic_root), "--keep-checkpoints", "0", "--quiet"]
    code, _, err = hpo(run, capsys)
    assert code == 0, err
    code, out, err = hpo(["confirm", "--study", NAME, "--top", "3", "--seeds", "3"], capsys)
    assert code == 0, err
    study = optuna.load_study(study_name=NAME, storage=STORAGE)
    summary = cf.current(study)
    winner, reference = summary["winner"], summary["reference_baseline"]
    raced = set(summary["candidates"]) | set(summary["baselines"])
    assert summary["complete"] and len(raced) == 3  # so at least one model is removed

    companion = optuna.load_study(study_name=f"{NAME}.confirm", storage=STORAGE)
    store = open_artifact_store("studies/artifacts")
    with_model = {
        t.user_attrs["candidate"]: t.number
        for t in companion.get_trials()
        if trial_checkpoint(t, companion._storage, store) is not None
    }
    assert set(with_model) == {winner, reference}
    assert summary["models"] == sorted([n, r] for n, r in with_model.items())
    for t in companion.get_trials():  # every kept model is the first run on confirm seed 1
        if t.number in with_model.values():
            assert t.user_attrs["confirm_seed"] == 1
        # the identity AP the paired comparison reads is a trial record, not a long attribute
        assert len(trial_record(t, "run_identity_ap")[0]) == summary["identities"]  # confirm ids
        assert all(len(json.dumps(v)) <= 200 for v in t.user_attrs.values())
    # the models of the configs that lost were removed from the store, not only unlisted
    owners = list(Path("studies/artifacts").rglob("*.owner"))
    assert len(owners) == len(with_model)
    assert f"trial {winner} (confirm run {with_model[winner]})" in " ".join(out.split())

    code, out, err = hpo(["export", "--study", NAME, "--checkpoint"], capsys)
    assert code == 0, err
    text = " ".join(out.split())
    row = next(r for r in summary["rows"] if r["trial"] == winner)
    trial = study.trials[winner]
    seed = yaml.safe_load(Path(f"studies/{NAME}/best.yaml").read_text())["seed"] + 1000
    assert f"the model of trial {winner}'s confirm run {with_model[winner]}" in text
    retrain = (
        f"handreid train --config {Path(f'studies/{NAME}/best.yaml').resolve()} --set seed={seed} "
        f"--set epochs={row['epochs']} --set early_stop_patience=0 --set confirm_run=true"
    )
    assert retrain in text
    path = Path(f"studies/{NAME}/best.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["seed"] == seed and payload["config"]["val_fold"] == 0
    assert payload["config"]["epochs"] == row["epochs"] and trial.state == TrialState.COMPLETE
    assert set(payload["test"]) >= {"rank1", "rank5", "rank10", "mAP"}

    with pytest.raises(SystemExit) as exc:
        handreid_main(["evaluate", "--checkpoint", str(path), "--device", "cpu", "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out) == payload["test"]

    argv = retrain.split()[1:] + ["--out", "runs/again", "--quiet", "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        handreid_main(argv)
    assert exc.value.code == 0
    again = torch.load("runs/again/best.pt", weights_only=True)
    assert again["val"]["mAP"] == pytest.approx(payload["val"]["mAP"], abs=1e-6)
    assert again["test"]["mAP"] == pytest.approx(payload["test"]["mAP"], abs=1e-6)
    for key, value in payload["state_dict"].items():
        assert torch.allclose(again["state_dict"][key], value, atol=1e-5), key
