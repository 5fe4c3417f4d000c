"""Does the exported config generalise? Today's objective against folds + confirm.

For each dataset and each of ``--studies`` studies (sampler seeds 0, 1, ...), two pipelines
tune the tiny-vit space at the same total budget of training epochs:

- old: one validation split (``val_folds=1``), TPE + median pruning; export the best trial;
  the reported value is that trial's value.
- new: ``val_folds=3`` with pruning between folds, then ``hpo confirm`` of the top 3 trials
  and the baseline on 2 fresh seeds (its epochs come out of the same budget); export the
  confirmed winner; the reported value is its confirmed mean (with a 95 % CI).

The split is fixed (``split_seed=0``: the same test identities everywhere). Then the exported
config of each pipeline and the space's baseline are trained on ``--fresh`` new seeds, and:

(a) test gain: paired test-mAP difference exported - baseline over those seeds (95 % CI);
(b) optimism: reported value - mean validation mAP of fresh re-runs of the exported config
    (the same quantity: one split for old, the 3-fold mean for new, on 2 of the seeds);
(c) Spearman: rank correlation between the objective and test mAP over each study's ten best
    complete trials (by objective), each re-trained once on a fresh seed with the one-split
    protocol, so validation and test do not share a model's seed luck; and, as a second
    measure, over every complete trial with the test mAP of the trial's own model(s) (fold
    models averaged), which shares that luck with the objective.

    python benchmarks/bench_generalisation.py               # synthetic + 11k sample, 3 studies
    python benchmarks/bench_generalisation.py --quick       # 1 study, tiny budget (a smoke run)

``--confirm-ids`` repeats the check of the new pipeline with confirm identities
(``confirm_fraction: 0.3``, set explicitly): on the 11k sample only by default, each study
(sampler seeds 0, 1, ...) tunes as the new pipeline does and ``hpo confirm`` races the top 3
and the baseline on the confirm identities, on the fewest seeds from 3 up that
``check_design`` accepts (its epochs come out of ``--budget``, 300 by default in this mode).
The exported winner (``hpo export``'s pick) and the baseline are then trained on ``--fresh``
new seeds the way the export's retrain line trains them (``confirm_run=true``,
``val_folds=1``, the plan's fixed epochs, no early stopping) and their paired test-mAP
difference is reported with its 95 % t interval. Writes ``generalisation_confirm_ids.json``;
the last line is ``better_verdicts=<n> better_with_positive_test_gain=<m>
mean_test_gain=<x> studies=<k>``.

    python benchmarks/bench_generalisation.py --confirm-ids --quick   # a smoke run

Writes ``generalisation.json`` under ``--out``. The last line is
``optimism_new=<x> optimism_old=<y> test_gain_new=<z> test_gain_old=<w> spearman_new=<a>
spearman_old=<b>`` (means over studies and datasets).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "11k-mini-100px"
SYNTHETIC = dict(ids=120, per_id=3, size=64, seed=0)
FRESH_OFFSET = 5000  # fresh seeds: never a study's or a confirm's seed
FOLDS, TOP, CONFIRM_SEEDS = 3, 3, 2


def base_space(data: str, opts: dict, folds: int, confirm_fraction: float = 0.0):
    """The tiny-vit space with the benchmark's base. ``confirm_fraction`` is 0 for the old and
    new pipelines, as when they were written and measured (confirm on the study's own
    validation identities; the shipped spaces now set 0.3, on which a confirm of 2 seeds
    would be refused for too few df); ``--confirm-ids`` sets it."""
    from hpo.records.space import load_space

    return load_space("tiny-vit").with_base(
        data_root=data,
        aspects=["all"],
        split="random",
        split_seed=0,
        epochs=opts["epochs"],
        early_stop_patience=2,
        num_splits=opts["num_splits"],
        val_folds=folds,
        confirm_fraction=confirm_fraction,
    )


class _TestObjective:
    """The objective, plus the test mAP of every run's model, kept per trial for (c)."""

    def __init__(self, space):
        from handreid.engine import fit, test_report
        from hpo.search.objective import Objective

        self.tests: list[float] = []

        def fit_and_test(cfg, **kw):
            result = fit(cfg, **kw)
            if result.status != "diverged":
                self.tests.append(test_report(result.model, result.data, cfg, "cpu")["mAP"])
            return result

        self.inner = Objective(space, device="cpu", fit_fn=fit_and_test)

    def __call__(self, trial):
        self.tests = []
        try:
            return self.inner(trial)
        finally:
            trial.set_user_attr("bench_test_mAP", statistics.fmean(self.tests or [math.nan]))


def _quiet_process() -> None:
    """A worker process of the pool: one thread, no warnings or info lines."""
    import optuna
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("handreid").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def spent(study) -> int:
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


def tune(space, seed: int, budget: int, name: str, objective=None):
    """Trials until ``budget`` epochs are spent; returns the study. The objective defaults to
    ``_TestObjective`` (the objective plus each trial's own test mAP)."""
    import optuna

    from hpo.search.study import create_or_resume, make_pruner, make_sampler, run_until

    cfg = space.config({})
    study = create_or_resume(
        optuna.storages.InMemoryStorage(),
        name,
        space,
        sampler=make_sampler("tpe", seed),
        pruner=make_pruner("median", cfg.epochs, cfg.warmup_epochs, cfg.val_folds),
        context={},
    )
    objective = objective or _TestObjective(space)
    while spent(study) < budget:
        run_until(study, objective, len([t for t in study.trials if t.state.is_finished()]) + 1)
    return study


def confirm(study, space) -> tuple[dict, int]:
    """``hpo confirm`` in process; returns its summary and the epochs it trained."""
    from hpo.decide import confirm as cf
    from hpo.search.objective import Objective

    p = cf.plan(study, TOP, CONFIRM_SEEDS)
    companion = cf.open_companion(study, study._storage)
    cf.queue(study, companion, p)
    objective = Objective(space, device="cpu", prune_between_runs=False, keep_identity_ap=True)
    cf.work(companion, objective)
    return cf.summarize(study, companion, p), spent(companion)


def fresh_runs(space, params: dict, seeds: list[int], folds: int) -> list[dict]:
    """Train ``params`` on fresh seeds; per seed the val mAP (fold mean) and test mAP."""
    from handreid.engine import fit, test_report

    out = []
    for seed in seeds:
        vals, tests = [], []
        for k in range(folds):
            cfg = space.config(params).replace(val_folds=folds, val_fold=k, seed=seed)
            result = fit(cfg, device="cpu")
            vals.append(result.best_map)
            tests.append(test_report(result.model, result.data, cfg, "cpu")["mAP"])
        out.append({"seed": seed, "val": statistics.fmean(vals), "test": tests[0]})
    return out


def complete_trials(study) -> list[dict]:
    from optuna.trial import TrialState

    return [
        {
            "number": t.number,
            "value": t.value,
            "params": t.params,
            "own_test": t.user_attrs.get("bench_test_mAP", math.nan),
        }
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
    ]


def rank_corr(pairs: list[tuple[float, float]]) -> float:
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return math.nan
    return float(spearmanr(*zip(*pairs, strict=True)).statistic)


def spearman(trials: list[dict]) -> float:
    """Objective vs the trial's own model(s)' test mAP, every complete trial."""
    return rank_corr([(t["value"], t["own_test"]) for t in trials])


def spearman_fresh(space, trials: list[dict], seed: int, top: int = 10) -> tuple[float, list]:
    """Objective vs test mAP of a fresh one-split re-run, over the ``top`` best trials."""
    best = sorted(trials, key=lambda t: -t["value"])[:top]
    tests = [fresh_runs(space, t["params"], [seed], 1)[0]["test"] for t in best]
    pairs = [(t["value"], x) for t, x in zip(best, tests, strict=True)]
    return rank_corr(pairs), pairs


def spread(trials: list[dict], n: int) -> list[dict]:
    """``n`` complete trials evenly spaced over the objective's range (all when fewer): the
    ranking is checked over good and poor configs alike, not only among near-equal top ones."""
    ranked = sorted(trials, key=lambda t: -t["value"])
    if len(ranked) <= n:
        return ranked
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


def rescore_study(result: dict, data: str, opts: dict, n: int, seeds: int) -> dict:
    """(c) again with less test noise: ``n`` complete trials across the objective's range of
    each pipeline, each re-trained on ``seeds`` fresh seeds (one-split protocol, the split
    fixed) and its mean test mAP set against the objective."""

    _quiet_process()
    space = base_space(data, opts, 1)
    fresh = [FRESH_OFFSET + 100 * result["seed"] + 60 + i for i in range(seeds)]
    out = {}
    for name in ("old", "new"):
        chosen = spread(result[name]["complete"], n)
        tests = [
            statistics.fmean(r["test"] for r in fresh_runs(space, t["params"], fresh, 1))
            for t in chosen
        ]
        pairs = [(t["value"], x) for t, x in zip(chosen, tests, strict=True)]
        out[name] = {"spearman_spread": rank_corr(pairs), "spread_pairs": pairs}
    return out


def rescore(path: Path, roots: dict, n: int, seeds: int, processes: int) -> list[dict]:
    """Add the spread measure of (c) to every study of a saved run, in place."""
    saved = json.loads(path.read_text())
    results, meta = saved["results"], saved["meta"]
    opts = {k: meta[k] for k in ("budget", "epochs", "fresh", "num_splits")}
    jobs = [(r, roots[r["dataset"]], opts, n, seeds) for r in results]
    with ProcessPoolExecutor(processes) as pool:
        extra = list(pool.map(rescore_study, *zip(*jobs, strict=True)))
    for r, e in zip(results, extra, strict=True):
        for name in ("old", "new"):
            r[name].update(e[name])
    meta["spread"] = {"trials": n, "seeds": seeds}
    path.write_text(json.dumps(saved, indent=1))
    return results


def paired_gain(exported: list[dict], baseline: list[dict]) -> dict:
    from handreid.stats import mean_se, t_interval

    diffs = [a["test"] - b["test"] for a, b in zip(exported, baseline, strict=True)]
    mean, se = mean_se(diffs)
    lo, hi = t_interval(mean, se, len(diffs) - 1)
    return {"diff": mean, "ci": [lo, hi], "diffs": diffs}


def one_study(dataset: str, data: str, seed: int, opts: dict) -> dict:
    """Both pipelines for one sampler seed, and their fresh evaluations."""

    _quiet_process()
    start = time.perf_counter()
    fresh = [FRESH_OFFSET + 100 * seed + i for i in range(opts["fresh"])]
    old_space, new_space = base_space(data, opts, 1), base_space(data, opts, FOLDS)
    baseline = {k: v for k, v in old_space.baselines[0].items() if k != "name"}

    old = tune(old_space, seed, opts["budget"], f"old-{seed}")
    old_trials = complete_trials(old)
    old_best = old.best_trial
    old_runs = fresh_runs(old_space, old_best.params, fresh, 1)

    confirm_cost = (TOP + 1) * CONFIRM_SEEDS * FOLDS * opts["epochs"]  # upper bound, no pruning
    new = tune(new_space, seed, max(opts["budget"] - confirm_cost, 0), f"new-{seed}")
    summary, confirm_epochs = confirm(new, new_space)
    tune_new = spent(new)
    new_trials = complete_trials(new)
    check = FRESH_OFFSET + 100 * seed + 50  # one fresh seed for every re-run of (c)
    old_fresh_rho, old_fresh_pairs = spearman_fresh(old_space, old_trials, check)
    new_fresh_rho, new_fresh_pairs = spearman_fresh(old_space, new_trials, check)
    winner = next(t for t in new.get_trials(deepcopy=False) if t.number == summary["winner"])
    row = next(r for r in summary["rows"] if r["trial"] == winner.number)
    # test gains compare like with like: exported and baseline trained on the one-split protocol
    new_test = fresh_runs(old_space, winner.params, fresh, 1)
    new_val = fresh_runs(new_space, winner.params, fresh[:2], FOLDS)  # what new reported
    base_runs = fresh_runs(old_space, baseline, fresh, 1)
    return {
        "dataset": dataset,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "old": {
            "epochs": spent(old),
            "trials": len(old.trials),
            "exported": old_best.number,
            "params": old_best.params,
            "reported": old_best.value,
            "reported_se": old_best.user_attrs.get("value_se"),
            "fresh": old_runs,
            "optimism": old_best.value - statistics.fmean(r["val"] for r in old_runs),
            "test_gain": paired_gain(old_runs, base_runs),
            "spearman": old_fresh_rho,
            "spearman_fresh_pairs": old_fresh_pairs,
            "spearman_own_model": spearman(old_trials),
            "complete": old_trials,
        },
        "new": {
            "epochs": tune_new + confirm_epochs,
            "confirm_epochs": confirm_epochs,
            "trials": len(new.trials),
            "exported": winner.number,
            "params": winner.params,
            "objective": winner.value,
            "reported": row["mean"],
            "reported_ci": row["ci"],
            "verdict_vs_baseline": row["vs_baseline"],
            "fresh": new_val,
            "fresh_test": new_test,
            "optimism": row["mean"] - statistics.fmean(r["val"] for r in new_val),
            "test_gain": paired_gain(new_test, base_runs),
            "spearman": new_fresh_rho,
            "spearman_fresh_pairs": new_fresh_pairs,
            "spearman_own_model": spearman(new_trials),
            "complete": new_trials,
        },
        "baseline_fresh": base_runs,
    }


# ---- --confirm-ids: the new pipeline with confirm identities ----------------------------------
CONFIRM_FRACTION = 0.3  # the shipped spaces' value, set explicitly
CONFIRM_SEEDS_FROM = 3  # confirm seeds: the fewest from 3 up that check_design accepts


def confirm_seeds_needed(configs: int) -> int:
    """The fewest confirm seeds (from ``CONFIRM_SEEDS_FROM``) whose design on confirm
    identities has ``MIN_DF`` df for ``configs`` configs: for the epoch budget up front."""
    from hpo.decide.confirm import MIN_DF, design_df

    return next(
        s
        for s in range(CONFIRM_SEEDS_FROM, 1000)
        if design_df(configs, s, 1, 1, new_ids=True) >= MIN_DF
    )


def confirm_on_ids(study, space) -> tuple[dict, int, object, list[str]]:
    """``hpo confirm --top 3`` in process on the fewest seeds from 3 up that ``plan`` (its
    ``check_design``) accepts; returns the summary (also stored with the study, as ``hpo
    confirm`` does, so ``hpo export``'s pick reads it), the epochs it trained, the plan and the
    refusals met on the way."""
    from handreid.errors import UserError
    from hpo.decide import confirm as cf
    from hpo.search.objective import Objective

    refused = []
    for seeds in range(CONFIRM_SEEDS_FROM, 1000):
        try:
            p = cf.plan(study, TOP, seeds)
            break
        except UserError as exc:
            if "df" not in str(exc):
                raise
            refused.append(str(exc))
    if not p.new_ids:
        raise RuntimeError("the study has no confirm identities (confirm_fraction is 0)")
    companion = cf.open_companion(study, study._storage)
    cf.queue(study, companion, p)
    objective = Objective(space, device="cpu", prune_between_runs=False, keep_identity_ap=True)
    cf.work(companion, objective)
    summary = cf.summarize(study, companion, p)
    cf.store(study, summary)
    return summary, spent(companion), p, refused


def retrain_runs(space, params: dict, epochs: int, seeds: list[int]) -> list[dict]:
    """Train ``params`` on each seed the way the export's retrain line does (``confirm_run``
    true, ``val_folds`` 1, ``epochs`` fixed, no early stopping: every training-side identity
    but the confirm ones) and test the model ``fit`` returns, as ``handreid train`` does."""
    from handreid.engine import fit, test_report

    out = []
    for seed in seeds:
        cfg = space.config(params).replace(
            confirm_run=True,
            val_folds=1,
            val_fold=0,
            val_repeats=1,
            epochs=int(epochs),
            early_stop_patience=0,
            seed=seed,
        )
        result = fit(cfg, device="cpu")
        diverged = result.status == "diverged"
        test = math.nan if diverged else test_report(result.model, result.data, cfg, "cpu")["mAP"]
        out.append(
            {
                "seed": seed,
                "status": result.status,
                "epochs": result.epochs_run,
                "best_epoch": result.best_epoch + 1,
                "confirm_best": result.best_map,
                "confirm_last": result.history[-1].get("mAP", math.nan),
                "test": test,
            }
        )
    return out


def one_confirm_ids_study(dataset: str, data: str, seed: int, opts: dict) -> dict:
    """One study of the new pipeline with confirm identities, its confirm, and the fresh
    retrains of the exported winner and the baseline."""

    from hpo.decide import confirm as cf
    from hpo.search.objective import Objective
    from hpo.views.export import pick_trial

    _quiet_process()
    start = time.perf_counter()
    # fresh seeds: 5000 + 100 x study + i; study runs use 0-2, confirm runs 1000-9000 (step 1000)
    fresh = [FRESH_OFFSET + 100 * seed + i for i in range(opts["fresh"])]
    space = base_space(data, opts, FOLDS, CONFIRM_FRACTION)
    if space.config({}).confirm_fraction != CONFIRM_FRACTION:
        raise RuntimeError(f"confirm_fraction is {space.config({}).confirm_fraction}")
    configs = TOP + 1  # top 3 + the baseline (3 when the baseline is among the top 3)
    cost = configs * confirm_seeds_needed(configs) * opts["epochs"]  # upper bound, no pruning
    study = tune(
        space,
        seed,
        max(opts["budget"] - cost, 0),
        f"confirm-ids-{seed}",
        objective=Objective(space, device="cpu"),
    )
    tune_epochs = spent(study)
    summary, confirm_epochs, p, refused = confirm_on_ids(study, space)
    confirmed = time.perf_counter() - start
    ref = summary["reference_baseline"]
    exported = pick_trial(study)  # what `hpo export` exports: the confirmed winner
    compared = cf._compared_row(summary)  # the row the verdict is about
    d = compared["vs_baseline"] if compared else None

    def trained(number: int) -> list[dict]:
        return retrain_runs(space, p.params[number], p.epochs[number], fresh)

    base_runs = trained(ref)
    exp_runs = base_runs if exported.number == ref else trained(exported.number)
    out_compared = None
    if compared is not None and compared["trial"] != exported.number:
        # the baseline won: the verdict is about the best candidate, test that one too
        comp_runs = trained(compared["trial"])
        out_compared = {
            "trial": compared["trial"],
            "epochs": p.epochs[compared["trial"]],
            "fresh": comp_runs,
            "test_gain": paired_gain(comp_runs, base_runs),
        }
    return {
        "dataset": dataset,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "seconds_study_and_confirm": confirmed,
        "trials": len(study.trials),
        "complete_trials": len(complete_trials(study)),
        "epochs": tune_epochs + confirm_epochs,
        "tune_epochs": tune_epochs,
        "confirm_epochs": confirm_epochs,
        "confirm_fraction": space.config({}).confirm_fraction,
        "confirm_seeds": p.seeds,
        "confirm_refused": refused,
        "design_df": cf.design_df(len(p.trials), len(p.seeds), 1, 1, new_ids=True),
        "measured_on": summary["measured_on"],
        "identities": summary.get("identities"),
        "reference_baseline": ref,
        "winner": summary["winner"],
        "exported": exported.number,
        "exported_is_baseline": exported.number == ref,
        "exported_params": p.params.get(exported.number, exported.params),
        "exported_epochs": p.epochs.get(exported.number),
        "baseline_epochs": p.epochs[ref],
        "compared_trial": compared["trial"] if compared else None,
        "vs_baseline": d,
        "verdict": cf.decision(summary),
        "verdict_line": cf.verdict(summary),
        "summary": summary,
        "fresh_seeds": fresh,
        "exported_fresh": exp_runs,
        "baseline_fresh": base_runs,
        "test_gain": paired_gain(exp_runs, base_runs),
        "compared": out_compared,
    }


def report_confirm_ids(results: list[dict]) -> str:
    lines = [
        "| study | trials | epochs | confirm ids | verdict | confirm diff [95% CI] | df "
        "| test gain [95% CI] | seconds |",
        "|---:|---:|---:|---:|---|---|---:|---|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["dataset"], r["seed"])):
        d, g = r["vs_baseline"], r["test_gain"]
        verdict = r["verdict"] or "-"
        if r["exported_is_baseline"]:
            verdict += " (baseline won; candidate #{})".format(r["compared_trial"])
        diff = f"{d['diff']:+.4f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d else "-"
        df = f"{d['df']:.1f}" if d else "-"
        gain = f"{g['diff']:+.4f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"
        if r.get("compared"):
            c = r["compared"]["test_gain"]
            gain += f" (candidate: {c['diff']:+.4f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}])"
        lines.append(
            f"| {r['dataset']} {r['seed']} | {r['trials']} | {r['epochs']} "
            f"({r['confirm_epochs']} confirm) | {r['identities']} | {verdict} | {diff} | {df} "
            f"| {gain} | {r['seconds']:.0f} |"
        )
    better = [r for r in results if r["verdict"] == "better"]
    positive = [r for r in better if r["test_gain"]["diff"] > 0]
    lines.append("")
    lines.append(
        f"better_verdicts={len(better)} better_with_positive_test_gain={len(positive)} "
        f"mean_test_gain={mean(r['test_gain']['diff'] for r in results):.4f} "
        f"studies={len(results)}"
    )
    return "\n".join(lines)


def mean(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def report(results: list[dict]) -> str:
    lines = [
        "| dataset | study | pipeline | epochs | trials | reported | fresh val | optimism "
        "| test gain vs baseline [95% CI] | Spearman (top 10, fresh) | Spearman (all, own model) "
        "| Spearman (10 across the range, 3 fresh seeds) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["dataset"], r["seed"])):
        for name in ("old", "new"):
            p = r[name]
            fresh_val = mean(x["val"] for x in p["fresh"])
            rep = f"{p['reported']:.4f}"
            if name == "new":
                rep += f" [{p['reported_ci'][0]:.3f}, {p['reported_ci'][1]:.3f}]"
            g = p["test_gain"]
            lines.append(
                f"| {r['dataset']} | {r['seed']} | {name} | {p['epochs']} | {p['trials']} | {rep} "
                f"| {fresh_val:.4f} | {p['optimism']:+.4f} | {g['diff']:+.4f} "
                f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] | {p['spearman']:.2f} "
                f"| {p.get('spearman_own_model', math.nan):.2f} "
                f"| {p.get('spearman_spread', math.nan):.2f} |"
            )
    within = [
        r["new"]["reported_ci"][0]
        <= mean(x["val"] for x in r["new"]["fresh"])
        <= r["new"]["reported_ci"][1]
        for r in results
    ]
    lines.append("")
    lines.append(
        f"new pipeline: fresh re-runs inside the reported 95% CI in {sum(within)} of "
        f"{len(within)} studies"
    )
    agg = {
        f"{key}_{name}": mean(
            r[name][key] if key != "test_gain" else r[name]["test_gain"]["diff"] for r in results
        )
        for key in ("optimism", "test_gain", "spearman")
        for name in ("new", "old")
    }
    if all("spearman_spread" in r["new"] for r in results):
        for name in ("new", "old"):
            agg[f"spearman_{name}"] = mean(r[name]["spearman_spread"] for r in results)
        lines.append(
            "spearman_* below: 10 complete trials across each study's range, mean test mAP of "
            "3 fresh seeds"
        )
    lines.append(" ".join(f"{k}={v:.4f}" for k, v in agg.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=3)
    p.add_argument(
        "--budget",
        type=int,
        help="training epochs per pipeline (default 240; 300 with --confirm-ids, confirm included)",
    )
    p.add_argument("--epochs", type=int, default=5, help="epochs per training run")
    p.add_argument("--fresh", type=int, default=3, help="fresh seeds per evaluated config")
    p.add_argument("--num-splits", type=int, default=3)
    p.add_argument("--datasets", help="default synthetic,sample; sample with --confirm-ids")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1 study, budget 60, 2 epochs, 2 seeds")
    p.add_argument(
        "--confirm-ids",
        action="store_true",
        help="the new pipeline with confirm identities (confirm_fraction 0.3): confirm verdict "
        "vs the test gain of the exported winner; writes generalisation_confirm_ids.json",
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--from-json", help="re-print the tables of a saved run")
    p.add_argument(
        "--rescore",
        type=int,
        metavar="N",
        help="with --from-json: re-train N trials across each study's range on 3 fresh seeds "
        "and add that Spearman to the file",
    )
    args = p.parse_args(argv)
    if args.from_json and not args.rescore:
        show = report_confirm_ids if args.confirm_ids else report
        print(show(json.loads(Path(args.from_json).read_text())["results"]))
        return 0
    if args.budget is None:
        args.budget = 300 if args.confirm_ids else 240
    if args.datasets is None:
        args.datasets = "sample" if args.confirm_ids else "synthetic,sample"
    if args.quick:
        args.studies, args.budget, args.epochs, args.fresh = 1, 60, 2, 2
    from hpo.search.study import synthetic_data

    roots = {}
    for name in args.datasets.split(","):
        if name == "synthetic":
            roots[name] = str(synthetic_data(REPO / "studies", **SYNTHETIC))
        elif name == "sample" and (SAMPLE / "HandInfo.csv").is_file():
            roots[name] = str(SAMPLE)
    if args.from_json:
        start = time.time()
        results = rescore(Path(args.from_json), roots, args.rescore, 3, args.processes)
        print(f"rescored {len(results)} studies in {time.time() - start:.0f} s")
        print(report(results))
        return 0
    opts = {
        "budget": args.budget,
        "epochs": args.epochs,
        "fresh": args.fresh,
        "num_splits": args.num_splits,
    }
    jobs = [
        (name, root, seed, opts) for name, root in roots.items() for seed in range(args.studies)
    ]
    if not jobs:
        p.error(f"no dataset of {args.datasets!r} is available")
    start = time.time()
    study_fn = one_confirm_ids_study if args.confirm_ids else one_study
    with ProcessPoolExecutor(args.processes) as pool:
        results = list(pool.map(study_fn, *zip(*jobs, strict=True)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**opts, "studies": args.studies, "seconds": time.time() - start}
    if args.confirm_ids:
        import optuna
        import torch

        meta.update(
            datasets=args.datasets,
            processes=args.processes,
            confirm_fraction=CONFIRM_FRACTION,
            folds=FOLDS,
            top=TOP,
            torch=torch.__version__,
            optuna=optuna.__version__,
            date=time.strftime("%Y-%m-%d %H:%M:%S"),
            argv=sys.argv[1:] if argv is None else argv,
        )
        name = "generalisation_confirm_ids" + ("_quick" if args.quick else "") + ".json"
        show = report_confirm_ids
    else:
        name = "generalisation_quick.json" if args.quick else "generalisation.json"
        show = report
    (out / name).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"{len(results)} studies in {time.time() - start:.0f} s; wrote {out / name}")
    print(show(results))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
