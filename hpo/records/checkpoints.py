"""The best K complete trials keep their model as the trial artifact ``checkpoint.pt``.

Which model: a trial trains ``val_folds`` x ``val_repeats`` runs, and keeps run 0, fold 0 at
the trial's base seed. That is the model ``handreid train`` trains from the trial's exported
YAML (``val_fold: 0`` and the same ``seed``), so the checkpoint is one a user can re-create
and check; the run with the best fold value would be a pick on validation noise, and a fold
average of weights is not a model that any run trained.

What it holds: a ``handreid`` checkpoint (config, weights) with the best epoch's validation
metrics and the model's test Rank-1/5/10/mAP measured when it was saved, so
``handreid evaluate --checkpoint`` reproduces them. Test numbers stay inside the file, never
in trial attributes, so nobody picks trials by test.

When: run 0's model is written (with its test report) only while the trial can still enter
the top K: known exactly with one run; with several, unless even perfect later runs (mAP 1)
could not lift the mean above the K-th best. The file waits in a temporary folder until the
trial's value is known, then becomes the trial's artifact if the trial is in the top K, and
the checkpoints of trials that fell out are removed.

Ownership: every checkpoint file has a record beside it in the store (``<id>.owner``) naming
the storage that made it (``optuna_internals.storage_identity``). A keeper removes only files
its own storage owns: a copy of a database shares the artifact folder and lists the same
artifacts, and its keeper must never delete the original's models. A file without a record
(older versions) is never removed. A write that fails half-way (disk full) leaves no file.

Limit: a keeper sweeps again after its trial is recorded (``after_trial``), so when any
worker's trial ends the finished trials hold at most K checkpoints, whatever other processes
on the study did meanwhile: each sweep sees every trial told before it.

Removal: the file leaves the artifact store on every store; the trial's artifact entry is
deleted on databases (SQLite, PostgreSQL, MySQL), while on a journal file (append-only) it
stays listed on the trial's dashboard page, pointing at nothing. ``trial_checkpoint`` checks
both, so ``hpo export --checkpoint`` never hands out a removed one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import optuna
from optuna.artifacts import ArtifactMeta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.records import optuna_internals
from hpo.records.artifacts import artifact_metas, check_artifact_id
from hpo.records.companion import load_companion
from hpo.records.configs import trial_config
from hpo.records.optuna_internals import storage_identity

log = logging.getLogger("hpo")

CHECKPOINT_FILE = "checkpoint.pt"
DEFAULT_KEEP = 3
MODEL_SEED = 1  # hpo confirm keeps the model of each config's first run on this seed
OWNER_SUFFIX = ".owner"  # the ownership record beside a checkpoint in the artifact store


def upper_bound(first_run: float, runs: int) -> float:
    """The highest mean a trial can reach after its first run's value (mAP is at most 1)."""
    return (first_run + (runs - 1) * 1.0) / runs


def top_numbers(trials: list[FrozenTrial], keep: int, current=None) -> set[int]:
    """Numbers of the ``keep`` best complete trials (earlier first on ties); ``current`` is a
    (number, value) counted as complete."""
    ranked = [
        (t.value, t.number)
        for t in trials
        if t.state == TrialState.COMPLETE and (current is None or t.number != current[0])
    ]
    if current is not None:
        ranked.append((current[1], current[0]))
    ranked.sort(key=lambda vn: (-vn[0], vn[1]))
    return {n for _, n in ranked[:keep]}


def could_enter(study: optuna.Study, keep: int, value: float, number: int) -> bool:
    """Whether trial ``number`` with ``value`` would be among the ``keep`` best complete trials."""
    if keep <= 0:
        return False
    others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return number in top_numbers(others, keep, (number, value))


def _exists(store, artifact_id: str) -> bool:
    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


class _OwnedStore:
    """The artifact store as a keeper uploads to it: each file gets its ownership record, and
    a write that fails half-way (disk full, Ctrl-C) leaves neither file nor record."""

    def __init__(self, store, owner: str) -> None:
        self.store, self.owner = store, owner

    def write(self, artifact_id: str, body) -> None:
        record = json.dumps({"storage": self.owner}).encode()
        try:
            self.store.write(artifact_id, body)
            self.store.write(artifact_id + OWNER_SUFFIX, io.BytesIO(record))
        except BaseException:
            for name in (artifact_id, artifact_id + OWNER_SUFFIX):
                with contextlib.suppress(Exception):
                    self.store.remove(name)
            raise

    def open_reader(self, artifact_id: str):
        return self.store.open_reader(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


def owner_of(store, artifact_id: str) -> str | None:
    """The storage that made this checkpoint (its ownership record), or None without one."""
    try:
        with store.open_reader(artifact_id + OWNER_SUFFIX) as fh:
            record = json.loads(fh.read())
    except (ArtifactNotFound, OSError, ValueError):
        return None
    return record.get("storage") if isinstance(record, dict) else None


def checkpoint_metas(trial: FrozenTrial, storage) -> list[ArtifactMeta]:
    return [m for m in artifact_metas(trial, storage=storage) if m.filename == CHECKPOINT_FILE]


def trial_checkpoint(trial: FrozenTrial, storage, store) -> ArtifactMeta | None:
    """The trial's checkpoint artifact whose file is still in the store, or None; a
    UserError for an id that is not one Optuna makes (an edited database)."""
    for meta in reversed(checkpoint_metas(trial, storage)):
        check_artifact_id(meta.artifact_id, f"trial {trial.number}")
        if _exists(store, meta.artifact_id):
            return meta
    return None


def copy_checkpoint(trial: FrozenTrial, storage, store, target: str | Path) -> Path | None:
    """Copy the trial's checkpoint to ``target`` (replaced whole, never left half-written; a
    link is written through); None when the trial has none."""
    meta = trial_checkpoint(trial, storage, store)
    if meta is None:
        return None
    from hpo.common.paths import atomic_write

    reader = store.open_reader(meta.artifact_id)
    try:
        target = atomic_write(target, lambda fh: shutil.copyfileobj(reader, fh), what="checkpoint")
    finally:
        reader.close()
    return target


class CheckpointKeeper:
    """Writes, keeps and removes the checkpoints of one worker's trials (see the module doc)."""

    def __init__(self, store, keep: int = DEFAULT_KEEP) -> None:
        self.store, self.keep = store, keep
        self._settled: set[int] = set()  # finished trials outside the top K with nothing kept
        self.seconds = 0.0  # spent writing snapshots and uploading, for measurement

    def wants(self, trial: optuna.Trial, value_bound: float) -> bool:
        return could_enter(trial.study, self.keep, value_bound, trial.number)

    def snapshot(self, model, data, cfg, device, val: dict) -> Path:
        """Write ``model`` with its validation and test metrics to a temporary checkpoint."""
        from handreid.checkpoint import save_checkpoint
        from handreid.engine import test_report

        start = time.perf_counter()
        test = test_report(model, data, cfg, device)
        folder = Path(tempfile.mkdtemp(prefix="hpo-checkpoint-"))
        path = folder / CHECKPOINT_FILE
        try:
            save_checkpoint(
                path,
                model,
                cfg,
                num_classes=data.num_classes,
                aspects=data.aspects,
                val=val,
                test=test,
            )
        except BaseException:
            discard(path)
            raise
        self.seconds += time.perf_counter() - start
        return path

    def offer(self, trial: optuna.Trial, value: float, path: Path) -> str | None:
        """Keep the snapshot as the trial's artifact if the trial is in the top K, then remove
        the checkpoints that fell out; the temporary file is always removed. Returns the
        artifact id, or None when the trial did not make it."""
        start = time.perf_counter()
        try:
            artifact_id = None
            if self.wants(trial, value):
                owned = _OwnedStore(self.store, storage_identity(trial.storage))
                artifact_id = upload_artifact(
                    artifact_store=owned, file_path=str(path), study_or_trial=trial
                )
            self.sweep(trial, (trial.number, value))
            return artifact_id
        finally:
            discard(path)
            self.seconds += time.perf_counter() - start

    def after_trial(self, study: optuna.Study) -> list[int]:
        """Sweep once this worker's trial is recorded: trials that other workers finished
        meanwhile count now, so the finished trials keep at most K checkpoints."""
        return self.sweep(study)

    def sweep(self, trial: optuna.Trial | optuna.Study, current=None) -> list[int]:
        """Remove the checkpoints of finished trials outside the top K (``current``: this
        worker's trial as (number, value), about to complete). Running trials are left alone:
        another worker may be storing one. Only files this storage owns are removed; a trial's
        entries of others' files are dropped from this storage. Returns the numbers of the
        trials cleared."""
        study = trial if isinstance(trial, optuna.Study) else trial.study
        storage = optuna_internals.storage_of(study)
        ours = storage_identity(storage)
        trials = study.get_trials(deepcopy=False)
        keep = top_numbers(trials, self.keep, current)
        cleared = []
        for t in trials:
            if t.number in keep or t.number in self._settled or not t.state.is_finished():
                continue
            if remove_checkpoints(t, storage, self.store, ours):
                cleared.append(t.number)
            self._settled.add(t.number)
        return cleared


def remove_checkpoints(trial: FrozenTrial, storage, store, ours: str) -> bool:
    """Remove the trial's checkpoint files that storage ``ours`` owns and drop the trial's
    entries of them; returns whether a file was removed."""
    metas = checkpoint_metas(trial, storage)
    removed = False
    for meta in metas:
        artifact_id = meta.artifact_id
        try:
            check_artifact_id(artifact_id, f"trial {trial.number}")
        except UserError:
            continue  # an edited entry: never hand it to the store
        if owner_of(store, artifact_id) != ours:
            continue  # another storage's (a copied database), or of older versions
        try:
            store.remove(artifact_id)
            removed = True
        except ArtifactNotFound:
            pass  # removed before (a journal keeps the entry) or by another worker
        with contextlib.suppress(ArtifactNotFound):
            store.remove(artifact_id + OWNER_SUFFIX)
    if metas:
        keys = [optuna_internals.ARTIFACT_PREFIX + m.artifact_id for m in metas]
        optuna_internals.delete_trial_system_attrs(storage, trial, keys)
    return removed


class ConfirmKeeper(CheckpointKeeper):
    """The models ``hpo confirm`` keeps: run 0 (fold 0) of every raced config on confirm seed
    ``MODEL_SEED``, as the artifact ``checkpoint.pt`` of that companion trial, with its test
    metrics inside. Which config wins is not known while runs go on, so nothing is removed
    then; once a complete confirm has decided, ``keep_decided`` removes all but the winner's
    and the reference baseline's. The file is the model ``handreid train`` writes for the
    run's config (its seed, ``epochs`` and no early stopping): the best epoch's weights."""

    def __init__(self, store) -> None:
        super().__init__(store, keep=0)

    def wants(self, trial: optuna.Trial, value_bound: float) -> bool:
        return attrs_of(trial).get("confirm_seed") == MODEL_SEED

    def sweep(self, trial, current=None) -> list[int]:
        return []

    def after_trial(self, study: optuna.Study) -> list[int]:
        return []


def _confirm_runs(companion: optuna.Study, number: int | None = None) -> list[FrozenTrial]:
    """Complete model runs (confirm seed ``MODEL_SEED``) of trial ``number`` (or of every raced
    trial), first finished first."""
    return [
        t
        for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if attrs_of(t).get("confirm_seed") == MODEL_SEED
        and "candidate" in attrs_of(t)
        and (number is None or attrs_of(t)["candidate"] == number)
    ]


def keep_decided(companion: optuna.Study, summary: dict, store) -> dict[int, int]:
    """After a confirm: the winner's and the reference baseline's models stay; once the confirm
    is complete (its decision final), the other raced configs' models are removed. Returns,
    per kept trial number, the companion trial whose artifact holds its model."""
    keep = {summary.get("winner"), summary.get("reference_baseline")} - {None}
    storage = optuna_internals.storage_of(companion)
    ours = storage_identity(storage)
    kept: dict[int, int] = {}
    for t in _confirm_runs(companion):
        number = int(attrs_of(t)["candidate"])
        if not checkpoint_metas(t, storage):
            continue
        if number in keep and number not in kept and trial_checkpoint(t, storage, store):
            kept[number] = t.number
        elif summary.get("complete") and summary.get("winner") is not None:
            remove_checkpoints(t, storage, store, ours)  # not decided for, or a race's twin
    return kept


def confirm_model(study: optuna.Study, number: int, store) -> tuple[FrozenTrial, object] | None:
    """(companion trial, its storage) whose artifact holds trial ``number``'s confirm model,
    or None."""
    companion = load_companion(study)
    if companion is None:
        return None
    storage = optuna_internals.storage_of(companion)
    for t in _confirm_runs(companion, number):
        if trial_checkpoint(t, storage, store) is not None:
            return t, storage
    return None


def discard(path: Path | None) -> None:
    """Remove a temporary snapshot and its folder."""
    if path is not None:
        shutil.rmtree(Path(path).parent, ignore_errors=True)


def checkpoint_source(study: optuna.Study, trial: FrozenTrial, store):
    """Where ``hpo export --checkpoint`` copies trial ``trial``'s model from: the model its
    confirm kept, else its own study checkpoint. Returns (the trial holding the artifact, its
    storage, whether it is a confirm run), or None; a UserError for an edited artifact id, so
    that a bad entry fails before anything is written."""
    if store is None:
        return None
    found = confirm_model(study, trial.number, store)
    if found is not None:
        return found[0], found[1], True
    storage = optuna_internals.storage_of(study)
    if trial_checkpoint(trial, storage, store) is not None:
        return trial, storage, False
    return None


def check_checkpoint_target(target: str | Path, source, store, *, overwrite: bool) -> None:
    """Refuse to replace an existing ``target`` that ``hpo export --checkpoint`` was not named to
    write (the YAML is named by --out; the model only follows from it), unless ``overwrite``
    or the file already holds exactly this model (re-exporting the same trial)."""
    target = Path(target)
    if overwrite or not target.exists() or source is None:
        return
    if _same_bytes(target, store, trial_checkpoint(source[0], source[1], store)):
        return
    raise UserError(
        f"{target} exists and holds another file; hpo export --checkpoint writes the model "
        "there (the YAML's name with .pt) and replaces it only with --overwrite; or give "
        "--out another name"
    )


def _same_bytes(path: Path, store, meta) -> bool:
    """Whether the file at ``path`` has the artifact's bytes (read in chunks, sizes first)."""
    if meta is None:
        return False
    reader = store.open_reader(meta.artifact_id)
    try:
        with open(path, "rb") as fh:
            while True:
                mine, theirs = fh.read(1 << 20), reader.read(1 << 20)
                if mine != theirs:
                    return False
                if not mine:
                    return True
    except OSError:
        return False
    finally:
        reader.close()


def export_checkpoint(study: optuna.Study, trial: FrozenTrial, yaml_path: str | Path, store=None):
    """For ``hpo export --checkpoint``: copy the trial's model next to its exported YAML
    (``best.yaml`` -> ``best.pt``): the one its confirm kept when there is one, else its study
    checkpoint. Returns (path or None, the lines to print)."""
    from hpo.records.artifacts import existing_artifact_store

    yaml_path = Path(yaml_path)
    if store is None:
        store = existing_artifact_store()
    target = yaml_path.with_suffix(".pt")
    source = checkpoint_source(study, trial, store)
    path = copy_checkpoint(source[0], source[1], store, target) if source else None
    if path is None:
        return None, (
            f"trial {trial.number} has no checkpoint (`hpo run --keep-checkpoints K` keeps the "
            f"best K complete trials' models); train it with: handreid train --config {yaml_path}"
        )
    size = path.stat().st_size / 2**20
    if not source[2]:
        return path, (
            f"wrote {path} ({size:.1f} MB, the model of trial {trial.number}'s first run, which "
            f"handreid train reproduces): handreid evaluate --checkpoint {path}"
        )
    run = source[0]
    cfg = trial_config(study, trial)
    seed = cfg.seed + int(attrs_of(run).get("seed_offset", 0))
    epochs = attrs_of(run).get("train_epochs")
    retrain = f"handreid train --config {yaml_path} --set seed={seed}"
    if epochs:
        retrain += f" --set epochs={epochs} --set early_stop_patience=0"
    held = bool(attrs_of(run).get("on_confirm_ids"))
    if held:  # trained on every study identity, measured on the confirm identities
        retrain += " --set confirm_run=true" + (" --set val_folds=1" if cfg.val_folds > 1 else "")
    where = "the study's identities, measured on the confirm ones" if held else "fold 0"
    return path, (
        f"wrote {path} ({size:.1f} MB, the model of trial {trial.number}'s confirm run "
        f"{run.number} on confirm seed {MODEL_SEED}: training seed {seed}, {where}"
        + (f", {epochs} epochs" if epochs else "")
        + f"; its test metrics are inside): handreid evaluate --checkpoint {path}\n"
        f"re-train that model with: {retrain}"
    )


__all__ = [
    "CHECKPOINT_FILE",
    "DEFAULT_KEEP",
    "CheckpointKeeper",
    "ConfirmKeeper",
    "MODEL_SEED",
    "check_checkpoint_target",
    "checkpoint_source",
    "confirm_model",
    "keep_decided",
    "copy_checkpoint",
    "export_checkpoint",
    "could_enter",
    "top_numbers",
    "trial_checkpoint",
    "upper_bound",
]
