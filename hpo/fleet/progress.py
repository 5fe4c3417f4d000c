"""What ``hpo run`` and ``hpo confirm`` print while trials train.

Four modes, one per kind of output:

- ``live``: stdout and stderr are terminals: a bar of finished trials and, below it, a status
  line per worker (``trial 7 · fold 2/3 · epoch 5/8 · batch 12/40 · val mAP 0.412 · 3.1
  s/epoch · 1m05s``), redrawn in place as batches finish and once a second (the clock), so that
  something moves during an epoch; a line per finished trial above them.
- ``epochs``: a log or a pipe: one plain line per validated epoch and one per finished trial,
  flushed as they happen; no ``\\r`` and no bar frames.
- ``trials``: ``--quiet``: one line per finished trial.
- ``none``: a worker whose parent shows its progress.

Every validated epoch is also stored in the running trial's ``progress`` user attribute (one
small storage write per epoch, and one at most every ``RECORD_SECONDS`` for the batch within
an epoch). That is how the parent of ``--workers N`` shows each worker's trial: it already
polls the storage once a second for the bar, the workers may run on other machines that share
a database, and nothing has to pass through pipes that a busy parent could let fill up.
``hpo trials --state running`` and the dashboard show the same record.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.common.attrs import attrs_of
from hpo.common.lines import (
    duration,
    epoch_text,
    fit,
    number,
    trial_label,
    trial_line,
    value_text,
    width,
)
from hpo.records.optuna_internals import set_attr

PROGRESS_ATTR = "progress"
ENDED = "ended"  # the progress attribute of a trial that is no longer running
MODES = ("live", "epochs", "trials", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TICK_SECONDS = 1.0  # the live status line's clock
DRAW_SECONDS = 0.2  # at most this often a batch redraws it (a GPU runs hundreds a second)
RECORD_SECONDS = 5.0  # at most this often a batch is written to the progress attribute


def _progress_ended(trial: optuna.Trial) -> None:
    """A finished trial's progress is its history now: a short word replaces the last epoch's
    record, which the dashboard prints on one unbroken line (wider than the window)."""
    # the trial's own outcome (or the storage's error) comes first
    with contextlib.suppress(Exception):
        set_attr(trial, PROGRESS_ATTR, ENDED)


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
    if getattr(record, "metric", "val mAP") != "val mAP":
        out["metric"] = record.metric
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
    return not str(attrs_of(trial).get("error", "")).startswith("surplus")


def run_where(cfg, index: int) -> str:
    """``fold 2/3``, ``fold 2/3 · repeat 1/2`` or ``""``: where run ``index`` of a trial trains
    (the objective's order: the folds of repeat 1, then those of repeat 2, ...)."""
    folds, repeats = int(cfg.val_folds), int(cfg.val_repeats)
    parts = [f"fold {cfg.val_fold + 1}/{folds}"] if folds > 1 else []
    parts += [f"repeat {index // folds + 1}/{repeats}"] if repeats > 1 else []
    return " · ".join(parts)


def status_text(
    label: str, progress: dict[str, Any], seconds: float | None, columns: int | None = None
) -> str:
    """The status line of a running trial: ``trial 7 · fold 2/3 · epoch 5/8 · batch 12/40 ·
    val mAP 0.412 · loss 2.31 · 3.1 s/epoch · 1m05s`` (``batch`` from ``progress["training"]``,
    the metrics of the last validated epoch, the time since the trial started). Parts are left
    out, loss first, until it fits ``columns`` (the terminal's by default)."""
    head = [label] + ([str(progress["where"])] if progress.get("where") else [])
    if progress.get("training"):
        head.append(str(progress["training"]))
    elif progress.get("epoch"):
        head.append(f"epoch {progress['epoch']}/{progress.get('epochs', '?')}")
    else:
        head.append("starting")
    extra = []  # most worth keeping first
    if progress.get("mAP") is not None:
        extra.append(f"{progress.get('metric', 'val mAP')} {value_text(progress['mAP'])}")
    if progress.get("seconds") is not None:
        extra.append(f"{float(progress['seconds']):.1f} s/epoch")
    if progress.get("loss") is not None:
        extra.append(f"loss {number(float(progress['loss']))}")
    clock = [duration(seconds)] if seconds is not None else []
    columns = (columns or width()) - 1  # a terminal's last column would wrap the line
    while True:
        # the order a log line has (hpo.common.lines.epoch_text): mAP, loss, s/epoch
        shown = [x for x in extra if x.startswith("val")]
        shown += [x for x in extra if x.startswith("loss")]
        shown += [x for x in extra if x.endswith("s/epoch")]
        text = " · ".join(head + shown + clock)
        if len(text) <= columns or not extra:
            return text
        extra.pop()


class Progress:
    """The display of one ``hpo run`` / ``hpo confirm`` process (see the module docstring).

    In a training process, pass ``on_epoch`` and ``batches(fit)`` (as ``fit_fn``) to the
    objective, ``on_trial`` to the study's callbacks and wrap the objective with ``started``. In
    the parent of workers, call ``seen`` once before they start and ``poll`` once a second.
    ``line(trial, columns=...)`` writes a finished trial (``trial_line``); ``clock`` (seconds,
    monotonic) is replaceable for tests.
    """

    def __init__(
        self,
        total: int,
        *,
        mode: str,
        initial: int = 0,
        slots: int = 1,
        label: Callable[[Any], str] = trial_label,
        line: Callable[..., str] = trial_line,
        count: Callable[[list[FrozenTrial]], int] = finished_count,
        best: bool = True,
        prefix: str = "",
        desc: str = "trials",
        record: bool = True,
        out: IO | None = None,
        err: IO | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: float = TICK_SECONDS,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; expected one of {MODES}")
        self.total, self.mode, self.initial, self.slots = total, mode, initial, max(slots, 1)
        self.label, self.line, self.count, self.best = label, line, count, best
        self.prefix, self.desc, self.record = prefix, desc, record
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.clock, self.tick_seconds = clock, tick
        self.bar = None
        self.status: list = []
        self._labels: dict[int, str] = {}
        self._seen: set[int] = set()
        # the trial this process trains (None between trials): shown in status slot 0
        self._trial = None
        self._now: dict[str, Any] = {}  # its progress: where, epochs, training, last metrics
        self._runs = 0  # runs of the trial started so far
        self._started = self._drawn = self._recorded = 0.0
        self._idle = "waiting for a trial"
        self._lock = threading.RLock()  # the ticking thread and the training loop both draw
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

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
                self._set_status(i, f"w{i} starting" if self.slots > 1 else self._idle)
            self._stop.clear()
            self._ticker = threading.Thread(target=self._ticking, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self._lock:
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
                set_attr(trial, PROGRESS_ATTR, {"worker": worker})
            with self._lock:
                self._trial, self._now, self._runs = trial, {}, 0
                self._started = self._recorded = self.clock()
                self._draw()
            try:
                return objective(trial)
            finally:
                with self._lock:
                    self._trial, self._now = None, {}
                if self.record and PROGRESS_ATTR in attrs_of(trial):
                    _progress_ended(trial)

        return run

    def batches(self, fit: Callable) -> Callable:
        """``fit`` (``handreid.engine.fit``) that tells this display where each run of the trial
        is and each batch it trains: pass it to the objective as its ``fit_fn``."""

        def run(cfg, **kwargs):
            with self._lock:
                self._now = {"where": run_where(cfg, self._runs), "epochs": int(cfg.epochs)}
                self._runs += 1
                self._draw()
            return fit(cfg, on_batch=self.on_batch, **kwargs)

        return run

    def on_batch(self, epoch: int, batch: int, batches: int) -> None:
        """After each training batch (``epoch`` 0-based, ``batch`` from 1): the status line
        (at most every ``DRAW_SECONDS``) and, at most every ``RECORD_SECONDS``, the trial's
        ``progress`` attribute, where the parent of workers reads it."""
        now = self.clock()
        with self._lock:
            step = f"batch {batch}/{batches}" if batch < batches else "validating"
            self._now["training"] = f"epoch {epoch + 1}/{self._now.get('epochs', '?')} · {step}"
            if self.mode == "live" and (now - self._drawn >= DRAW_SECONDS or batch >= batches):
                self._draw()
            record = self.record and self._trial is not None
            if record and now - self._recorded >= RECORD_SECONDS:
                self._recorded = now
                worker = _worker_index()
                attr = self._now | ({"worker": worker} if worker is not None else {})
                set_attr(self._trial, PROGRESS_ATTR, attr)

    def on_epoch(self, trial: optuna.Trial, record) -> None:
        progress = progress_record(record)
        if self.record:
            set_attr(trial, PROGRESS_ATTR, progress)
        with self._lock:
            if self._trial is None:  # an objective not wrapped by ``started``
                self._trial, self._started = trial, self.clock()
            self._recorded = self.clock()
            self._now = progress
        if self.mode == "live":
            with self._lock:
                self._draw()
        elif self.mode == "epochs":
            self._print(epoch_text(self._label(trial), progress))

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if shown_trial(trial):
            self.write(self._line(trial))
        if self.mode == "live":
            with self._lock:
                self._trial, self._now = None, {}
                self._idle = "waiting for the next trial"
                self._draw()
                self._update_bar(study, study.get_trials(deepcopy=False))

    def tick(self) -> None:
        """Redraw the status line (its clock) and the bar (its elapsed time): called once a
        second by a thread in live mode, so that both move while a batch or a validation
        runs, and between trials."""
        with self._lock:
            if self._trial is not None:
                self._draw()
            if self.bar is not None:
                self.bar.refresh()

    def write(self, text: str) -> None:
        """A line above the bars (live) or on stdout; nothing in mode ``none``."""
        if self.mode == "live":
            from tqdm.auto import tqdm

            with self._lock:  # all its lines at once: one redraw of the bars
                tqdm.write(fit(text), file=self.out)
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
                    self.write(self._line(t))
        columns = width() - (3 if self.slots > 1 else 0)  # "w0 " before each
        texts = running_status(trials, self.slots, self._label, columns)
        with self._lock:
            for i, text in enumerate(texts):
                self._set_status(i, f"w{i} {text}" if self.slots > 1 else text)
            self._update_bar(study, trials)

    # ---- helpers
    def _label(self, trial) -> str:
        if trial.number not in self._labels:
            self._labels[trial.number] = self.label(trial)
        return self._labels[trial.number]

    def _line(self, trial: FrozenTrial) -> str:
        return self.line(trial, columns=width() - len(self.prefix))

    def _print(self, text: str) -> None:
        # one write for all the lines of a trial: workers sharing a log never split them; each
        # line fits the width with the worker's prefix before it
        text = fit(text, width() - len(self.prefix))
        self.out.write("".join(f"{self.prefix}{line}\n" for line in text.splitlines()))
        self.out.flush()

    def _draw(self) -> None:
        """Status slot 0 from the trial this process trains (call with the lock held)."""
        self._drawn = self.clock()
        if self._trial is None:
            self._set_status(0, self._idle)
            return
        seconds = self._drawn - self._started
        self._set_status(0, status_text(self._label(self._trial), self._now, seconds))

    def _ticking(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            # a redraw that fails (a closed terminal) must not print a traceback over the
            # display or end the trial; the next line written says what went wrong, if anything
            with contextlib.suppress(Exception):
                self.tick()

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
    trials: list[FrozenTrial],
    slots: int,
    label: Callable[[Any], str] = trial_label,
    columns: int | None = None,
) -> list[str]:
    """One status text per worker slot from the RUNNING trials (``status_text``: where each is,
    its batch when the worker recorded one, its last epoch, the time since it started): slot =
    the worker index the trial's ``progress`` names, else the first free slot; ``idle`` where no
    trial runs."""
    texts: list[str | None] = [None] * slots
    now = datetime.datetime.now()
    rest = []
    for t in sorted((t for t in trials if t.state == TrialState.RUNNING), key=lambda t: t.number):
        progress = attrs_of(t).get(PROGRESS_ATTR)
        progress = progress if isinstance(progress, dict) else {}
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else None
        text = status_text(label(t), progress, age, columns)
        slot = progress.get("worker")
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
    "run_where",
    "running_status",
    "status_text",
    "worker_prefix",
]
