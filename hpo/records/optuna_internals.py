"""Where the dashboard, report and artifact code reach below Optuna's public API;
tests/hpo/test_optuna_internals.py pins every behaviour relied on here, so an Optuna upgrade
fails those tests, not a user's study.

Why it exists: Optuna stores artifact metadata and optuna-dashboard stores saved figures as
study system attributes, and no storage can delete a system attribute. optuna-dashboard's
"delete artifact" button (and older hpo versions) marked a removed artifact with a JSON ``null``,
after which ``optuna.artifacts.get_all_artifact_meta`` raises ``TypeError``; a figure saved
under an id stays on the study page for good. A trial's checkpoint that falls out of the
study's top K leaves the same kind of entry on the trial, which only a database can delete.

Long study records (the search space, the identity lists of the splits, the confirm summary)
are kept as study system attributes under ``hpo:<name>`` (``study_record``/``set_study_record``),
not as user attributes: ``optuna studies`` prints every user attribute on one line and
optuna-dashboard's Study User Attributes card shows them unwrapped, so a 2 kB attribute made
both unreadable. System attributes live in the same storage, so every worker (a Slurm task on a
journal file or PostgreSQL, with no shared artifact store) still reads them, and neither tool
prints them. Optuna 3.1 removed ``Study.set_system_attr`` from the public API; the storage's
``set_study_system_attr`` is what Optuna's own artifacts and optuna-dashboard's notes use.
A trial's long records (a confirm run's per-identity AP, ``run_identity_ap``) are trial system
attributes under the same prefix (``trial_record``/``set_trial_record``), for the same reasons:
``optuna trials`` prints user attributes and the dashboard's trial page lists them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

# our long study records (see the module docstring) and trial bookkeeping (hpo.common.attrs)
from hpo.common.attrs import RECORD_PREFIX, RECORDED

ARTIFACT_PREFIX = "artifacts:"  # optuna.artifacts' study/trial system-attribute key prefix
FIGURE_PREFIX = "dashboard:plot_data:"  # optuna_dashboard.save_plotly_graph_object's prefix


def _backend(study_or_storage):
    """The storage that holds the rows: Optuna wraps RDBStorage in _CachedStorage."""
    from optuna.storages._cached_storage import _CachedStorage

    is_study = isinstance(study_or_storage, optuna.Study)
    storage = study_or_storage._storage if is_study else study_or_storage
    # only the cache wrapper: a JournalStorage's own ``_backend`` is its log file
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def storage_of(study: optuna.Study):
    """The study's storage, for calls that take one with a finished trial
    (``get_all_artifact_meta(frozen_trial, storage=...)``); Optuna exposes it only privately."""
    return study._storage


def storage_identity(storage) -> str:
    """Which storage this is, as a string that a copy of it does not share: the absolute path
    of an SQLite database or journal file, a server database's URL without its password, an
    in-memory storage's process and object. Artifact ownership records hold it."""
    import os

    backend = _backend(storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        from sqlalchemy.engine import make_url

        url = make_url(backend.url)
        if url.get_backend_name() == "sqlite" and url.database:
            return "sqlite:" + os.path.realpath(url.database)
        return url.render_as_string(hide_password=True)
    if isinstance(backend, optuna.storages.JournalStorage):
        path = getattr(backend._backend, "_file_path", None)
        if path is not None:
            return "journal:" + os.path.realpath(path)
    return f"{type(backend).__name__}:{os.getpid()}:{id(backend)}"


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def copy_study_into(study: optuna.Study, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """``study`` (attributes, system attributes, every trial) copied into ``storage`` under its
    own name, as ``optuna.copy_study`` does, without the in-memory storage's log line."""
    # the in-memory storage logs "A new study created in memory": no event of the user's
    quiet = logging.getLogger("optuna.storages._in_memory")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        storage.create_new_study(study.directions, study.study_name)
    finally:
        quiet.setLevel(level)
    dup = optuna.load_study(study_name=study.study_name, storage=storage)
    for key, value in study_system_attrs(study).items():
        storage.set_study_system_attr(dup._study_id, key, value)
    for key, value in study.user_attrs.items():
        storage.set_study_user_attr(dup._study_id, key, value)
    for trial in study.get_trials(deepcopy=False):
        storage.create_new_trial(dup._study_id, template_trial=trial)
    return dup


def study_id(study: optuna.Study) -> int:
    """The study's id, as optuna-dashboard's URLs (``/dashboard/studies/<id>``) name it."""
    return study._study_id


def study_record(study: optuna.Study, name: str, default: Any = None) -> Any:
    """The study record ``name`` (``space``, ``identities``, ``confirm``); a study made before
    the records moved has it as a user attribute of the same name."""
    value = study_system_attrs(study).get(RECORD_PREFIX + name)
    if value is not None:
        return value
    return study.user_attrs.get(name, default)


def set_study_record(study: optuna.Study, name: str, value: Any) -> None:
    """Store a JSON-ready ``value`` where workers read it and the standard tools do not print."""
    study._storage.set_study_system_attr(study._study_id, RECORD_PREFIX + name, value)


def trial_record(trial: FrozenTrial, name: str, default: Any = None) -> Any:
    """The trial record ``name``; a trial made before the records moved has it as a user
    attribute of the same name."""
    value = trial.system_attrs.get(RECORD_PREFIX + name)
    if value is not None:
        return value
    return trial.user_attrs.get(name, default)


def set_trial_record(trial: optuna.Trial, name: str, value: Any) -> None:
    """Store a JSON-ready ``value`` on a running trial, out of the standard tools' sight."""
    trial.storage.set_trial_system_attr(trial._trial_id, RECORD_PREFIX + name, value)


def set_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """Record ``key`` on a running trial: bookkeeping out of the standard tools' sight, the
    rest as a user attribute."""
    if key in RECORDED:
        trial.storage.set_trial_system_attr(trial._trial_id, RECORD_PREFIX + key, value)
    else:
        trial.set_user_attr(key, value)


def set_frozen_attr(storage, trial: FrozenTrial, key: str, value: Any) -> None:
    """``set_attr`` for a trial known by its frozen copy (another worker's, still running)."""
    if key in RECORDED:
        storage.set_trial_system_attr(trial._trial_id, RECORD_PREFIX + key, value)
    else:
        storage.set_trial_user_attr(trial._trial_id, key, value)


def enqueue(study: optuna.Study, params: dict[str, Any], attrs: dict[str, Any]) -> None:
    """``study.enqueue_trial(params)`` with ``attrs`` split as ``set_attr`` splits them: the
    recorded ones as system attributes, the rest as user attributes."""
    system = {"fixed_params": params}  # what enqueue_trial stores
    system |= {RECORD_PREFIX + k: v for k, v in attrs.items() if k in RECORDED}
    user = {k: v for k, v in attrs.items() if k not in RECORDED}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, system_attrs=system, user_attrs=user
        )
    )


def artifact_tombstones(study: optuna.Study) -> list[str]:
    """Keys of the study's artifact entries that are ``null`` (deleted artifacts)."""
    return [
        k
        for k, v in study_system_attrs(study).items()
        if k.startswith(ARTIFACT_PREFIX) and v in ("null", None)
    ]


def figure_keys(study: optuna.Study, graph_object_ids: Iterable[str]) -> list[str]:
    """The system-attribute keys (one per chunk) of figures saved under these ids."""
    prefixes = tuple(f"{FIGURE_PREFIX}{gid}:" for gid in graph_object_ids)
    return [k for k in study_system_attrs(study) if prefixes and k.startswith(prefixes)]


def figure_json(study: optuna.Study, graph_object_id: str) -> str | None:
    """The JSON of a figure saved under this id (its chunks joined), or None."""
    attrs = study_system_attrs(study)
    prefix = f"{FIGURE_PREFIX}{graph_object_id}:"
    chunks = []
    while f"{prefix}{len(chunks)}" in attrs:
        chunks.append(attrs[f"{prefix}{len(chunks)}"])
    return "".join(chunks) if chunks else None


def delete_study_system_attrs(study: optuna.Study, keys: Iterable[str]) -> bool:
    """Delete these study system attributes; False where the storage cannot (journal files).

    Database storages (SQLite, PostgreSQL, MySQL) delete the rows in one transaction; the
    in-memory storage drops the keys. A journal file is append-only and has no delete record.
    """
    keys = sorted(set(keys))
    if not keys:
        return True
    storage = _backend(study)
    if isinstance(storage, optuna.storages.RDBStorage):
        _delete_rows(storage, "study_system_attributes", "study_id", study._study_id, keys)
        return True
    if isinstance(storage, optuna.storages.InMemoryStorage):
        with storage._lock:
            attrs = storage._studies[study._study_id].system_attrs
            for key in keys:
                attrs.pop(key, None)
        return True
    return False


def _delete_rows(storage, table_name: str, owner: str, owner_id: int, keys: list[str]) -> None:
    """DELETE the ``keys`` rows of one study or trial from an attribute table of Optuna's schema."""
    import sqlalchemy as sa

    # a lightweight table clause: the dialect quotes "key" where it is a reserved word
    table = sa.table(table_name, sa.column(owner), sa.column("key"))
    stmt = sa.delete(table).where(table.c[owner] == owner_id, table.c.key.in_(keys))
    with storage.engine.begin() as conn:
        conn.execute(stmt)


class ClaimingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's database storage, where taking a queued (WAITING) trial is one conditional
    UPDATE, so that exactly one process gets it.

    Optuna reads the trial ``FOR UPDATE`` and then writes RUNNING; SQLite ignores ``FOR
    UPDATE``, so two processes that read WAITING at the same moment both took the queued
    baseline and trained it (and the second failed with "Cannot tell a COMPLETE trial").
    A single ``UPDATE ... WHERE state = 'WAITING'`` is atomic on every database
    (tests/hpo/test_concurrency.py races three processes on SQLite and PostgreSQL).
    """

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        if state != optuna.trial.TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        import datetime

        import sqlalchemy as sa
        from optuna.storages._rdb.models import TrialModel

        states = optuna.trial.TrialState  # Optuna's model maps them to each database's type
        stmt = (
            sa.update(TrialModel)
            .where(TrialModel.trial_id == trial_id, TrialModel.state == states.WAITING)
            .values(state=states.RUNNING, datetime_start=datetime.datetime.now())
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1


def delete_trial_system_attrs(storage, trial: FrozenTrial, keys: Iterable[str]) -> bool:
    """Delete system attributes of a finished trial; False where the storage cannot (journal).

    Optuna refuses every write to a finished trial, and caches finished trials of a database
    in the process that read them: this process may still list the deleted keys, a new one
    (the dashboard started afterwards, ``hpo export``) does not.
    """
    keys = sorted(set(keys))
    if not keys:
        return True
    backend = _backend(storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        _delete_rows(backend, "trial_system_attributes", "trial_id", trial._trial_id, keys)
        return True
    if isinstance(backend, optuna.storages.InMemoryStorage):
        with backend._lock:
            frozen = copy.copy(backend._get_trial(trial._trial_id))
            frozen.system_attrs = {k: v for k, v in frozen.system_attrs.items() if k not in keys}
            backend._set_trial(trial._trial_id, frozen)
        return True
    return False
