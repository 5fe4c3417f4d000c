"""Dead workers: who ran a trial, whether that process still runs, and failing and re-queueing
the trials of those that died."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.fleet.scheduler import dead_tasks
from hpo.records.storage import MAX_RETRIES

DEAD_WORKER = "dead worker"  # the error of a trial whose worker process is gone


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _machine() -> str | None:
    """Kernel boot and PID namespace: two processes with the same value see the same PIDs.

    Host names alone are not enough: containers and cloned machines often share one.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def worker_process() -> str | None:
    """``<machine>/<pid>/<start>`` of this process, recorded with each trial; None off Linux."""
    machine, start = _machine(), _proc_start(os.getpid())
    return f"{machine}/{os.getpid()}/{start}" if machine and start else None


def _local_pid_dead(attrs: dict[str, Any]) -> bool:
    """True when the trial's worker was a process on this machine that no longer runs."""
    process = attrs.get("worker_process")
    if isinstance(process, str) and process.count("/") >= 3:
        machine, pid, start = process.rsplit("/", 2)
        if machine != _machine() or not pid.isdigit() or int(pid) == os.getpid():
            return False
        return _proc_start(int(pid)) != start  # gone, or the PID now names another process
    worker = attrs.get("worker")
    if not isinstance(worker, str) or ":" not in worker:
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


def recover_stale(study: optuna.Study, report: Callable[[str], None] | None = None) -> list[int]:
    """Fail RUNNING trials whose worker died, and queue each for a retry.

    A worker process on this machine that no longer runs is seen at once, on every storage:
    its trial is failed and re-queued with the user attribute ``retry_of`` (and a baseline's
    ``baseline`` label). Workers on other
    machines are found by heartbeat on database storages (after the grace period, through
    Optuna, whose retry callback records ``failed_trial``). ``report`` gets one line per
    retried trial. Returns the numbers of the trials failed here.
    """
    storage = study._storage
    failed = []
    trials = study.get_trials(deepcopy=False)
    gone = dead_tasks(t for t in trials if t.state == TrialState.RUNNING)  # Slurm's word
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if t.number not in gone and not _local_pid_dead(attrs_of(t)):
            continue
        worker = attrs_of(t).get("worker", "?")
        why = gone.get(t.number, f"its worker {worker} is no longer running")
        try:
            error = gone.get(t.number, f"{DEAD_WORKER}: {worker} died")
            storage.set_trial_user_attr(t._trial_id, "error", error)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except (
            RuntimeError,
            optuna.exceptions.UpdateFinishedTrialError,
            optuna.exceptions.StorageInternalError,  # sqlite: another worker is doing the same
        ):
            continue  # finished or failed by another worker meanwhile
        failed.append(t.number)
        if _retries(t, trials) >= MAX_RETRIES:  # a trial that kills its worker every time
            if report:
                report(
                    f"trial {t.number}: {why}; marked FAIL, "
                    f"not queued again after {MAX_RETRIES} retries of the same parameters"
                )
            continue
        study.enqueue_trial(_params(t), user_attrs=_retry_attrs(t))
        if report:
            report(
                f"trial {t.number}: {why}; marked FAIL and queued again with the same parameters"
            )
    # an RDBStorage arrives wrapped in Optuna's cache: test the protocol, not the class
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        running = {
            t.number: attrs_of(t).get("worker", "?")
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        }
        with warnings.catch_warnings():  # marked experimental since Optuna 2.9; used on purpose
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if report and running:
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                if t.number in running:
                    report(
                        f"trial {t.number}: no heartbeat from its worker {running[t.number]}; "
                        "marked FAIL and queued again with the same parameters"
                    )
    return failed


def _params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The parameters to queue a trial again with: an enqueued trial (baseline, retry) that
    stopped before it drew them has them only as Optuna's fixed parameters."""
    return dict(trial.system_attrs.get("fixed_params") or trial.params)


def _retry_attrs(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs: dict[str, Any] = {"retry_of": trial.number}
    if attrs_of(trial).get("baseline"):
        attrs["baseline"] = attrs_of(trial)["baseline"]
    return attrs


def requeue_baseline(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    report: Callable[[str], None] | None = None,
) -> bool:
    """Queue a baseline trial that failed or was interrupted again, with its label.

    Once per failure: nothing is queued if a retry of this trial exists already (Ctrl-C, a
    storage failure and a dead worker can each see the same trial); and not after
    ``MAX_RETRIES`` retries along one chain, so a baseline that always crashes cannot loop.
    A sampled trial is not queued again: the sampler draws a new one. Returns whether a
    retry was queued.
    """
    name = attrs_of(trial).get("baseline")
    if not name:
        return False
    trials = study.get_trials(deepcopy=False)
    if any(attrs_of(t).get("retry_of") == trial.number for t in trials):
        return False
    if _retries(trial, trials) >= MAX_RETRIES:
        if report:
            report(
                f"trial {trial.number}: baseline {name} failed again; not queued after "
                f"{MAX_RETRIES} retries"
            )
        return False
    study.enqueue_trial(_params(trial), user_attrs=_retry_attrs(trial))
    if report:
        report(f"trial {trial.number}: baseline {name} did not finish; queued again")
    return True


def _retries(trial: optuna.trial.FrozenTrial, trials: list[optuna.trial.FrozenTrial]) -> int:
    """How many retries of dead workers' trials led to ``trial``."""
    by_number = {t.number: t for t in trials}
    depth, seen = 0, set()
    while isinstance(attrs_of(trial).get("retry_of"), int) and trial.number not in seen:
        seen.add(trial.number)
        trial = by_number.get(attrs_of(trial)["retry_of"], trial)
        depth += 1
    return depth


def interrupt_reason(exc: BaseException | None = None) -> str:
    """``interrupted (SIGINT)`` or ``interrupted (SIGTERM)``: hpo.cli turns SIGTERM into
    ``handreid.errors.Terminated`` (a KeyboardInterrupt), Ctrl-C raises a bare one."""
    from handreid.errors import Terminated

    sigterm = isinstance(exc, Terminated) or (exc is not None and exc.args == ("SIGTERM",))
    return f"interrupted ({'SIGTERM' if sigterm else 'SIGINT'})"


def mark_interrupted(trial: optuna.Trial, exc: BaseException) -> None:
    """Record why an interrupted trial ends (Optuna fails it with no word of its own); best
    effort: an interrupt during a storage failure must stay an interrupt."""
    with contextlib.suppress(Exception):
        trial.set_user_attr("error", interrupt_reason(exc))


def release_own_trials(study: optuna.Study, reason: str) -> list[int]:
    """Fail the trials this process left RUNNING (after Ctrl-C or a storage error), as far as
    the storage still takes writes, and queue a baseline among them again; a trial that cannot
    be failed now is found dead by PID or heartbeat on the next start."""
    me, released = worker_id(), []
    try:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 - the storage may be the thing that failed
        return released
    for t in trials:
        if attrs_of(t).get("worker") != me:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", reason)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            released.append(t.number)
            requeue_baseline(study, t)
        except Exception:  # noqa: BLE001 - best effort, see above
            continue
    return released


def own_running(study: optuna.Study) -> list[int]:
    """The trials this process still holds RUNNING ([] when the storage cannot be read)."""
    me = worker_id()
    try:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 - the storage may be the thing that failed
        return []
    return [t.number for t in trials if attrs_of(t).get("worker") == me]


def release_unclaimed(
    study: optuna.Study, since: datetime.datetime, reason: str, grace: float = 2.0
) -> list[int]:
    """Fail the RUNNING trials started since ``since`` that no worker ever marked as its own.

    A worker interrupted between Optuna creating its trial and the objective writing the
    ``worker`` attribute leaves a trial that neither it nor PID recovery can name. Call this
    only once every worker started since ``since`` has exited; a live worker on another
    machine marks its trial within milliseconds, so one still unmarked after ``grace``
    seconds belongs to nobody. A baseline among them is queued again.
    """

    def unclaimed() -> list[optuna.trial.FrozenTrial]:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t
            for t in running
            if "worker" not in attrs_of(t) and t.datetime_start and t.datetime_start >= since
        ]

    if not unclaimed():
        return []
    time.sleep(grace)
    released = []
    for t in unclaimed():
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", reason)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            requeue_baseline(study, study._storage.get_trial(t._trial_id))
        except Exception:  # noqa: BLE001 - best effort, as release_own_trials
            continue
        released.append(t.number)
    return released


class HeldSignals:
    """Interrupts held while a trial has no owner yet.

    Optuna's ``ask`` creates the trial, then calls the sampler's ``before_trial``; a Ctrl-C or
    SIGTERM in between used to leave a RUNNING trial that no worker had marked as its own, so
    nothing could say whose it was. ``hold`` catches SIGINT, SIGTERM and SIGUSR1 (where Python
    handles them) and remembers the first; ``release`` (once the objective has marked the
    trial) restores the handlers and delivers it, so the interrupt ends a trial that names its
    worker and says why. As a context manager around ``optimize`` it holds on entry and
    releases on exit (for a signal that came when no trial was made). Main thread only.
    """

    SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
    )

    def __init__(self) -> None:
        self.pending: tuple[int, Any] | None = None
        self._old: dict[int, Any] = {}

    def hold(self) -> None:
        if self._old or threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):  # Python's own (Ctrl-C, ours for SIGTERM and Slurm's warning)
                self._old[sig] = signal.signal(sig, self._remember)

    def _remember(self, signum: int, frame) -> None:
        if self.pending is None:
            self.pending = (signum, frame)

    def release(self) -> None:
        old, self._old = self._old, {}
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if self.pending is not None:
            (signum, frame), self.pending = self.pending, None
            old[signum](signum, frame)  # raises as the signal would have (KeyboardInterrupt...)

    def __enter__(self) -> HeldSignals:
        self.hold()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
