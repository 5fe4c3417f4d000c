"""``hpo confirm``: race the top trials and the baselines on fresh training seeds.

A study's best value is the maximum over epochs and over trials of noisy estimates, so it
overstates what the config will do (the winner's curse), and a config can be lucky on the very
identities the study validated on, which re-training on fresh seeds does not undo. A study with
confirm identities (``confirm_fraction`` > 0: identities no study trial trained or validated
on) is confirmed there: each of the top candidates and every baseline of the search space (a
baseline that was pruned or failed in the study included) trains on ``seeds`` new training
seeds on all the study's identities and is measured on the confirm identities, one run per
seed; the runs pair by seed and by identity, and seeds and identities are both random in every
interval (``hpo.decide.verdict.new_identities``). ``check_design`` refuses a design whose
error term has fewer than ``MIN_DF`` df before anything runs.

A study without confirm identities (made before they existed, or ``confirm_fraction: 0``) is
confirmed as before, on its own split (same ``split_seed``, every fold), runs paired by
(seed, fold), and every verdict says it is about the study's own validation identities. It
compares:

- each config's confirmed mean with a 95 % t interval;
- each config against the reference baseline (the best confirmed baseline) with simultaneous
  95 % intervals and adjusted p-values, and against the incumbent (the study's best trial) with
  one unadjusted interval each; both use the fold as the unit of replication
  (``hpo.decide.verdict`` says how and why, and what the verdict's error rate is).

Each config trains a fixed number of epochs, its study trial's median best epoch (at least one
more than the warm-up), without early stopping, and is measured at that last epoch: the value
of the epoch a final model trains, not the maximum over epochs. ``hpo export``'s refit hint
uses the same number. Decisions use only the seeds on which every config finished every fold;
a summary with fewer says "partial" and how to finish it.

The runs are trials of a companion study ``<study>.confirm`` in the same storage: queued
once, taken by any number of workers, visible in the dashboard, and resumable (a killed run
is failed and queued again; finished runs are never repeated). The summary is the main
study's ``confirm`` record (``current``/``store``), which ``hpo show`` and ``hpo export`` read.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from handreid.stats import bootstrap_se, mean_se, paired_bootstrap_se, t_interval
from hpo.common.args import check_plan_args
from hpo.common.attrs import attrs_of
from hpo.common.lines import diff_text, interval_text, p_text
from hpo.decide import verdict as vd
from hpo.fleet.recovery import (
    HeldSignals,
    _local_pid_dead,
    mark_interrupted,
    worker_id,
    worker_process,
)
from hpo.fleet.scheduler import dead_tasks, trial_attrs
from hpo.records.companion import (
    companion_name,
    is_companion,
    load_companion,
    open_companion,
)
from hpo.records.configs import study_space
from hpo.records.optuna_internals import enqueue, set_attr, trial_record
from hpo.search.study import _QuietFailures, quiet_trial_failures

# where confirm measured: identities no study trial saw, or (studies without confirm
# identities) the validation identities the study selected on
CONFIRM_IDS, STUDY_IDS = "confirm identities", "study identities"
SEED_STRIDE = 1000  # confirm seed s trains with seed + 1000 * s: never a study trial's seed
LEVEL = 0.95


@dataclass
class Plan:
    """Which configs are confirmed, on which seeds, for how many epochs."""

    candidates: list[int]  # trial numbers, best first
    baselines: list[int]
    incumbent: int
    seeds: list[int]  # 1-based confirm seeds
    epochs: dict[int, int] = field(default_factory=dict)  # trial -> fixed epochs to train
    params: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial -> params to train
    notes: list[str] = field(default_factory=list)  # baselines that cannot be confirmed, why
    top: int = 0
    new_ids: bool = False  # measured on the study's confirm identities (confirm_fraction > 0)

    @property
    def trials(self) -> list[int]:
        return list(dict.fromkeys(self.candidates + self.baselines))

    def pairs(self) -> list[tuple[int, int]]:
        return [(t, s) for t in self.trials for s in self.seeds]


def plan(study: optuna.Study, top: int, seeds: int) -> Plan:
    check_plan_args(top, seeds)

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(
            f"study {study.study_name!r} has no completed trial yet; nothing to confirm"
        )
    ranked = sorted(complete, key=lambda t: t.value, reverse=True)
    space = study_space(study)
    p = Plan(
        candidates=[t.number for t in ranked[:top]],
        baselines=[],
        incumbent=ranked[0].number,
        seeds=list(range(1, seeds + 1)),
        top=top,
    )
    for t in ranked[:top]:
        p.params[t.number] = dict(t.params)
    _plan_baselines(p, trials, space)
    for n in p.trials:
        p.epochs[n] = fixed_epochs(_trial(trials, n), space, p.params[n])
    p.new_ids = bool(space is not None and space.base.get("confirm_fraction", 0) > 0)
    folds, repeats = _folds(ranked[0]), int(attrs_of(ranked[0]).get("n_repeats", 1))
    if not p.new_ids and folds * repeats > SEED_STRIDE:  # the seeds of two confirm seeds would meet
        raise UserError(
            f"{folds * repeats} runs per seed exceed the confirm seed stride {SEED_STRIDE}; "
            "use fewer folds x repeats"
        )
    check_design(p, folds, repeats)
    return p


MIN_DF = 4  # an error term with fewer df gives intervals too wide, and too unstable, to decide


def design_df(configs: int, seeds: int, folds: int, repeats: int, new_ids: bool) -> int:
    """The df of the verdict's error term that the design guarantees before any run: the
    config x seed term on confirm identities (identities add more), the config x fold term
    with several folds, the config x run term with one."""
    if new_ids:
        return (configs - 1) * (seeds - 1)
    units = folds if folds > 1 else seeds * repeats
    return (configs - 1) * (units - 1)


def check_design(p: Plan, folds: int, repeats: int) -> None:
    """Refuse a design that cannot decide (fewer than ``MIN_DF`` df), naming one that can."""
    configs, seeds = len(p.trials), len(p.seeds)
    df = design_df(configs, seeds, folds, repeats, p.new_ids)
    if configs < 2 or df >= MIN_DF:
        return
    if not p.new_ids and folds > 1:  # the fold is the unit and the study fixed the folds
        need = next(c for c in range(configs + 1, 10_000) if (c - 1) * (folds - 1) >= MIN_DF)
        fix = f"--top {p.top + need - configs} (more configs)"
        what = f"({configs} configs - 1) x ({folds} folds - 1)"
    else:
        per = 1 if p.new_ids else repeats
        need = next(s for s in range(seeds + 1, 10_000) if (configs - 1) * (s * per - 1) >= MIN_DF)
        fix = f"--seeds {need}"
        what = f"({configs} configs - 1) x ({seeds * per} runs each - 1)"
    raise UserError(
        f"this confirm would decide with {df} df, {what}; an interval needs at least "
        f"{MIN_DF} to decide: {fix} gives enough"
    )


def _trial(trials: list[FrozenTrial], number: int) -> FrozenTrial:
    return next(t for t in trials if t.number == number)


def _plan_baselines(p: Plan, trials: list[FrozenTrial], space) -> None:
    """Every baseline of the space (else of the study's trials): its best complete trial, or,
    when none completed (pruned, failed, not yet run), its latest trial run on the space's
    values. A baseline without any trial is named in ``p.notes``."""
    names = [b.get("name", f"baseline-{i}") for i, b in enumerate(space.baselines)] if space else []
    values = {
        b.get("name", f"baseline-{i}"): {k: v for k, v in b.items() if k != "name"}
        for i, b in enumerate(space.baselines if space else [])
    }
    names += [attrs_of(t)["baseline"] for t in trials if attrs_of(t).get("baseline")]
    for name in dict.fromkeys(names):
        mine = [t for t in trials if attrs_of(t).get("baseline") == name]
        done = [t for t in mine if t.state == TrialState.COMPLETE]
        if done:
            t = max(done, key=lambda t: t.value)
            params = dict(t.params)
        elif mine and (name in values or mine[-1].params):
            t = mine[-1]
            params = values.get(name) or dict(t.params)
        else:
            p.notes.append(
                f"baseline {name!r} of the search space has no trial in the study, so there is "
                "no trial to race it as; `hpo run` queues it"
            )
            continue
        p.baselines.append(t.number)
        p.params.setdefault(t.number, params)


def fixed_epochs(trial: FrozenTrial, space, params: dict[str, Any] | None = None) -> int:
    """The epochs a config's confirm runs and final model train: the median best epoch of its
    study trial's runs (``best_epochs``), at least one more than the warm-up; the config's
    ``epochs`` when the trial recorded none (pruned, failed, not run)."""
    cfg = space.config(params if params is not None else trial.params) if space else None
    best = attrs_of(trial).get("best_epochs") or []
    if not best:
        return int(cfg.epochs if cfg else attrs_of(trial).get("best_epoch", 1))
    n = round(statistics.median(best))
    if cfg is not None:
        n = min(max(n, cfg.warmup_epochs + 1), cfg.epochs)
    return max(int(n), 1)


def _key(t: FrozenTrial) -> tuple[int, int] | None:
    attrs = attrs_of(t)
    if "candidate" not in attrs or "confirm_seed" not in attrs:
        return None
    return int(attrs["candidate"]), int(attrs["confirm_seed"])


def fail_dead_runs(companion: optuna.Study) -> list[int]:
    """Fail confirm runs whose worker died, so ``queue`` can queue them again.

    Local workers are recognised by PID at once; on database storages with heartbeats,
    Optuna fails silent remote workers' runs and re-queues them with their attributes.
    """
    with warnings.catch_warnings():  # marked experimental since Optuna 2.9; used on purpose
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(companion)  # a no-op without heartbeats
    failed = []
    running = companion.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    gone = dead_tasks(running)  # Slurm tasks that no longer run
    for t in running:
        if t.number in gone or _local_pid_dead(attrs_of(t)):
            try:
                if t.number in gone:
                    companion._storage.set_trial_user_attr(t._trial_id, "error", gone[t.number])
                companion.tell(t.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):
                continue  # finished or failed by another process meanwhile
            failed.append(t.number)
    return failed


def queue(study: optuna.Study, companion: optuna.Study, p: Plan) -> list[tuple[int, int]]:
    """Queue every (trial, seed) run that is not complete, running or queued; returns them."""
    taken = {
        _key(t)
        for t in companion.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        )
    }
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    added = []
    for number, seed in p.pairs():
        if (number, seed) in taken:
            continue
        trial = by_number[number]
        attrs = {
            "candidate": number,
            "confirm_seed": seed,
            "seed_offset": SEED_STRIDE * seed,
            "role": "baseline" if attrs_of(trial).get("baseline") else "candidate",
        }
        if number in p.epochs:
            attrs["train_epochs"] = p.epochs[number]
        # the baseline's name stays with its study trial (``candidate``); ``role`` says it here
        if p.new_ids:
            attrs["on_confirm_ids"] = True
        enqueue(companion, p.params.get(number, trial.params), attrs)
        added.append((number, seed))
    return added


class _Surplus(Exception):
    pass


def work(
    companion: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    on_run: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    marker: str = "candidate",
    what: str = "confirm run",
) -> int:
    """Run queued confirm runs until none is left; returns how many this process ran.

    Runs go through ``study.optimize`` so database storages keep their heartbeats; a failed
    run is recorded and queued again by the next ``hpo confirm``. Ctrl-C fails the running
    one and propagates. ``marker`` is the attribute every queued run carries (``hpo final``'s
    runs have their own).
    """

    quiet = _QuietFailures()  # our own lines report surplus and interrupted runs
    held = HeldSignals()  # from before Optuna's ask until the run is marked as ours

    def guarded(trial: optuna.Trial) -> float:
        if marker not in attrs_of(trial):
            # another worker took the last queued run between our look and our ask
            set_attr(trial, "error", f"surplus: no queued {what} was left")
            quiet.numbers.add(trial.number)
            raise _Surplus()
        set_attr(trial, "worker", worker_id())
        if (process := worker_process()) is not None:
            set_attr(trial, "worker_process", process)
        for key, value in trial_attrs().items():
            set_attr(trial, key, value)
        try:
            held.release()
            return objective(trial)
        except KeyboardInterrupt as exc:
            quiet.numbers.add(trial.number)
            mark_interrupted(trial, exc)
            raise

    ran = 0
    callbacks = [on_run] if on_run else []
    with quiet_trial_failures(quiet):
        while companion.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                with held:  # until the run is marked as this worker's
                    companion.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks)
            except Exception as exc:
                if isinstance(exc.__context__, KeyboardInterrupt):  # see hpo.search.study.run_until
                    raise KeyboardInterrupt from None
                raise
            ran += 1
    return ran


# ---- statistics ---------------------------------------------------------------------------
@dataclass
class Runs:
    """One config's confirm runs, ordered by (seed, run): run values and identity AP."""

    values: list[float] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)  # (seed, run index)
    identity_ap: list[dict] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    seeds: set[int] = field(default_factory=set)  # confirm seeds with a complete run


def collect(companion: optuna.Study, p: Plan) -> dict[int, Runs]:
    """Per trial number, the run values of its complete confirm runs on the plan's seeds."""
    out: dict[int, Runs] = {n: Runs() for n in p.trials}
    done = sorted(
        (k, t)
        for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (k := _key(t)) is not None and k[0] in out and k[1] in p.seeds
    )
    seen = set()
    for (number, seed), t in done:
        if (number, seed) in seen:  # a duplicate from a race: the first one counts
            continue
        seen.add((number, seed))
        runs = out[number]
        values = attrs_of(t).get("fold_values") or [t.value]
        aps = trial_record(t, "run_identity_ap") or [{} for _ in values]
        for i, v in enumerate(values):
            runs.values.append(float(v))
            runs.keys.append((seed, i))
            runs.identity_ap.append(aps[i] if i < len(aps) else {})
        runs.best_epochs += list(attrs_of(t).get("best_epochs", []))
        runs.seeds.add(seed)
    return out


def _identity_var(runs: Runs, folds: int) -> float:
    """Identity-sampling variance that run spread cannot show (one fold: same identities)."""
    if folds > 1:
        return 0.0
    terms = [bootstrap_se([a]) ** 2 for a in runs.identity_ap if a]
    return sum(terms) / len(terms) if terms else 0.0


def _paired_var(a: Runs, b: Runs, folds: int) -> float:
    if folds > 1:
        return 0.0
    terms = [
        paired_bootstrap_se(x, y) ** 2 for x, y in zip(a.identity_ap, b.identity_ap, strict=True)
    ]
    terms = [t for t in terms if math.isfinite(t)]
    return sum(terms) / len(terms) if terms else 0.0


def estimate(runs: Runs, folds: int) -> dict[str, Any]:
    mean, se = mean_se(runs.values, extra_var=_identity_var(runs, folds))
    lo, hi = t_interval(mean, se, len(runs.values) - 1, LEVEL, bounds=(0.0, 1.0))
    return {"mean": mean, "se": se, "ci": [lo, hi], "n": len(runs.values)}


def _on_seeds(runs: Runs, seeds: list[int]) -> Runs:
    keep = [i for i, k in enumerate(runs.keys) if k[0] in seeds]
    return Runs(
        [runs.values[i] for i in keep],
        [runs.keys[i] for i in keep],
        [runs.identity_ap[i] for i in keep],
        runs.best_epochs,
        runs.seeds & set(seeds),
    )


def decide(
    runs: dict[int, Runs],
    info: dict[int, dict[str, Any]],
    seeds: list[int],
    runs_per_seed: int,
    folds: int,
    baselines: list[int],
    incumbent: int,
    level: float = LEVEL,
    new_ids: bool = False,
) -> dict[str, Any]:
    """Rows, reference baseline and winner from the runs of the seeds that every config
    finished (complete pairs only); the statistics are ``hpo.decide.verdict``'s.

    runs: per trial number its confirm runs, keyed (seed, run index); info: per trial number
    the row's fixed fields (role, baseline, objective, ...). Pure: ``benchmarks/
    decisions_verdict.py`` feeds it simulated runs.
    """
    configs = list(info)
    full = set(range(runs_per_seed))
    done = [
        s for s in seeds if all({i for (t, i) in runs[n].keys if t == s} >= full for n in configs)
    ]
    finished = sorted([n, s, i] for n in configs for (s, i) in runs[n].keys)
    out: dict[str, Any] = {
        "finished": finished,
        "complete_seeds": done,
        "complete": len(done) == len(seeds),
        "reference_baseline": None,
        "winner": None,
        "rows": [],
    }
    if not done or not configs:
        return out
    table = {n: _on_seeds(runs[n], done) for n in configs}
    if new_ids:
        return out | _decide_new_ids(table, info, runs, baselines, incumbent, level)
    values = np.array([table[n].values for n in configs])  # (configs, seeds x runs)
    if folds > 1:  # the fold is the unit of replication: average its seeds
        units = np.stack([values[:, k::folds].mean(axis=1) for k in range(folds)], axis=1)
    else:
        units = values
    rows = {}
    for n in configs:
        rows[n] = {**info[n], "trial": n, **estimate(table[n], folds)}
        rows[n]["best_epochs"] = runs[n].best_epochs
    base = [n for n in baselines if n in rows]
    reference = max(base, key=lambda n: rows[n]["mean"]) if base else None
    index = {n: i for i, n in enumerate(configs)}
    pairs = len(done) * runs_per_seed
    if reference is not None:
        extra = {
            index[n]: _paired_var(table[n], table[reference], folds)
            for n in configs
            if n != reference
        }
        diffs = vd.against_reference(units, index[reference], pairs, level, extra)
    for n in configs:
        row = rows[n]
        row["vs_baseline"] = (
            diffs[index[n]].record() if reference is not None and n != reference else None
        )
        row["vs_incumbent"] = None
        if incumbent in rows and n != incumbent:
            extra_var = _paired_var(table[n], table[incumbent], folds)
            d = vd.between(units, index[n], index[incumbent], pairs, level, extra_var)
            row["vs_incumbent"] = d.record() if d else None
    winner = max(rows, key=lambda n: rows[n]["mean"])
    out.update(
        reference_baseline=reference,
        winner=winner,
        rows=[rows[n] for n in sorted(rows, key=lambda n: -rows[n]["mean"])],
    )
    return out


def _decide_new_ids(
    table: dict[int, Runs],
    info: dict[int, dict[str, Any]],
    runs: dict[int, Runs],
    baselines: list[int],
    incumbent: int,
    level: float,
) -> dict[str, Any]:
    """``decide`` for runs measured on confirm identities (one run per seed): the identities
    are random too, so every interval is ``hpo.decide.verdict.new_identities``'."""
    configs = list(info)
    aps = [a for n in configs for a in table[n].identity_ap]
    names = sorted(set.intersection(*(set(a) for a in aps))) if aps and all(aps) else []
    rows: dict[int, dict[str, Any]] = {}
    terms = None
    if len(names) >= 2:
        terms = np.array([[vd.linearized(a, names) for a in table[n].identity_ap] for n in configs])
    for i, n in enumerate(configs):
        values = table[n].values
        if terms is not None:
            mean, se, ci = vd.on_new_identities(terms[i], level)
        else:  # no per-identity AP stored: the runs alone (identities not random)
            mean, se = mean_se(values)
            ci = t_interval(mean, se, len(values) - 1, level, bounds=(0.0, 1.0))
        rows[n] = {**info[n], "trial": n, "mean": mean, "se": se, "ci": list(ci)}
        rows[n] |= {"n": len(values), "best_epochs": runs[n].best_epochs}
    base = [n for n in baselines if n in rows]
    reference = max(base, key=lambda n: rows[n]["mean"]) if base else None
    index = {n: i for i, n in enumerate(configs)}
    diffs = (
        vd.new_identities(terms, index[reference], level)
        if (terms is not None and reference is not None)
        else {}
    )
    for n in configs:
        d = diffs.get(index[n]) if n != reference else None
        rows[n]["vs_baseline"] = d.record() if d else None
        rows[n]["vs_incumbent"] = None
        if terms is not None and incumbent in rows and n != incumbent:
            d = vd.new_identities_between(terms, index[n], index[incumbent], level)
            rows[n]["vs_incumbent"] = d.record() if d else None
    winner = max(rows, key=lambda n: rows[n]["mean"])
    return {
        "reference_baseline": reference,
        "winner": winner,
        "rows": [rows[n] for n in sorted(rows, key=lambda n: -rows[n]["mean"])],
        "identities": len(names),
    }


def summarize(
    study: optuna.Study, companion: optuna.Study, p: Plan, storage: str | None = None
) -> dict[str, Any]:
    """The confirm summary stored in the study's ``confirm`` user attribute."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    inc = by_number[p.incumbent]
    folds = 1 if p.new_ids else _folds(inc)
    runs_per_seed = 1 if p.new_ids else folds * int(attrs_of(inc).get("n_repeats", 1))
    info = {}
    for n in p.trials:
        t = by_number[n]
        info[n] = {
            "role": "baseline" if attrs_of(t).get("baseline") else "candidate",
            "baseline": attrs_of(t).get("baseline", ""),
            "state": t.state.name,
            "objective": t.value,
            "objective_se": attrs_of(t).get("value_se"),
            "epochs": p.epochs.get(n),
        }
    body = decide(
        collect(companion, p),
        info,
        p.seeds,
        runs_per_seed,
        folds,
        p.baselines,
        p.incumbent,
        new_ids=p.new_ids,
    )
    command = f"hpo confirm --study {study.study_name} --top {p.top} --seeds {len(p.seeds)}"
    if storage:
        command += f" --storage {storage}"
    return {
        "seeds": p.seeds,
        "candidates": p.candidates,
        "baselines": p.baselines,
        "incumbent": p.incumbent,
        **body,
        "runs_per_seed": runs_per_seed,
        "folds": folds,
        "measured_on": CONFIRM_IDS if p.new_ids else STUDY_IDS,
        "level": LEVEL,
        "notes": p.notes,
        "command": command,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _folds(trial: FrozenTrial) -> int:
    return int(attrs_of(trial).get("n_folds", 1))


def partial_text(summary: dict[str, Any]) -> str | None:
    """``partial: 1 of 3 seeds ...`` for a summary some runs of which are missing."""
    if summary.get("complete", True):
        return None
    seeds = summary.get("seeds", [])
    done = summary.get("complete_seeds")
    command = summary.get("command", "hpo confirm")
    if done is None:  # a summary written before runs were recorded one by one
        return f"partial: some runs are missing; `{command}` finishes them"
    return (
        f"partial: {len(done)} of {len(seeds)} seeds finished for every config"
        + ("; decided on those" if done else "; no verdict yet")
        + f"; `{command}` finishes the rest"
    )


def decision(summary: dict[str, Any]) -> str | None:
    """What the verdict says of the winner (or, when a baseline wins, of the best candidate)
    against the reference baseline: ``better``, ``worse``, ``not distinguishable``; None when
    nothing is compared."""
    row = _compared_row(summary)
    d = row.get("vs_baseline") if row else None
    if not d:
        return None
    lo, hi = d["ci"]
    return "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable"


def _compared_row(summary: dict[str, Any]) -> dict[str, Any] | None:
    rows = {r["trial"]: r for r in summary.get("rows", [])}
    winner, ref = summary.get("winner"), summary.get("reference_baseline")
    if winner is None or ref is None:
        return None
    if winner != ref:
        return rows[winner]
    others = [r for r in rows.values() if r["trial"] != ref and r["role"] != "baseline"]
    return max(others, key=lambda r: r["mean"]) if others else None


def on_new_ids(summary: dict[str, Any]) -> bool:
    """Whether the summary's configs were measured on confirm identities (a summary from
    before confirm identities existed was measured on the study's own)."""
    return summary.get("measured_on") == CONFIRM_IDS


def metric(summary: dict[str, Any]) -> str:
    """What the confirmed values are: ``confirm mAP`` (on the confirm identities) or
    ``val mAP`` (on the identities the study validated, and selected, on)."""
    return "confirm mAP" if on_new_ids(summary) else "val mAP"


def scope(summary: dict[str, Any]) -> str:
    """`` on the study's own validation identities`` where a verdict is not about new hands."""
    return "" if on_new_ids(summary) else " on the study's own validation identities"


def verdict(summary: dict[str, Any]) -> str:
    """One plain line: is the confirmed winner distinguishable from the baseline?"""
    partial = partial_text(summary)
    text = _verdict(summary)
    return f"{partial}: {text}" if partial else text


def _verdict(summary: dict[str, Any]) -> str:
    winner, ref = summary.get("winner"), summary.get("reference_baseline")
    if winner is None:
        if summary.get("finished"):
            return "no seed has every config's runs yet, so no config is compared"
        return "no confirm run has finished yet"
    if ref is None:
        return f"confirmed winner: trial {winner}; no baseline was confirmed to compare with"
    row = _compared_row(summary)
    if winner == ref:
        if row is None:
            return f"the baseline (trial {ref}) is the only confirmed config"
        lead = f"the baseline (trial {ref}) has the best confirmed mean; the best candidate, "
        return lead + _against_baseline(row, ref, summary)
    return "the confirmed winner, " + _against_baseline(row, ref, summary)


def _against_baseline(row: dict[str, Any], ref: int, summary: dict[str, Any]) -> str:
    d = row["vs_baseline"]
    if d is None:
        return f"trial {row['trial']}, has too few runs paired with the baseline to compare"
    lo, hi = d["ci"]
    m = d.get("comparisons", 1)
    adjusted = f"simultaneous over {m} comparisons with the baseline, adjusted " if m > 1 else ""
    text = (
        f"trial {row['trial']}, differs from baseline trial {ref} by {diff_text(d['diff'])} "
        f"{metric(summary)} ({interval_text(lo, hi, signed=True)}, {adjusted}{p_text(d['p'])}, "
        f"{d['n']} paired runs"
        + (f" on {summary['identities']} confirm identities" if summary.get("identities") else "")
        + (f", df {d['df']:.3g}" if "df" in d else "")
        + ")"
    )
    kind = decision({"rows": [row], "winner": row["trial"], "reference_baseline": ref})
    if kind == "not distinguishable":
        return f"{text}: not distinguishable from the baseline{scope(summary)}"
    return f"{text}: {kind} than the baseline{scope(summary)}"


def format_summary(summary: dict[str, Any], columns: int | None = None) -> str:
    """A table of the confirmed configs, one row each with its differences on lines below it,
    and the verdict line, all within ``columns`` (the terminal's by default): a table too wide
    shortens its roles, then leaves out its rightmost optional columns and names them."""
    from hpo.common.lines import fit, pm, width
    from hpo.common.table import Column, fitted, render

    columns = columns or width()
    rows = summary.get("rows", [])
    unit = "fold" if summary["folds"] > 1 else "run"
    seeds = summary["seeds"]
    if not summary.get("complete", True) and "complete_seeds" in summary:
        seeds = f"{summary['complete_seeds']} of {seeds}"
    compared = [r["vs_baseline"] for r in rows if r.get("vs_baseline")]
    m = compared[0].get("comparisons", 1) if compared else 0
    if on_new_ids(summary):
        lines = [
            f"confirmed on seeds {seeds}: each config trained on the study's identities for its "
            f"fixed epochs (ep), measured at the last one on {summary.get('identities', '?')} "
            "confirm identities that no study trial trained or validated on (confirm mAP)",
            "95% t intervals with seeds and identities both random; differences paired by seed "
            "and identity" + (f"; vs baseline simultaneous over {m} comparisons" if m > 1 else ""),
        ]
    else:
        lines = [
            f"confirmed on seeds {seeds} x {summary['folds']} fold(s) of the study's own "
            "validation identities; each config trained for its fixed epochs (ep) and measured "
            "at the last one",
            f"95% t intervals; differences paired by seed and fold, the {unit} as the unit"
            + (f"; vs baseline simultaneous over {m} comparisons" if m > 1 else ""),
        ]
    incumbent, reference = summary.get("incumbent"), summary.get("reference_baseline")
    marked = any(r["trial"] == incumbent for r in rows)

    def objective(r: dict[str, Any]) -> str:
        se = r.get("objective_se")
        if r.get("objective") is None:
            return "-"
        return f"{r['objective']:.3f}" + (
            f" {pm()} {se:.3f}" if se is not None and math.isfinite(se) else ""
        )

    def table(full_roles: bool) -> list[Column]:
        roles = [
            r["role"] + (f" {r['baseline']}" if full_roles and r["baseline"] else "") for r in rows
        ]
        return [
            Column(
                "trial",
                [f"#{r['trial']}" + (" *" if r["trial"] == incumbent else "") for r in rows],
                keep=True,
            ),
            Column("role", roles),
            Column("ep", [str(r.get("epochs") or "-") for r in rows], right=True),
            Column("study val mAP", [objective(r) for r in rows], right=True),
            Column(
                "confirmed [95% CI]",
                [f"{r['mean']:.3f} {interval_text(*r['ci'])}" for r in rows],
                keep=True,
            ),
            Column("n", [str(r["n"]) for r in rows], right=True, keep=True),
        ]

    full = table(full_roles=True)
    cols = full if len(fitted(full, columns, indent=2)) == len(full) else table(full_roles=False)
    shown = fitted(cols, columns, indent=2)
    head, *body = render(shown, indent=2)
    lines.append(head)
    for r, line in zip(rows, body, strict=True):
        lines.append(line)
        lines += [f"{'':9}vs baseline   {_diff(r['vs_baseline'])}"] if r.get("vs_baseline") else []
        if r.get("vs_incumbent") and incumbent != reference:  # else the same pair again
            lines.append(f"{'':9}vs incumbent  {_diff(r['vs_incumbent'])}")
    if marked:
        same = " and the reference baseline" if incumbent == reference else ""
        lines.append(f"  * the incumbent: the study's best trial{same}")
    if left := [c.header for c in cols if all(c is not x for x in shown)]:
        lines.append(f"  left out to fit {columns} columns: {', '.join(left)}")
    lines += [f"  note: {n}" for n in summary.get("notes", [])]
    if models := summary.get("models"):
        kept = ", ".join(f"trial {n} (confirm run {run})" for n, run in models)
        lines.append(
            f"  models kept (seed 1{'' if on_new_ids(summary) else ', fold 0'}, test metrics "
            f"inside): {kept}; "
            "`hpo export --checkpoint` copies the exported trial's model next to its YAML"
        )
    lines.append(verdict(summary))
    return fit("\n".join(lines), columns)


def _diff(d: dict | None) -> str:
    """``-0.050 [-0.557, +0.457] p=0.43``: a paired difference, its 95 % interval, its p."""
    if not d:
        return "-"
    return f"{diff_text(d['diff'])} {interval_text(*d['ci'], signed=True)} {p_text(d['p'])}"


def current(study: optuna.Study) -> dict[str, Any] | None:
    """The stored confirm summary, if any."""
    from hpo.records.optuna_internals import study_record

    return study_record(study, "confirm")


def store(study: optuna.Study, summary: dict[str, Any]) -> None:
    """Keep the confirm summary with the study (a study record: see hpo.records.optuna_internals)."""
    from hpo.records.optuna_internals import set_study_record

    set_study_record(study, "confirm", summary)


__all__ = [
    "Plan",
    "companion_name",
    "current",
    "decide",
    "decision",
    "estimate",
    "fixed_epochs",
    "format_summary",
    "metric",
    "on_new_ids",
    "scope",
    "is_companion",
    "load_companion",
    "partial_text",
    "open_companion",
    "plan",
    "queue",
    "store",
    "summarize",
    "verdict",
    "work",
]
