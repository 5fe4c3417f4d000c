"""``hpo confirm``: race the top trials and the baselines on fresh training seeds.

A study's best value is the maximum over epochs and over trials of noisy estimates, so it
overstates what the config will do (the winner's curse). Confirmation re-trains the top
candidates and every baseline of the search space (a baseline that was pruned or failed in the
study included) on ``seeds`` new training seeds with the study's own split (same
``split_seed``, every fold), pairs the runs by (seed, fold), and compares:

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
from hpo.records.optuna_internals import trial_record
from hpo.search.study import _QuietFailures, quiet_trial_failures

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
    return p


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
    names += [t.user_attrs["baseline"] for t in trials if t.user_attrs.get("baseline")]
    for name in dict.fromkeys(names):
        mine = [t for t in trials if t.user_attrs.get("baseline") == name]
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
    best = trial.user_attrs.get("best_epochs") or []
    if not best:
        return int(cfg.epochs if cfg else trial.user_attrs.get("best_epoch", 1))
    n = round(statistics.median(best))
    if cfg is not None:
        n = min(max(n, cfg.warmup_epochs + 1), cfg.epochs)
    return max(int(n), 1)


def _key(t: FrozenTrial) -> tuple[int, int] | None:
    attrs = t.user_attrs
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
        if t.number in gone or _local_pid_dead(t.user_attrs):
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
            "role": "baseline" if trial.user_attrs.get("baseline") else "candidate",
        }
        if number in p.epochs:
            attrs["train_epochs"] = p.epochs[number]
        if trial.user_attrs.get("baseline"):
            attrs["baseline"] = trial.user_attrs["baseline"]
        companion.enqueue_trial(p.params.get(number, trial.params), user_attrs=attrs)
        added.append((number, seed))
    return added


class _Surplus(Exception):
    pass


def work(
    companion: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    on_run: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> int:
    """Run queued confirm runs until none is left; returns how many this process ran.

    Runs go through ``study.optimize`` so database storages keep their heartbeats; a failed
    run is recorded and queued again by the next ``hpo confirm``. Ctrl-C fails the running
    one and propagates.
    """

    quiet = _QuietFailures()  # our own lines report surplus and interrupted runs
    held = HeldSignals()  # from before Optuna's ask until the run is marked as ours

    def guarded(trial: optuna.Trial) -> float:
        if "candidate" not in trial.user_attrs:
            # another worker took the last queued run between our look and our ask
            trial.set_user_attr("error", "surplus: no queued confirm run was left")
            quiet.numbers.add(trial.number)
            raise _Surplus()
        trial.set_user_attr("worker", worker_id())
        if (process := worker_process()) is not None:
            trial.set_user_attr("worker_process", process)
        for key, value in trial_attrs().items():
            trial.set_user_attr(key, value)
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
        values = t.user_attrs.get("fold_values") or [t.value]
        aps = trial_record(t, "run_identity_ap") or [{} for _ in values]
        for i, v in enumerate(values):
            runs.values.append(float(v))
            runs.keys.append((seed, i))
            runs.identity_ap.append(aps[i] if i < len(aps) else {})
        runs.best_epochs += list(t.user_attrs.get("best_epochs", []))
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


def summarize(
    study: optuna.Study, companion: optuna.Study, p: Plan, storage: str | None = None
) -> dict[str, Any]:
    """The confirm summary stored in the study's ``confirm`` user attribute."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    inc = by_number[p.incumbent]
    folds = _folds(inc)
    runs_per_seed = folds * int(inc.user_attrs.get("n_repeats", 1))
    info = {}
    for n in p.trials:
        t = by_number[n]
        info[n] = {
            "role": "baseline" if t.user_attrs.get("baseline") else "candidate",
            "baseline": t.user_attrs.get("baseline", ""),
            "state": t.state.name,
            "objective": t.value,
            "objective_se": t.user_attrs.get("value_se"),
            "epochs": p.epochs.get(n),
        }
    body = decide(
        collect(companion, p), info, p.seeds, runs_per_seed, folds, p.baselines, p.incumbent
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
        "level": LEVEL,
        "notes": p.notes,
        "command": command,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _folds(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("n_folds", 1))


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
        return lead + _against_baseline(row, ref)
    return "the confirmed winner, " + _against_baseline(row, ref)


def _against_baseline(row: dict[str, Any], ref: int) -> str:
    d = row["vs_baseline"]
    if d is None:
        return f"trial {row['trial']}, has too few runs paired with the baseline to compare"
    lo, hi = d["ci"]
    m = d.get("comparisons", 1)
    adjusted = f"simultaneous over {m} comparisons with the baseline, adjusted " if m > 1 else ""
    text = (
        f"trial {row['trial']}, differs from baseline trial {ref} by {diff_text(d['diff'])} val "
        f"mAP ({interval_text(lo, hi, signed=True)}, {adjusted}{p_text(d['p'])}, {d['n']} paired runs"
        + (f", df {d['df']}" if "df" in d else "")
        + ")"
    )
    kind = decision({"rows": [row], "winner": row["trial"], "reference_baseline": ref})
    return (
        f"{text}: {kind} than the baseline"
        if kind != "not distinguishable"
        else (f"{text}: not distinguishable from the baseline")
    )


def format_summary(summary: dict[str, Any]) -> str:
    """A table of the confirmed configs (a row and its differences on up to three lines, so
    that it fits 80 columns) and the verdict line, wrapped to the terminal."""
    from hpo.common.lines import fit, pm

    rows = summary.get("rows", [])
    unit = "fold" if summary["folds"] > 1 else "run"
    seeds = summary["seeds"]
    if not summary.get("complete", True) and "complete_seeds" in summary:
        seeds = f"{summary['complete_seeds']} of {seeds}"
    compared = [r["vs_baseline"] for r in rows if r.get("vs_baseline")]
    m = compared[0].get("comparisons", 1) if compared else 0
    lines = [
        f"confirmed on seeds {seeds} x {summary['folds']} fold(s); each config trained for "
        "its fixed epochs (ep) and measured at the last one",
        f"95% t intervals; differences paired by seed and fold, the {unit} as the unit"
        + (f"; vs baseline simultaneous over {m} comparisons" if m > 1 else ""),
    ]
    lines.append(f"  {'trial':<6} {'role':<16} {'ep':>3} {'objective':>15}  confirmed [95% CI] n")
    for r in rows:
        role = r["role"] + (f" {r['baseline']}" if r["baseline"] else "")
        if r["trial"] == summary.get("incumbent"):
            role += " *"
        obj = "-" if r.get("objective") is None else f"{r['objective']:.4f}"
        if r.get("objective_se") is not None and math.isfinite(r["objective_se"]):
            obj += f" {pm()} {r['objective_se']:.3f}"
        conf = f"{r['mean']:.4f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] n={r['n']}"
        ep = r.get("epochs") or "-"
        lines.append(f"  #{r['trial']:<5} {role[:16]:<16} {ep:>3} {obj:>15}  {conf}")
        for name in ("vs_baseline", "vs_incumbent"):
            if r.get(name):
                lines.append(f"{'':9}{name.replace('_', ' '):<13} {_diff(r[name])}")
    lines.append("  (* the study's best trial, the incumbent)")
    lines += [f"  note: {n}" for n in summary.get("notes", [])]
    if models := summary.get("models"):
        kept = ", ".join(f"trial {n} (confirm run {run})" for n, run in models)
        lines.append(
            f"  models kept (seed 1, fold 0, test metrics inside): {kept}; "
            "`hpo export --checkpoint` writes the exported trial's"
        )
    lines.append(verdict(summary))
    return fit("\n".join(lines))


def _diff(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['diff']:+.4f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p={d['p']:.2f}"


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
