"""Sampler, pruner, baselines and the resumable trial loop that several workers share.

Every sampler ``make_sampler`` builds is wrapped in ``RoundedSampler``: a float parameter
drawn without a ``step`` is rounded to 3 significant digits (and kept inside its range) before
the trial stores it, so the value trained is the value stored, ``optuna trials``, the dashboard
and ``hpo export`` read ``lr_clip_visual: 0.000408`` instead of ``0.00040830388102890006``, and
nothing is lost: 3 digits are steps of at most 1 % of the value, about 460 of them across a
log-uniform range of 100x, far finer than the few dozen trials of a study can tell apart. Ints,
categoricals, floats with a ``step`` and the fixed values of an enqueued trial (a baseline, a
retry) are stored as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import numbers
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.common.paths import STUDIES_DIR
from hpo.fleet.progress import counts
from hpo.fleet.recovery import (
    HeldSignals,
    mark_interrupted,
    recover_stale,
    requeue_baseline,
    worker_id,
    worker_process,
)
from hpo.fleet.scheduler import trial_attrs
from hpo.fleet.slurm import SlurmStop, retry_stopped
from hpo.records.optuna_internals import set_attr, set_study_record, study_record
from hpo.records.space import SearchSpace, space_digest
from hpo.records.storage import (
    StorageError,
    failure_reason,
    open_storage,
    other_default,
    shown,
    study_names,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "runs", "none")


DIGITS = 3  # significant digits of a sampled float parameter (see the module docstring)


def make_sampler(name: str, seed: int | None) -> RoundedSampler:
    """The study's sampler by name, its floats rounded to ``DIGITS`` significant digits."""
    return RoundedSampler(_sampler(name, seed))


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
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


def rounded(value: Any, distribution: BaseDistribution, digits: int = DIGITS) -> Any:
    """``value`` to ``digits`` significant digits, clamped into the range, when
    ``distribution`` is a float without a step; any other value as it is."""
    if (
        not isinstance(distribution, FloatDistribution)
        or distribution.step is not None
        or not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
    ):
        return value
    short = float(f"{float(value):.{digits}g}")
    return min(max(short, distribution.low), distribution.high)


class RoundedSampler(optuna.samplers.BaseSampler):
    """``sampler`` with every float it draws without a step rounded to ``digits`` significant
    digits and kept in its range; everything else is the wrapped sampler's."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, digits: int = DIGITS) -> None:
        self.sampler, self.digits = sampler, digits

    def __str__(self) -> str:
        return f"{self.sampler} (floats to {self.digits} significant digits)"

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        values = self.sampler.sample_relative(study, trial, search_space)
        return {
            name: rounded(value, search_space[name], self.digits) if name in search_space else value
            for name, value in values.items()
        }

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        value = self.sampler.sample_independent(study, trial, param_name, param_distribution)
        return rounded(value, param_distribution, self.digits)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def make_pruner(name: str, epochs: int, warmup_epochs: int = 0, runs: int = 1):
    """Pruning starts after the LR warmup: during warmup low-LR trials only look worse.

    Steps are epochs spent (1-based) over the trial's ``runs`` training runs (folds x
    repeats). ``median`` compares a trial with the other trials on the same run and epoch
    only (``hpo.search.pruning.FoldMedianPruner``), from epoch ``warmup_epochs + 1`` of each
    run on, and stops it after a sixth of the run's epochs (at least 3) below their median in
    a row; hyperband prunes from step ``warmup_epochs + 1`` on.
    """
    first = min(warmup_epochs + 1, max(epochs, 1))
    if name == "median":
        from hpo.search.pruning import FoldMedianPruner

        patience = max(3, math.ceil(epochs / 6))
        return FoldMedianPruner(
            max(epochs, 1), n_startup_trials=3, n_warmup_steps=first, patience=patience
        )
    if name == "hyperband":
        total = epochs * runs
        return optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource=max(total, first + 1), reduction_factor=3
        )
    if name in (
        "runs",
        "none",
    ):  # runs: only the between-run rule (hpo.search.objective), no epochs
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose one of {list(PRUNERS)}")


def load_study(storage: str, name: str | None) -> optuna.Study:
    """An existing study; with one study in the storage, ``name`` may be omitted."""
    try:
        st = open_storage(storage, create=False)
    except StorageError:
        if name is not None and (elsewhere := other_default(storage, name)):
            raise StorageError(
                f"study {name!r} is not in {storage} but in {elsewhere}; pass --storage {elsewhere}"
            ) from None
        raise
    names = study_names(st)
    if name is None:
        from hpo.records.companion import is_companion

        main = [n for n in names if not is_companion(n)]  # confirm's and final's run records
        if not main:
            raise UserError(f"no studies in {shown(storage)} yet; `hpo run` creates one")
        if len(main) != 1:
            raise UserError(
                f"{shown(storage)} holds {len(main)} studies {main}; pick one with --study"
            )
        name = main[0]
    if name not in names:
        if elsewhere := other_default(storage, name):
            raise UserError(
                f"study {name!r} is not in {storage} but in {elsewhere}; pass --storage {elsewhere}"
            )
        raise UserError(
            f"no study named {name!r} in {shown(storage)}; studies there: {names or 'none'}"
        )
    return optuna.load_study(study_name=name, storage=st)


ATTR_CHARS = 200  # the longest user attribute we write: `optuna studies` prints them all


def create_or_resume(
    storage, name: str, space: SearchSpace, *, sampler, pruner, context: dict[str, Any]
) -> optuna.Study:
    """Create the study (baselines enqueued once) or resume it if the space matches.

    Of several processes starting the same new study at once, only the one whose creation
    succeeds enqueues the baselines, so each baseline exists once.
    """
    digest = space_digest(space)
    options = dict(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    try:
        study = optuna.create_study(direction="maximize", **options)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**options)
        stored = study_record(study, "space_digest")
        if stored and stored != digest:
            raise UserError(
                f"study {name!r} was created with a different search space or fixed keys; "
                "resume it with the same options or choose a new --study name"
            ) from None
        return study
    set_study_record(study, "space_digest", digest)  # a check for programs, not a sight
    set_study_record(study, "space", space.to_dict())
    for key, value in context.items():
        # the command (paths and all) is shown in the note and the report; where `optuna
        # studies` prints every user attribute on one line it would double the line
        if key == "command" or (isinstance(value, str) and len(value) > ATTR_CHARS):
            set_study_record(study, key, value)
        else:
            study.set_user_attr(key, value)
    for i, baseline in enumerate(space.baselines):
        params = {k: v for k, v in baseline.items() if k != "name"}
        name_i = baseline.get("name", f"baseline-{i}")
        study.enqueue_trial(params, user_attrs={"baseline": name_i}, skip_if_exists=True)
    return study


def process_seed(seed: int | None) -> int:
    """This process's sampler seed: ``seed`` mixed with host, PID and the time.

    Processes started together on one study (several shells, several machines that are all
    worker 0) must not draw the same suggestions, so no two processes share a seed, even with
    the same ``--seed``. Each trial records the seed (user attribute ``sampler_seed``).
    """
    text = f"{seed}:{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")  # numpy takes 32 bits


class SurplusTrial(Exception):
    """Raised when concurrent workers already cover the requested total."""


class DuplicateTrial(Exception):
    """Raised when another trial already holds the same parameters."""


class StorageFailure(UserError):
    """The storage (or its disk) failed during the run; the message says why."""


def _duplicate_of(trial: optuna.Trial) -> int | None:
    """The number of another live or finished trial with exactly this trial's parameters.

    Every worker stores its parameters before it looks for duplicates, so of two trials that
    drew the same parameters at the same moment at least one sees the other. A sampled trial
    yields to any match (if both yield, both draw again: no training is lost); an enqueued
    trial (baseline, retry), whose parameters every worker sees from the start, yields only to
    an earlier one, so a baseline is never dropped by both of its copies.
    """
    params = trial.params
    fixed = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("fixed_params")
    states = (TrialState.WAITING, TrialState.RUNNING, *FINISHED)
    for t in trial.study.get_trials(deepcopy=False, states=states):
        if t.number == trial.number or str(attrs_of(t).get("error", "")).startswith("duplicate"):
            continue
        other = t.params if t.state != TrialState.WAITING else t.system_attrs.get("fixed_params")
        if other != params or (fixed is not None and t.number > trial.number):
            continue
        return t.number
    return None


class _Guarded:
    """Marks the trial with its worker and refuses trials that concurrent workers made surplus
    or that repeat another trial's parameters; remembers a storage failure in the objective."""

    def __init__(
        self,
        objective: Callable,
        total: int,
        *,
        suggest: Callable[[optuna.Trial], Any] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.objective, self.total, self.suggest = objective, total, suggest
        self.attrs = {"worker": worker_id(), "worker_process": worker_process(), **trial_attrs()}
        self.attrs.update(attrs or {})
        self.storage_error: BaseException | None = None
        self.storage_error_trial: int | None = None
        self.quiet = _QuietFailures()
        self.held = HeldSignals()  # held by run_until from before ask until the trial is marked

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: a baseline is queued again
            self.quiet.numbers.add(trial.number)
            mark_interrupted(trial, stop)
            with contextlib.suppress(Exception):
                frozen = trial.study._storage.get_trial(trial._trial_id)
                if isinstance(stop, SlurmStop):  # Slurm ends the task: any trial is retried
                    retry_stopped(trial.study, frozen, stop)
                else:
                    requeue_baseline(trial.study, frozen)
            raise
        except (SurplusTrial, DuplicateTrial):
            self.quiet.numbers.add(trial.number)
            raise
        except Exception as exc:
            if failure_reason(exc):
                self.storage_error, self.storage_error_trial = exc, trial.number
                self.quiet.numbers.add(trial.number)
            raise

    def _run(self, trial: optuna.Trial) -> float:
        for key, value in self.attrs.items():
            if value is not None:
                set_attr(trial, key, value)
        self.held.release()  # the trial is ours now: an interrupt held meanwhile ends it
        trials = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        done = sum(t.state in FINISHED for t in trials)
        ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if done + ahead >= self.total:
            set_attr(trial, "error", "surplus: other workers already cover the requested trials")
            frozen = trial.study._storage.get_trial(trial._trial_id)
            fixed = frozen.system_attrs.get("fixed_params")
            if fixed:  # a queued baseline or retry must not be lost to the race
                keep = {k: v for k, v in attrs_of(frozen).items() if k in ("baseline", "retry_of")}
                trial.study.enqueue_trial(fixed, user_attrs=keep)
            raise SurplusTrial(f"trial {trial.number} not needed")
        if self.suggest is not None:
            self.suggest(trial)  # the objective's own suggestions return these same values
            other = _duplicate_of(trial)
            if other is not None:
                set_attr(trial, "error", f"duplicate of trial {other}; drawn again")
                raise DuplicateTrial(f"trial {trial.number} repeats trial {other}")
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
    suggest: Callable[[optuna.Trial], Any] | None = None,
    attrs: dict[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> int:
    """Run trials until the study holds ``total`` finished trials; safe with several workers.

    Finished means COMPLETE or PRUNED; a failed trial does not count, so it is replaced. While
    other workers' trials would reach the total, this worker waits for them (or for them to
    be found stale and re-queued). Returns the number of trials this call ran. Stops after
    ``max_failures`` failures in a row (default: ``total``) so a broken config cannot loop
    forever, and at once with StorageFailure when the storage fails.

    ``suggest`` (the search space's) lets a trial see its parameters before it trains, so a
    trial that repeats another's parameters is dropped and drawn again; ``attrs`` are user
    attributes recorded on every trial; ``report`` gets a line per trial retried for a dead
    worker.
    """
    start = time.monotonic()
    ran, fails_in_row = 0, 0
    max_failures = max_failures or max(3, total)
    mine: list[optuna.trial.FrozenTrial] = []
    callbacks = [lambda _study, trial: mine.append(trial)] + ([on_trial] if on_trial else [])
    guarded = _Guarded(objective, total, suggest=suggest, attrs=attrs)
    with quiet_trial_failures(guarded.quiet):
        while True:
            recover_stale(study, report)
            c = counts(study)
            done = c["complete"] + c["pruned"]
            if done >= total or (timeout is not None and time.monotonic() - start >= timeout):
                return ran
            if done + c["running"] >= total:
                time.sleep(poll)
                continue
            try:
                with guarded.held:  # until the objective marks the trial Optuna makes
                    study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks)
            except Exception as exc:
                # Ctrl-C while Optuna records a trial's end surfaces as an error of its own
                # bookkeeping raised while handling the interrupt: it is still the interrupt
                if isinstance(exc.__context__, KeyboardInterrupt):
                    raise exc.__context__ from None  # Ctrl-C or SIGTERM (Terminated), as it was
                raise
            if guarded.storage_error is not None:
                if mine and mine[-1].number == guarded.storage_error_trial:
                    with contextlib.suppress(Exception):  # the storage may refuse this as well
                        requeue_baseline(study, mine[-1])
                raise StorageFailure(failure_reason(guarded.storage_error) or "storage error")
            ran += 1
            last = mine[-1]
            by_design = str(attrs_of(last).get("error", "")).startswith(("surplus", "duplicate"))
            failed = last.state == TrialState.FAIL and not by_design
            if failed:  # a baseline that crashed or ran out of memory gets another try
                requeue_baseline(study, last, report)
            fails_in_row = fails_in_row + 1 if failed else 0
            if fails_in_row >= max_failures:
                raise UserError(
                    f"{fails_in_row} trials failed in a row; last error: "
                    f"{attrs_of(last).get('error', 'see the log')}"
                )


class _QuietFailures(logging.Filter):
    """Drops Optuna's per-trial failure warning (and its traceback) for the trials in
    ``numbers``: those that ended by design or by Ctrl-C (surplus, duplicate, interrupted) or
    by a storage failure, which our own lines report in one line each."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        words = record.getMessage().split(" ", 3)
        if len(words) < 3 or words[0] != "Trial" or words[2] != "failed":
            return True
        return not (words[1].isdigit() and int(words[1]) in self.numbers)


# Optuna logs a failed trial from this module; a filter on the logger where records are made
# applies whatever handlers are configured (tests/hpo/test_recovery.py pins the name).
OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"


@contextlib.contextmanager
def quiet_trial_failures(quiet: _QuietFailures) -> Iterator[None]:
    logger = logging.getLogger(OPTUNA_TRIAL_LOGGER)
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


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
