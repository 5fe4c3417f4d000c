"""Storage, sampler, pruner, baselines and the resumable trial loop."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from handreid.errors import UserError
from hpo.space import SearchSpace

DEFAULT_STORAGE = "sqlite:///studies/handreid.db"
DEFAULT_JOURNAL = "studies/handreid.log"
STUDIES_DIR = Path("studies")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "none")


class StorageError(UserError):
    """A storage URL or journal path that cannot be used."""


def is_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str, *, create: bool = True, heartbeat: int | None = None):
    """A database URL (sqlite, postgresql, mysql) or a path to a journal file.

    ``create=False`` refuses to create a new database or journal (for read-only commands).
    """
    if not is_url(storage):
        path = Path(storage)
        if not path.exists() and not create:
            raise StorageError(f"journal file not found: {path}")
        if not path.parent.is_dir():
            raise StorageError(
                f"cannot create journal file {path}: folder {path.parent} does not exist"
            )
        if path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00":
            raise StorageError(f"{path} is an SQLite database; pass --storage sqlite:///{path}")
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except (UnicodeDecodeError, ValueError):
            raise StorageError(f"{path} is not an Optuna journal file") from None
        except OSError as exc:
            raise StorageError(f"cannot open journal file {path}: {exc.strerror or exc}") from None
    if storage.startswith("sqlite:///"):
        path = Path(storage.removeprefix("sqlite:///"))
        if not path.exists() and not create:
            raise StorageError(
                f"no study database at {path}; run `hpo run` first or pass --storage"
            )
        if not path.parent.is_dir():
            raise StorageError(f"cannot create {storage}: folder {path.parent} does not exist")
    kwargs: dict[str, Any] = {}
    if heartbeat:
        # A worker that stops beating for two intervals is dead; its trial is failed and re-queued.
        kwargs = dict(
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
        )
    engine_kwargs = (
        {"connect_args": {"connect_timeout": 5}} if storage.startswith("postgresql") else None
    )
    try:
        return RDBStorage(storage, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open storage {storage}: {reason[:300]}") from None


def make_sampler(name: str, seed: int | None):
    if name == "tpe":
        # multivariate + group handle the conditional ArcFace keys; constant_liar spreads workers
        with warnings.catch_warnings():  # both options are marked experimental; used on purpose
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise UserError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")


def make_pruner(name: str, epochs: int, warmup_epochs: int = 0, runs: int = 1):
    """Pruning starts after the LR warmup: during warmup low-LR trials only look worse.

    Steps are epochs spent (1-based) over the trial's ``runs`` training runs (folds x
    repeats), and Optuna prunes from step ``n_warmup_steps`` on.
    """
    first = min(warmup_epochs + 1, max(epochs, 1))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first)
    if name == "hyperband":
        total = epochs * runs
        return optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource=max(total, first + 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose one of {list(PRUNERS)}")


def space_digest(space: SearchSpace) -> str:
    text = json.dumps(space.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage: str, name: str | None) -> optuna.Study:
    """An existing study; with one study in the storage, ``name`` may be omitted."""
    st = open_storage(storage, create=False)
    names = study_names(st)
    if name is None:
        main = [n for n in names if not n.endswith(".confirm")]  # hpo confirm's run records
        if len(main) != 1:
            raise UserError(f"{storage} holds {len(main)} studies {main}; pick one with --study")
        name = main[0]
    if name not in names:
        raise UserError(f"no study named {name!r} in {storage}; studies there: {names or 'none'}")
    return optuna.load_study(study_name=name, storage=st)


def create_or_resume(
    storage, name: str, space: SearchSpace, *, sampler, pruner, context: dict[str, Any]
) -> optuna.Study:
    """Create the study (baselines enqueued once) or resume it if the space matches."""
    digest = space_digest(space)
    exists = name in study_names(storage)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    if exists:
        stored = study.user_attrs.get("space_digest")
        if stored and stored != digest:
            raise UserError(
                f"study {name!r} was created with a different search space or fixed keys; "
                "resume it with the same options or choose a new --study name"
            )
        return study
    study.set_user_attr("space_digest", digest)
    study.set_user_attr("space", space.to_dict())
    for key, value in context.items():
        study.set_user_attr(key, value)
    for i, baseline in enumerate(space.baselines):
        params = {k: v for k, v in baseline.items() if k != "name"}
        name_i = baseline.get("name", f"baseline-{i}")
        # skip_if_exists: two processes creating the study at once enqueue each baseline once
        study.enqueue_trial(params, user_attrs={"baseline": name_i}, skip_if_exists=True)
    return study


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def finished(study: optuna.Study) -> int:
    c = counts(study)
    return c["complete"] + c["pruned"]


class SurplusTrial(Exception):
    """Raised when concurrent workers already cover the requested total."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _local_pid_dead(worker: str | None) -> bool:
    """True when ``worker`` names a process on this host that no longer runs."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker died, and queue each for a retry.

    Database storages with heartbeats fail them after the grace period through Optuna (its
    retry callback re-queues them, recording ``failed_trial``). Other storages (journal files)
    have no heartbeats: trials of dead worker processes on this machine are failed at once
    and re-queued with the user attribute ``retry_of``. Returns the numbers failed here.
    """
    storage = study._storage  # an RDBStorage arrives wrapped in Optuna's cache: test the protocol
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        with warnings.catch_warnings():  # marked experimental since Optuna 2.9; used on purpose
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return []  # heartbeats cover workers on every machine; one mechanism per storage
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _local_pid_dead(t.user_attrs.get("worker")):
            continue
        try:
            storage.set_trial_user_attr(
                t._trial_id, "error", f"worker {t.user_attrs['worker']} died"
            )
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished or failed by another worker meanwhile
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        failed.append(t.number)
    return failed


class _Guarded:
    """Marks the trial with its worker and refuses trials that concurrent workers made surplus."""

    def __init__(self, objective: Callable, total: int) -> None:
        self.objective, self.total = objective, total

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        trials = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        done = sum(t.state in FINISHED for t in trials)
        ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if done + ahead >= self.total:
            trial.set_user_attr(
                "error", "surplus: other workers already cover the requested trials"
            )
            frozen = trial.study._storage.get_trial(trial._trial_id)
            fixed = frozen.system_attrs.get("fixed_params")
            if fixed:  # a queued baseline or retry must not be lost to the race
                keep = {k: v for k, v in frozen.user_attrs.items() if k in ("baseline", "retry_of")}
                trial.study.enqueue_trial(fixed, user_attrs=keep)
            raise SurplusTrial(f"trial {trial.number} not needed")
        return self.objective(trial)


def run_until(
    study: optuna.Study,
    objective: Callable,
    total: int,
    *,
    timeout: float | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    max_failures: int | None = None,
    poll: float = 1.0,
) -> int:
    """Run trials until the study holds ``total`` finished trials; safe with several workers.

    Finished means COMPLETE or PRUNED; a failed trial does not count, so it is replaced. While
    other workers' trials would reach the total, this worker waits for them (or for them to
    be found stale and re-queued). Returns the number of trials this call ran. Stops after
    ``max_failures`` failures in a row (default: ``total``) so a broken config cannot loop
    forever.
    """
    start = time.monotonic()
    ran, fails_in_row = 0, 0
    max_failures = max_failures or max(3, total)
    mine: list[optuna.trial.FrozenTrial] = []
    callbacks = [lambda _study, trial: mine.append(trial)] + ([on_trial] if on_trial else [])
    guarded = _Guarded(objective, total)
    while True:
        recover_stale(study)
        c = counts(study)
        done = c["complete"] + c["pruned"]
        if done >= total or (timeout is not None and time.monotonic() - start >= timeout):
            return ran
        if done + c["running"] >= total:
            time.sleep(poll)
            continue
        study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks)
        ran += 1
        last = mine[-1]
        surplus = "surplus" in last.user_attrs.get("error", "")
        fails_in_row = fails_in_row + 1 if last.state == TrialState.FAIL and not surplus else 0
        if fails_in_row >= max_failures:
            raise UserError(
                f"{fails_in_row} trials failed in a row; last error: "
                f"{last.user_attrs.get('error', 'see the log')}"
            )


def synthetic_data(
    root: Path = STUDIES_DIR, *, ids: int = 64, per_id: int = 16, size: int = 64, seed: int = 0
) -> Path:
    """Generate the demo dataset once under ``studies/`` and reuse it afterwards."""
    from handreid.data.synthetic import write_synthetic

    target = root / f"synthetic-{ids}x{per_id}-{size}px-seed{seed}"
    if (target / "HandInfo.csv").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        write_synthetic(tmp, ids=ids, per_id=per_id, size=size, seed=seed)
        os.replace(tmp, target)
    except OSError:
        if not (target / "HandInfo.csv").is_file():  # another worker may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
