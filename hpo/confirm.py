"""``hpo confirm``: race the top trials and the baselines on fresh training seeds.

A study's best value is the maximum over epochs and over trials of noisy estimates, so it
overstates what the config will do (the winner's curse). Confirmation re-trains the top
candidates and every baseline on ``seeds`` new training seeds with the study's own split
(same ``split_seed``, every fold), pairs the runs by (seed, fold), and compares:

- each config's confirmed mean with a 95 % t interval;
- each config against the reference baseline (the best confirmed baseline) and against the
  incumbent (the study's best trial), as paired differences with a 95 % interval and p-value.

The runs are trials of a companion study ``<study>.confirm`` in the same storage: queued
once, taken by any number of workers, visible in the dashboard, and resumable (a killed run
is failed and queued again; finished runs are never repeated). The summary is the main
study's ``confirm`` record (``current``/``store``), which ``hpo show`` and ``hpo export`` read.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from handreid.stats import bootstrap_se, mean_se, paired_bootstrap_se, t_interval, two_sided_p
from hpo.recovery import _local_pid_dead, mark_interrupted, worker_id, worker_process
from hpo.slurm import dead_tasks, trial_attrs
from hpo.study import _QuietFailures, quiet_trial_failures

SUFFIX = ".confirm"
SEED_STRIDE = 1000  # confirm seed s trains with seed + 1000 * s: never a study trial's seed
LEVEL = 0.95


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


def is_companion(name: str) -> bool:
    return name.endswith(SUFFIX)


@dataclass
class Plan:
    """Which configs are confirmed and on which seeds."""

    candidates: list[int]  # trial numbers, best first
    baselines: list[int]
    incumbent: int
    seeds: list[int]  # 1-based confirm seeds

    @property
    def trials(self) -> list[int]:
        return list(dict.fromkeys(self.candidates + self.baselines))

    def pairs(self) -> list[tuple[int, int]]:
        return [(t, s) for t in self.trials for s in self.seeds]


def check_plan_args(top: int, seeds: int) -> None:
    if top < 1:
        raise UserError(f"--top={top}: must be at least 1")
    if seeds < 2:
        raise UserError(f"--seeds={seeds}: at least 2 are needed for a paired comparison")
    if seeds > 100:
        raise UserError(f"--seeds={seeds}: at most 100 (each seed re-trains every config)")


def plan(study: optuna.Study, top: int, seeds: int) -> Plan:
    check_plan_args(top, seeds)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(
            f"study {study.study_name!r} has no completed trial yet; nothing to confirm"
        )
    ranked = sorted(complete, key=lambda t: t.value, reverse=True)
    baselines = [t.number for t in complete if t.user_attrs.get("baseline")]
    return Plan(
        candidates=[t.number for t in ranked[:top]],
        baselines=baselines,
        incumbent=ranked[0].number,
        seeds=list(range(1, seeds + 1)),
    )


def open_companion(study: optuna.Study, storage) -> optuna.Study:
    """The companion study of confirm runs in ``storage`` (created on first use)."""
    return optuna.create_study(
        study_name=companion_name(study.study_name),
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(),  # every run is queued with fixed params
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


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
        if trial.user_attrs.get("baseline"):
            attrs["baseline"] = trial.user_attrs["baseline"]
        companion.enqueue_trial(trial.params, user_attrs=attrs)
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
                companion.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks)
            except Exception as exc:
                if isinstance(exc.__context__, KeyboardInterrupt):  # see hpo.study.run_until
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
        aps = t.user_attrs.get("run_identity_ap") or [{} for _ in values]
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
    lo, hi = t_interval(mean, se, len(runs.values) - 1, LEVEL)
    return {"mean": mean, "se": se, "ci": [lo, hi], "n": len(runs.values)}


def compare(a: Runs, b: Runs, folds: int) -> dict[str, Any] | None:
    """Paired difference mean(a) - mean(b) over the runs both have (same seed and fold)."""
    common = sorted(set(a.keys) & set(b.keys))
    if len(common) < 2:
        return None
    ia, ib = (dict(zip(r.keys, range(len(r.keys)), strict=True)) for r in (a, b))
    pa = Runs([a.values[ia[k]] for k in common], common, [a.identity_ap[ia[k]] for k in common])
    pb = Runs([b.values[ib[k]] for k in common], common, [b.identity_ap[ib[k]] for k in common])
    diffs = [x - y for x, y in zip(pa.values, pb.values, strict=True)]
    mean, se = mean_se(diffs, extra_var=_paired_var(pa, pb, folds))
    df = len(diffs) - 1
    lo, hi = t_interval(mean, se, df, LEVEL)
    return {"diff": mean, "se": se, "ci": [lo, hi], "p": two_sided_p(mean, se, df), "n": len(diffs)}


def summarize(study: optuna.Study, companion: optuna.Study, p: Plan) -> dict[str, Any]:
    """The confirm summary stored in the study's ``confirm`` user attribute."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    folds = _folds(by_number[p.incumbent])
    runs = collect(companion, p)
    complete = [n for n in p.trials if runs[n].values]
    rows = {}
    for n in complete:
        t = by_number[n]
        rows[n] = {
            "trial": n,
            "role": "baseline" if t.user_attrs.get("baseline") else "candidate",
            "baseline": t.user_attrs.get("baseline", ""),
            "objective": t.value,
            "objective_se": t.user_attrs.get("value_se"),
            **estimate(runs[n], folds),
            "best_epochs": runs[n].best_epochs,
        }
    base = [n for n in p.baselines if n in rows]
    reference = max(base, key=lambda n: rows[n]["mean"]) if base else None
    for n, row in rows.items():
        row["vs_baseline"] = (
            compare(runs[n], runs[reference], folds)
            if reference is not None and n != reference
            else None
        )
        row["vs_incumbent"] = (
            compare(runs[n], runs[p.incumbent], folds)
            if p.incumbent in rows and n != p.incumbent
            else None
        )
    winner = max(rows, key=lambda n: rows[n]["mean"]) if rows else None
    return {
        "seeds": p.seeds,
        "candidates": p.candidates,
        "baselines": p.baselines,
        "incumbent": p.incumbent,
        "reference_baseline": reference,
        "winner": winner,
        "rows": [rows[n] for n in sorted(rows, key=lambda n: -rows[n]["mean"])],
        "complete": all(runs[n].seeds >= set(p.seeds) for n in p.trials),
        "folds": folds,
        "level": LEVEL,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _folds(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("n_folds", 1))


def verdict(summary: dict[str, Any]) -> str:
    """One plain line: is the confirmed winner distinguishable from the baseline?"""
    rows = {r["trial"]: r for r in summary.get("rows", [])}
    winner, ref = summary.get("winner"), summary.get("reference_baseline")
    if winner is None:
        return "no confirm run has finished yet"
    if ref is None:
        return f"confirmed winner: trial {winner}; no baseline was confirmed to compare with"
    others = [r for r in rows.values() if r["trial"] != ref and r["role"] != "baseline"]
    if winner == ref:
        if not others:
            return f"the baseline (trial {ref}) is the only confirmed config"
        best = max(others, key=lambda r: r["mean"])
        lead = f"the baseline (trial {ref}) has the best confirmed mean; the best candidate, "
        return lead + _against_baseline(best, ref)
    return "the confirmed winner, " + _against_baseline(rows[winner], ref)


def _against_baseline(row: dict[str, Any], ref: int) -> str:
    d = row["vs_baseline"]
    if d is None:
        return f"trial {row['trial']}, has too few runs paired with the baseline to compare"
    lo, hi = d["ci"]
    text = (
        f"trial {row['trial']}, differs from baseline trial {ref} by {d['diff']:+.4f} val mAP "
        f"(95% CI {lo:+.4f} to {hi:+.4f}, p={d['p']:.3f}, {d['n']} paired runs)"
    )
    if lo > 0:
        return f"{text}: better than the baseline"
    if hi < 0:
        return f"{text}: worse than the baseline"
    return f"{text}: not distinguishable from the baseline"


def format_summary(summary: dict[str, Any]) -> str:
    """A table of the confirmed configs (a row and its differences on up to three lines, so
    that it fits 80 columns) and the verdict line, wrapped to the terminal."""
    from hpo.lines import fit, pm

    rows = summary.get("rows", [])
    lines = [
        f"confirmed on seeds {summary['seeds']} x {summary['folds']} fold(s); "
        f"95% t intervals; differences paired by seed and fold"
    ]
    lines.append(f"  {'trial':<6} {'role':<18} {'objective':>15}  confirmed [95% CI] n")
    for r in rows:
        role = r["role"] + (f" {r['baseline']}" if r["baseline"] else "")
        if r["trial"] == summary.get("incumbent"):
            role += " *"
        obj = f"{r['objective']:.4f}" + (
            f" {pm()} {r['objective_se']:.3f}" if r.get("objective_se") is not None else ""
        )
        conf = f"{r['mean']:.4f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] n={r['n']}"
        lines.append(f"  #{r['trial']:<5} {role[:18]:<18} {obj:>15}  {conf}")
        for name in ("vs_baseline", "vs_incumbent"):
            if r.get(name):
                lines.append(f"{'':9}{name.replace('_', ' '):<13} {_diff(r[name])}")
    lines.append("  (* the study's best trial, the incumbent)")
    if not summary.get("complete", True):
        lines.append("  some runs are missing: re-run `hpo confirm` to finish them")
    lines.append(verdict(summary))
    return fit("\n".join(lines))


def _diff(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['diff']:+.4f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p={d['p']:.2f}"


def current(study: optuna.Study) -> dict[str, Any] | None:
    """The stored confirm summary, if any."""
    from hpo.optuna_internals import study_record

    return study_record(study, "confirm")


def store(study: optuna.Study, summary: dict[str, Any]) -> None:
    """Keep the confirm summary with the study (a study record: see hpo.optuna_internals)."""
    from hpo.optuna_internals import set_study_record

    set_study_record(study, "confirm", summary)


__all__ = [
    "Plan",
    "companion_name",
    "compare",
    "current",
    "estimate",
    "format_summary",
    "is_companion",
    "open_companion",
    "plan",
    "queue",
    "store",
    "summarize",
    "verdict",
    "work",
]
