"""Faults that must lose nothing: damaged journals, copied databases, full disks while a
checkpoint is stored, concurrent keepers, dead parents. Each test names the data it protects."""

from __future__ import annotations

import errno
import io
import multiprocessing
import os
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from handreid.errors import UserError
from hpo.artifacts import open_artifact_store
from hpo.checkpoints import (
    CHECKPOINT_FILE,
    OWNER_SUFFIX,
    CheckpointKeeper,
    export_checkpoint,
    trial_checkpoint,
)
from hpo.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)


def snapshot(folder: Path, content: bytes) -> Path:
    """A stand-in for a saved model, where ``CheckpointKeeper.snapshot`` puts one."""
    path = folder / CHECKPOINT_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def run_trial(study: optuna.Study, keeper: CheckpointKeeper, value: float, tmp: Path) -> int:
    """What ``hpo run`` does with a trial's model: offer it, record the trial, sweep again."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    keeper.offer(trial, value, snapshot(tmp / f"snap-{trial.number}", b"weights %d" % trial.number))
    study.tell(trial, value)
    keeper.after_trial(study)
    return trial.number


def artifact_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(OWNER_SUFFIX))


# ---- a copied database never costs the original its checkpoints -------------------------------
def test_a_keeper_on_a_copied_database_keeps_the_originals_checkpoints(tmp_path):
    root = tmp_path / "artifacts"
    store = open_artifact_store(root)
    original = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=original, direction="maximize")
    keeper = CheckpointKeeper(store, keep=2)
    for value in (0.5, 0.6):
        run_trial(study, keeper, value, tmp_path)
    shutil.copy(tmp_path / "study.db", tmp_path / "copy.db")
    copy = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/copy.db")
    copy_keeper = CheckpointKeeper(store, keep=2)
    for value in (0.8, 0.9):  # the copy's better trials push 0 and 1 out of its top 2
        run_trial(copy, copy_keeper, value, tmp_path)

    again = optuna.load_study(study_name="s", storage=original)  # as `hpo export` reads it
    for trial in again.trials:
        path, line = export_checkpoint(again, trial, tmp_path / f"t{trial.number}.yaml", store)
        assert path is not None, line
        assert path.read_bytes() == b"weights %d" % trial.number
    fresh_copy = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/copy.db")
    kept = [
        t.number
        for t in fresh_copy.trials
        if trial_checkpoint(t, fresh_copy._storage, store) is not None
    ]
    assert kept == [2, 3], "the copy lists only its own top 2"
    assert len(artifact_files(root)) == 4, "nothing of the original's was deleted"


# ---- a full disk while storing a checkpoint leaves no partial file ----------------------------
def test_a_full_disk_while_storing_a_checkpoint_leaves_no_partial_artifact(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    store = open_artifact_store(root)
    study = optuna.create_study(direction="maximize")
    keeper = CheckpointKeeper(store, keep=2)
    real_write = FileSystemArtifactStore.write

    def full_disk(self, artifact_id, body):
        real_write(self, artifact_id, io.BytesIO(body.read(3)))  # a truncated file is left
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(FileSystemArtifactStore, "write", full_disk)
    trial = study.ask()
    with pytest.raises(OSError, match="No space left"):
        keeper.offer(trial, 0.9, snapshot(tmp_path / "snap", b"weights of a good model"))
    monkeypatch.undo()
    assert list(root.iterdir()) == [], "the truncated artifact was removed"
    study.tell(trial, 0.9)
    assert trial_checkpoint(study.trials[0], study._storage, store) is None


# ---- an edited artifact id never reaches the store --------------------------------------------
def test_an_edited_checkpoint_id_is_one_line_and_never_read_or_removed(tmp_path):
    store = open_artifact_store(tmp_path / "artifacts")
    (tmp_path / "cfg.yaml").write_text("precious")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    key = "artifacts:../cfg.yaml"
    meta = '{"artifact_id": "../cfg.yaml", "filename": "checkpoint.pt", "mimetype": "x", "encoding": null}'
    study._storage.set_trial_system_attr(trial._trial_id, key, meta)
    study.tell(trial, 0.1)
    with pytest.raises(UserError, match="'../cfg.yaml' recorded in the storage is not an Optuna"):
        trial_checkpoint(study.trials[0], study._storage, store)
    for value in (0.5, 0.6):
        run_trial(study, CheckpointKeeper(store, keep=1), value, tmp_path)  # sweeps trial 0
    assert (tmp_path / "cfg.yaml").read_text() == "precious"


# ---- the limit holds across processes ----------------------------------------------------------
def _concurrent_trial(url: str, root: str, tmp: str, value: float, barrier) -> None:
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    keeper = CheckpointKeeper(FileSystemArtifactStore(root), keep=3)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    keeper.offer(trial, value, snapshot(Path(tmp) / f"snap-{value}", b"w"))
    barrier.wait(timeout=60)  # all three stored their model before any is recorded
    study.tell(trial, value)
    keeper.after_trial(study)


def test_keep_checkpoints_holds_after_concurrent_processes_on_sqlite(tmp_path):
    root = tmp_path / "artifacts"
    store = open_artifact_store(root)
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    run_trial(study, CheckpointKeeper(store, keep=3), 0.1, tmp_path)
    del study
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_concurrent_trial, args=(url, str(root), str(tmp_path), v, barrier))
        for v in (0.5, 0.6, 0.7)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    kept = [
        t.number for t in study.trials if trial_checkpoint(t, study._storage, store) is not None
    ]
    assert kept == [1, 2, 3], "trial 0 (0.1) fell out of the top 3"
    assert len(artifact_files(root)) == 3
