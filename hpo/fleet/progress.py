"""What ``hpo run`` and ``hpo confirm`` print while trials train.

Four modes, one per kind of output:

- ``live``: stdout and stderr are terminals: a bar of finished trials and, below it, a status
  line per worker (``trial 7 · fold 2/3 · epoch 4/8 · val mAP 0.412 · 3.1 s/epoch``), redrawn
  in place; a line per finished trial above them.
- ``epochs``: a log or a pipe: one plain line per validated epoch and one per finished trial,
  flushed as they happen; no ``\\r`` and no bar frames.
- ``trials``: ``--quiet``: one line per finished trial.
- ``none``: a worker whose parent shows its progress.

Every validated epoch is also stored in the running trial's ``progress`` user attribute (one
small storage write per epoch). That is how the parent of ``--workers N`` shows each worker's
trial: it already polls the storage once a second for the bar, the workers may run on other
machines that share a database, and nothing has to pass through pipes that a busy parent could
let fill up. ``hpo trials --state running`` and the dashboard show the same record.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.common.lines import duration, epoch_text, trial_label, trial_line

PROGRESS_ATTR = "progress"
ENDED = "ended"  # the progress attribute of a trial that is no longer running
MODES = ("live", "epochs", "trials", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _progress_ended(trial: optuna.Trial) -> None:
    """A finished trial's progress is its history now: a short word replaces the last epoch's
    record, which the dashboard prints on one unbroken line (wider than the window)."""
    # the trial's own outcome (or the storage's error) comes first
    with contextlib.suppress(Exception):
        trial.set_user_attr(PROGRESS_ATTR, ENDED)


def output_mode(quiet: bool, out: IO | None = None, err: IO | None = None) -> str:
    """``trials`` with --quiet; ``live`` when both streams are terminals of a known width (and
    the user did not turn bars off with TQDM_DISABLE); else ``epochs``: plain lines. A terminal
    of 0 columns (``script`` without a size, some CI consoles) draws no bar at all."""
    if quiet:
        return "trials"
    streams = (out or sys.stdout, err or sys.stderr)
    if (
        all(_isatty(s) for s in streams)
        and os.environ.get("TQDM_DISABLE", "") in ("", "0")
        and _columns(streams[1]) > 0
    ):
        return "live"
    return "epochs"


def _columns(stream: IO) -> int:
    """The width the bar is drawn in: ``COLUMNS`` if set, else the terminal's; 0 if unknown."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("COLUMNS", "0")) > 0:
            return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _isatty(stream: IO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_record(record) -> dict[str, Any]:
    """The ``progress`` attribute of a trial after one validated epoch (``EpochRecord``)."""
    out: dict[str, Any] = {
        "where": record.where.rstrip(", ").replace(", ", " · "),
        "run": record.run,
        "epoch": record.epoch,
        "epochs": record.epochs,
    }
    for key in ("mAP", "loss", "seconds"):
        value = record.metrics.get(key)
        if value is not None and math.isfinite(value):
            out[key] = round(float(value), 4)
    worker = _worker_index()
    if worker is not None:
        out["worker"] = worker
    return out


def worker_prefix() -> str:
    """``[w1] `` before each line of worker 1 (lines of several workers share one log)."""
    index = _worker_index()
    return "" if index is None else f"[w{index}] "


def _worker_index() -> int | None:
    """This worker's number among the parent's (``hpo.fleet.workers.worker_env``), if it is one."""
    index = os.environ.get("HPO_WORKER_INDEX", "")
    return int(index) if index.isdigit() else None


def finished_count(trials: Iterable[FrozenTrial]) -> int:
    return sum(t.state in FINISHED for t in trials)


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state, lower-case state names: ``{"complete": 3, "pruned": 1, ...}``."""
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def finished(study: optuna.Study) -> int:
    """Finished trials (complete or pruned): what ``--trials`` counts."""
    c = counts(study)
    return c["complete"] + c["pruned"]


def shown_trial(trial: FrozenTrial) -> bool:
    """Trials worth a line: not those a worker refused because others covered the total."""
    return not str(trial.user_attrs.get("error", "")).startswith("surplus")


class Progress:
    """The display of one ``hpo run`` / ``hpo confirm`` process (see the module docstring).

    In a training process, pass ``on_epoch`` to the objective, ``on_trial`` to the study's
    callbacks and wrap the objective with ``started``. In the parent of workers, call
    ``seen`` once before they start and ``poll`` once a second.
    """

    def __init__(
        self,
        total: int,
        *,
        mode: str,
        initial: int = 0,
        slots: int = 1,
        label: Callable[[Any], str] = trial_label,
        line: Callable[[FrozenTrial], str] = trial_line,
        count: Callable[[list[FrozenTrial]], int] = finished_count,
        best: bool = True,
        prefix: str = "",
        desc: str = "trials",
        record: bool = True,
        out: IO | None = None,
        err: IO | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; expected one of {MODES}")
        self.total, self.mode, self.initial, self.slots = total, mode, initial, max(slots, 1)
        self.label, self.line, self.count, self.best = label, line, count, best
        self.prefix, self.desc, self.record = prefix, desc, record
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.bar = None
        self.status: list = []
        self._labels: dict[int, str] = {}
        self._seen: set[int] = set()

    # ---- setup
    def __enter__(self) -> Progress:
        if self.mode == "live":
            from tqdm.auto import tqdm

            common = dict(file=self.err, dynamic_ncols=True, disable=False)
            self.bar = tqdm(
                total=self.total,
                initial=min(self.initial, self.total),
                desc=self.desc,
                unit="trial",
                position=0,
                **common,
            )
            self.status = [
                tqdm(total=0, bar_format="{desc}", position=i + 1, leave=False, **common)
                for i in range(self.slots)
            ]
            for i in range(self.slots):
                self._set_status(i, f"w{i} starting" if self.slots > 1 else "waiting for a trial")
        return self

    def __exit__(self, *exc) -> None:
        for s in self.status:
            s.close()
        if self.bar is not None:
            self.bar.close()
        self.status, self.bar = [], None

    # ---- in a training process
    def started(self, objective: Callable[[optuna.Trial], float]) -> Callable:
        """``objective`` that first shows that its trial started."""

        def run(trial: optuna.Trial) -> float:
            worker = _worker_index()
            if self.record and worker is not None:  # the parent's status slot from the start
                trial.set_user_attr(PROGRESS_ATTR, {"worker": worker})
            if self.mode == "live":
                self._set_status(0, f"{self._label(trial)} · first epoch")
            try:
                return objective(trial)
            finally:
                if self.record and PROGRESS_ATTR in trial.user_attrs:
                    _progress_ended(trial)

        return run

    def on_epoch(self, trial: optuna.Trial, record) -> None:
        progress = progress_record(record)
        if self.record:
            trial.set_user_attr(PROGRESS_ATTR, progress)
        text = epoch_text(self._label(trial), progress)
        if self.mode == "live":
            self._set_status(0, text)
        elif self.mode == "epochs":
            self._print(text)

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if shown_trial(trial):
            self.write(self.line(trial))
        if self.mode == "live":
            self._set_status(0, "waiting for the next trial")
            self._update_bar(study, study.get_trials(deepcopy=False))

    def write(self, text: str) -> None:
        """A line above the bars (live) or on stdout; nothing in mode ``none``."""
        if self.mode == "live":
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.out)  # all its lines at once: one redraw of the bars
            self.out.flush()
        elif self.mode != "none":
            self._print(text)

    def note(self, text: str) -> None:
        """A line that must not be lost (a retried trial), printed even in mode ``none``."""
        if self.mode == "none":
            self._print(text)
        else:
            self.write(text)

    # ---- in the parent of workers
    def seen(self, study: optuna.Study) -> None:
        """Trials finished before the workers started: not announced again."""
        self._seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def poll(self, study: optuna.Study) -> None:
        """Live mode: the bar, a status line per worker from the running trials' ``progress``,
        and a line per trial finished since the last poll (the workers print nothing)."""
        if self.mode != "live":
            return
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state.is_finished() and t.number not in self._seen:
                self._seen.add(t.number)
                if shown_trial(t):
                    self.write(self.line(t))
        texts = running_status(trials, self.slots, self._label)
        for i, text in enumerate(texts):
            self._set_status(i, f"w{i} {text}" if self.slots > 1 else text)
        self._update_bar(study, trials)

    # ---- helpers
    def _label(self, trial) -> str:
        if trial.number not in self._labels:
            self._labels[trial.number] = self.label(trial)
        return self._labels[trial.number]

    def _print(self, text: str) -> None:
        # one write for all the lines of a trial: workers sharing a log never split them
        self.out.write("".join(f"{self.prefix}{line}\n" for line in text.splitlines()))
        self.out.flush()

    def _set_status(self, slot: int, text: str) -> None:
        if slot < len(self.status):
            self.status[slot].set_description_str(text, refresh=True)

    def _update_bar(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        if self.bar is None:
            return
        self.bar.n = min(self.count(trials), self.total)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        postfix = {}
        if self.best:
            complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
            if complete:
                postfix["best"] = f"{max(complete):.3f}"
        if self.slots > 1:
            postfix["running"] = running
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()


def running_status(
    trials: list[FrozenTrial], slots: int, label: Callable[[Any], str] = trial_label
) -> list[str]:
    """One status text per worker slot from the RUNNING trials: slot = the worker index the
    trial's ``progress`` names, else the first free slot; ``idle`` where no trial runs."""
    texts: list[str | None] = [None] * slots
    now = datetime.datetime.now()
    rest = []
    for t in sorted((t for t in trials if t.state == TrialState.RUNNING), key=lambda t: t.number):
        progress = t.user_attrs.get(PROGRESS_ATTR)
        if isinstance(progress, dict) and progress.get("epoch"):
            text = epoch_text(label(t), progress)
        else:
            started = t.datetime_start
            age = f" ({duration((now - started).total_seconds())})" if started else ""
            text = f"{label(t)} · first epoch{age}"
        slot = progress.get("worker") if isinstance(progress, dict) else None
        if isinstance(slot, int) and 0 <= slot < slots and texts[slot] is None:
            texts[slot] = text
        else:
            rest.append(text)
    for i in range(slots):
        if texts[i] is None:
            texts[i] = rest.pop(0) if rest else "idle"
    return [t or "idle" for t in texts]


__all__ = [
    "MODES",
    "PROGRESS_ATTR",
    "Progress",
    "output_mode",
    "progress_record",
    "running_status",
    "worker_prefix",
]
