"""Each trial's epoch history, kept as two trial artifacts: ``history.json`` (every validated
epoch of every run: loss terms, learning rates, Rank-1/5/10, val mAP, seconds) and
``curves.png`` (val mAP and train loss per epoch, one line per run), and read back for
``hpo show --trial N`` and the report.

``history.json``::

    {"format": 1, "trial": 3, "status": "completed",
     "runs": [{"run": 0, "fold": 0, "seed": 0, "epochs": 8, "epochs_run": 8}, ...],
     "epochs": [{"run": 0, "fold": 0, "epoch": 1, "step": 1, "mAP": 0.41, "loss": 5.2,
                 "id": 4.1, "tri": 0.9, "supcon": 0.2, "lr_clip_visual": 0.003,
                 "lr_modules": 0.003, "rank1": 0.5, "rank5": 0.8, "rank10": 0.9,
                 "seconds": 4.2}, ...]}

Each epoch's ``step`` is the step its val mAP was reported at, so a trial's entries map
step -> mAP exactly as its intermediate values do. A trial without the artifact (older
studies, ``hpo confirm`` runs, no artifact store) gets entries made from its intermediate
values: run, fold, epoch, step and mAP only.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import upload_artifact
from optuna.trial import FrozenTrial

from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.records import optuna_internals
from hpo.records.artifacts import artifact_metas, load_trial_config, read_artifact

log = logging.getLogger("hpo")

HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
FORMAT = 1
# per-epoch keys besides run, fold, epoch, step, mAP (and lr_<group> for each learning rate)
LOSS_KEYS = ("loss", "id", "tri", "supcon")
RANK_KEYS = ("rank1", "rank5", "rank10")


def _number(value: Any) -> float | None:
    """A JSON-safe float: NaN and infinities become null (JSON has no spelling for them)."""
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def epoch_entry(record) -> dict[str, Any]:
    """One ``hpo.search.objective.EpochRecord`` as a history entry (the keys ``hpo show`` prints)."""
    m = record.metrics
    entry: dict[str, Any] = {
        "run": record.run,
        "fold": record.fold,
        "epoch": record.epoch,
        "step": record.step,
        "mAP": _number(m.get("mAP")),
    }
    entry.update({k: _number(m[k]) for k in LOSS_KEYS if k in m})
    entry.update({k: _number(m[k]) for k in sorted(m) if k.startswith("lr_")})
    entry.update({k: _number(m[k]) for k in (*RANK_KEYS, "seconds") if k in m})
    return entry


def history_document(
    number: int, status: str, runs: Sequence[dict], records: Iterable
) -> dict[str, Any]:
    """The content of ``history.json``; ``runs`` are the trial's planned runs (run, fold,
    seed, epochs), to which each gets the number of epochs it validated."""
    epochs = [epoch_entry(r) for r in records]
    done = {}
    for e in epochs:
        done[e["run"]] = done.get(e["run"], 0) + 1
    return {
        "format": FORMAT,
        "trial": number,
        "status": status,
        "runs": [{**r, "epochs_run": done.get(r["run"], 0)} for r in runs],
        "epochs": epochs,
    }


def _upload(trial: optuna.Trial, store, name: str, data: bytes) -> str:
    with tempfile.TemporaryDirectory(prefix="hpo-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def save_history(trial: optuna.Trial, store, document: dict[str, Any]) -> None:
    """Upload ``history.json`` and ``curves.png`` for a running trial (a finished trial takes
    no artifacts). A failure is a warning: the history never costs a trial its result."""
    from hpo.records.curves import curves_png

    try:
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
        _upload(trial, store, HISTORY_FILE, text.encode())
        title = f"trial {trial.number} ({document['status']})"
        if attrs_of(trial).get("baseline"):
            title += f", baseline {attrs_of(trial)['baseline']}"
        png = curves_png(title, document["epochs"], document["runs"])
        _upload(trial, store, CURVES_FILE, png)
    except Exception as exc:  # noqa: BLE001 - disk, store or storage: the trial goes on
        log.warning("warning: trial %d: could not store its epoch history: %s", trial.number, exc)


def _storage_and_trial(study_or_storage, trial: FrozenTrial | int):
    if isinstance(study_or_storage, optuna.Study):
        storage = optuna_internals.storage_of(study_or_storage)
        if isinstance(trial, int):
            trials = {t.number: t for t in study_or_storage.get_trials(deepcopy=False)}
            if trial not in trials:
                raise UserError(
                    f"study {study_or_storage.study_name!r} has no trial {trial} "
                    f"(trials 0..{len(trials) - 1})"
                )
            trial = trials[trial]
        return storage, trial
    if isinstance(trial, int):
        raise TypeError("a trial number needs the study; with a storage pass the FrozenTrial")
    if isinstance(study_or_storage, str):
        study_or_storage = optuna.storages.get_storage(study_or_storage)
    return study_or_storage, trial


def load_history_document(
    study_or_storage, trial: FrozenTrial | int, store=None
) -> dict[str, Any] | None:
    """The trial's ``history.json`` as stored, or None when it has none (or no store is given)."""
    storage, trial = _storage_and_trial(study_or_storage, trial)
    if store is None:
        return None
    metas = [m for m in artifact_metas(trial, storage=storage) if m.filename == HISTORY_FILE]
    if not metas:
        return None
    text = read_artifact(store, metas[-1], f"trial {trial.number}")
    try:
        document = json.loads(text)
    except ValueError:
        raise UserError(
            f"trial {trial.number}: {HISTORY_FILE} in the artifact store is not valid JSON"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("epochs"), list):
        raise UserError(f"trial {trial.number}: {HISTORY_FILE} has no list of epochs")
    return document


def load_history(study_or_storage, trial: FrozenTrial | int, store=None) -> list[dict]:
    """A trial's per-epoch entries: from its ``history.json`` artifact when it has one, else
    made from its intermediate values (run, fold, epoch, step, mAP).

    ``study_or_storage``: the study (then ``trial`` may be a number) or its storage (an
    Optuna storage or URL, with the FrozenTrial); ``store``: the artifact store
    (``hpo.records.artifacts.open_artifact_store``), None to use intermediate values only.
    A history artifact that cannot be read is a one-line UserError.
    """
    storage, frozen = _storage_and_trial(study_or_storage, trial)
    document = load_history_document(storage, frozen, store)
    if document is not None:
        return document["epochs"]
    study = study_or_storage if isinstance(study_or_storage, optuna.Study) else None
    return intermediate_history(frozen, *_run_shape(study, storage, frozen, store))


def intermediate_history(
    trial: FrozenTrial, epochs_per_run: int | None = None, folds: int | None = None
) -> list[dict]:
    """History entries from the trial's intermediate values; with ``epochs_per_run`` unknown,
    every step is taken as an epoch of one run. ``folds`` (default: the trial's ``n_folds``)
    names each run's fold."""
    folds = max(int(folds or attrs_of(trial).get("n_folds", 1) or 1), 1)
    out = []
    for step in sorted(trial.intermediate_values):
        run, epoch = divmod(step - 1, epochs_per_run) if epochs_per_run else (0, step - 1)
        value = _number(trial.intermediate_values[step])
        out.append(
            {"run": run, "fold": run % folds, "epoch": epoch + 1, "step": step, "mAP": value}
        )
    return out


def _run_shape(study, storage, trial: FrozenTrial, store) -> tuple[int | None, int | None]:
    """Epochs per run and folds of the trial: its config artifact, else the study's space."""
    try:
        config = load_trial_config(trial, storage=storage, store=store)
    except UserError:
        config = None
    if isinstance(config, dict) and isinstance(config.get("epochs"), int):
        return config["epochs"], config.get("val_folds")
    if study is None:
        return None, None
    from hpo.records.artifacts import load_space_dict
    from hpo.records.space import parse_space

    try:
        data = load_space_dict(study, store)
        cfg = parse_space(data).config(trial.params) if data is not None else None
    except (UserError, ValueError, KeyError, TypeError):
        return None, None
    return (cfg.epochs, cfg.val_folds) if cfg is not None else (None, None)


__all__ = [
    "CURVES_FILE",
    "HISTORY_FILE",
    "epoch_entry",
    "history_document",
    "intermediate_history",
    "load_history",
    "load_history_document",
    "save_history",
]
