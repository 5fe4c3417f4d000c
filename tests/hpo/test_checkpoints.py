"""The best K complete trials keep a checkpoint; the ones that fall out are removed; the
exported trial's checkpoint evaluates to the test metrics it was saved with."""

from __future__ import annotations

import io
import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from hpo.records.artifacts import open_artifact_store
from hpo.records.checkpoints import (
    CHECKPOINT_FILE,
    CheckpointKeeper,
    could_enter,
    discard,
    top_numbers,
    trial_checkpoint,
    upper_bound,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _storage(tmp_path: Path, kind: str):
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(tmp_path / "j.log")


def _open(spec):
    if isinstance(spec, str) and not spec.startswith("sqlite"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))
    return spec


def _fresh(spec):
    """The storage as another process (the dashboard, `hpo export`) would read it."""
    return spec if isinstance(spec, optuna.storages.InMemoryStorage) else _open(spec)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_only_the_best_k_complete_trials_keep_a_checkpoint(tmp_path, kind):
    spec = _storage(tmp_path, kind)
    study = optuna.create_study(study_name="s", storage=_open(spec), direction="maximize")
    store = open_artifact_store(tmp_path / "artifacts")
    keeper = CheckpointKeeper(store, keep=2)
    values = [0.5, 0.7, 0.6, 0.9, 0.4, 0.8]
    for i, value in enumerate(values):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        snapshot = tmp_path / f"snap{i}" / CHECKPOINT_FILE
        snapshot.parent.mkdir()
        snapshot.write_bytes(b"weights %d" % i)
        artifact = keeper.offer(trial, value, snapshot)
        assert (artifact is not None) == (i != 4), i  # entered the top 2 when run
        assert not snapshot.exists() and not snapshot.parent.exists()
        study.tell(trial, value)
    other = optuna.load_study(study_name="s", storage=_fresh(spec))
    storage = other._storage
    kept = [t.number for t in other.trials if trial_checkpoint(t, storage, store) is not None]
    assert kept == [3, 5]  # 0.9 and 0.8
    # each kept checkpoint and its ownership record; nothing of the removed ones
    files = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert len(files) == 4 and sum(f.endswith(".owner") for f in files) == 2
    listed = {
        t.number
        for t in other.trials
        if any(m.filename == CHECKPOINT_FILE for m in get_all_artifact_meta(t, storage=storage))
    }
    # a journal file cannot delete an entry: the removed ones stay listed, pointing at nothing
    assert listed == ({0, 1, 2, 3, 5} if kind == "journal" else {3, 5})
    with store.open_reader(trial_checkpoint(other.trials[3], storage, store).artifact_id) as f:
        assert f.read() == b"weights 3"


def test_checkpoints_left_by_trials_that_never_completed_are_swept(tmp_path):
    study = optuna.create_study(direction="maximize")
    store = open_artifact_store(tmp_path / "artifacts")
    keeper = CheckpointKeeper(store, keep=3)
    trial = study.ask()
    snapshot = tmp_path / "snap" / CHECKPOINT_FILE
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"w")
    keeper.offer(trial, 0.9, snapshot)  # uploaded, then Ctrl-C before Optuna recorded it
    study.tell(trial, state=TrialState.FAIL)
    assert trial_checkpoint(study.trials[0], study._storage, store) is not None
    running = study.ask()
    assert CheckpointKeeper(store, keep=3).sweep(running) == [0]
    assert trial_checkpoint(study.trials[0], study._storage, store) is None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_confirm_keeps_every_model_run_until_it_has_decided_then_the_two_it_names(tmp_path, kind):
    """Seed-1 runs keep a model, seed-2 runs none; a partial confirm removes nothing; a
    complete one keeps the winner's and the reference baseline's (the first of a twin run),
    and never removes a model that another storage owns."""
    from hpo.records.checkpoints import ConfirmKeeper, keep_decided

    spec = _storage(tmp_path, kind)
    companion = optuna.create_study(study_name="s.confirm", storage=_open(spec))
    store = open_artifact_store(tmp_path / "artifacts")
    keeper = ConfirmKeeper(store)
    runs = [(0, 1), (0, 2), (3, 1), (3, 2), (5, 1), (5, 2), (3, 1)]  # (trial, seed); a twin
    for i, (number, seed) in enumerate(runs):
        companion.enqueue_trial({}, user_attrs={"candidate": number, "confirm_seed": seed})
        trial = companion.ask()
        snapshot = tmp_path / f"snap{i}" / CHECKPOINT_FILE
        snapshot.parent.mkdir()
        snapshot.write_bytes(b"model %d" % i)
        assert (keeper.offer(trial, 0.5, snapshot) is not None) == (seed == 1)
        assert keeper.after_trial(companion) == []  # nothing goes while runs go on
        companion.tell(trial, 0.5)
    other = optuna.load_study(study_name="s.confirm", storage=_fresh(spec))
    storage = other._storage

    def models() -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for t in other.get_trials():
            if trial_checkpoint(t, storage, store) is not None:
                out.setdefault(t.user_attrs["candidate"], []).append(t.number)
        return out

    assert models() == {0: [0], 3: [2, 6], 5: [4]}
    partial = {"winner": 3, "reference_baseline": 0, "complete": False}
    assert keep_decided(other, partial, store) == {0: 0, 3: 2}
    assert models() == {0: [0], 3: [2, 6], 5: [4]}  # partial: the winner may still change
    # trial 5's model as another storage (a copied database) made it: never ours to remove
    meta = trial_checkpoint(other.get_trials()[4], storage, store)
    store.remove(meta.artifact_id + ".owner")
    store.write(meta.artifact_id + ".owner", io.BytesIO(b'{"storage": "elsewhere"}'))
    complete = {**partial, "complete": True}
    assert keep_decided(other, complete, store) == {0: 0, 3: 2}
    assert models() == {0: [0], 3: [2], 5: [4]}


def test_ranking_and_the_bound_of_a_trial_with_runs_still_to_go():
    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.8, 0.8):
        study.add_trial(optuna.trial.create_trial(value=value))
    assert top_numbers(study.trials, 2) == {0, 1}  # the earlier of two equal values
    assert top_numbers(study.trials, 2, current=(3, 0.85)) == {0, 3}
    assert not could_enter(study, 2, 0.8, 3) and could_enter(study, 2, 0.81, 3)
    assert not could_enter(study, 0, 1.0, 3)
    assert upper_bound(0.4, 1) == 0.4
    # after a first fold of 0.4, two perfect folds give (0.4 + 2) / 3 = 0.8: not above 0.8
    assert not could_enter(study, 2, upper_bound(0.4, 3), 3)
    assert could_enter(study, 2, upper_bound(0.5, 3), 3)


@pytest.mark.integration
def test_keep_two_checkpoints_export_one_and_evaluate_it(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    from handreid.cli import main as handreid_main
    from hpo.cli import main

    monkeypatch.chdir(tmp_path)
    run = ["run", "--backbone", "tiny-vit", "--data", str(synthetic_root), "--trials", "4"]
    run += ["--epochs", "1", "--pruner", "none", "--quiet", "--keep-checkpoints", "2"]
    with pytest.raises(SystemExit) as exc:
        main(run + ["--set", "num_splits=2"])
    assert exc.value.code == 0
    study = optuna.load_study(
        study_name="handreid-tiny-vit", storage="sqlite:///studies/handreid.db"
    )
    store = open_artifact_store("studies/artifacts")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.value for t in complete}) == 4
    best_two = sorted(complete, key=lambda t: -t.value)[:2]
    kept = [t for t in study.trials if trial_checkpoint(t, study._storage, store) is not None]
    assert {t.number for t in kept} == {t.number for t in best_two}
    from hpo.records.history import load_history

    for t in study.trials:  # every finished trial's history matches what the pruner saw
        assert {e["step"]: e["mAP"] for e in load_history(study, t, store)} == (
            t.intermediate_values
        )

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint"])
    assert exc.value.code == 0
    path = Path("studies/handreid-tiny-vit/best.pt")
    assert f"{path} (" in " ".join(capsys.readouterr().out.split())  # wrapped at 80 columns
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["val_fold"] == 0
    exported = Path("studies/handreid-tiny-vit/best.yaml")
    from handreid.config import TrainConfig

    assert TrainConfig.from_dict(payload["config"]) == TrainConfig.from_yaml(exported)
    assert payload["val"]["mAP"] == pytest.approx(best_two[0].value, abs=1e-6)
    with pytest.raises(SystemExit) as exc:
        handreid_main(["evaluate", "--checkpoint", str(path), "--device", "cpu", "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out) == payload["test"]  # that trial's test metrics
    with pytest.raises(SystemExit) as exc:  # the same model again: nothing to refuse
        main(["export", "--checkpoint"])
    assert exc.value.code == 0
    second = best_two[1].number  # another model where best.pt lies: refused, then replaced
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["export", "--trial", str(second), "--checkpoint"])
    assert exc.value.code == 2 and "replaces it only with --overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before
    with pytest.raises(SystemExit) as exc:
        main(["export", "--trial", str(second), "--checkpoint", "--overwrite"])
    assert exc.value.code == 0
    assert torch.load(path, weights_only=True)["val"]["mAP"] == pytest.approx(best_two[1].value)
    worst = min(complete, key=lambda t: t.value)
    with pytest.raises(SystemExit) as exc:
        main(["export", "--trial", str(worst.number), "--out", "worst.yaml", "--checkpoint"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"trial {worst.number} has no checkpoint" in out
    assert not Path("worst.pt").exists()


def test_evaluate_reproduces_the_test_metrics_saved_in_the_checkpoint(tmp_cfg_run, capsys):
    path, test = tmp_cfg_run
    from handreid.cli import main as handreid_main

    with pytest.raises(SystemExit) as exc:
        handreid_main(["evaluate", "--checkpoint", str(path), "--device", "cpu", "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out) == test


@pytest.fixture
def tmp_cfg_run(tiny_cfg, tmp_path):
    """A trial's snapshot of a one-epoch tiny-vit run: (checkpoint path, its saved test report)."""
    from handreid.engine import fit

    cfg = tiny_cfg.replace(epochs=1)
    result = fit(cfg, device="cpu")
    keeper = CheckpointKeeper(store=None, keep=1)
    path = keeper.snapshot(result.model, result.data, cfg, torch.device("cpu"), {"mAP": 0.0})
    payload = torch.load(path, weights_only=True)
    target = tmp_path / "checkpoint.pt"
    path.rename(target)
    discard(path)
    assert set(payload["test"]) >= {"rank1", "rank5", "rank10", "mAP"}
    return target, payload["test"]
