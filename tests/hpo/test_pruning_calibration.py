"""Error rates of the between-run pruning rule on seeded simulated studies (also as a study
runs and under per-config noise and outlier runs), the per-epoch median pruner's comparisons by
run and epoch, a training seed per run, and baselines that no pruner may stop."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from scipy import stats

from handreid.engine import FitResult
from hpo.common.attrs import attrs_of
from hpo.records.space import parse_space
from hpo.search.objective import Objective, run_configs
from hpo.search.pruning import PruningCallback, prune_reason, run_reference
from hpo.search.study import make_pruner

SD = 0.03  # run noise of the 11k sample (benchmarks/decisions_pruning.py)
REPS = 800  # a rate of 0.05 has SD 0.008 here, one of 0.15 SD 0.013: 0.08 tells them apart


def simulated_rates(folds: int, priors: int, shift: float, seed: int) -> tuple[float, float]:
    """(new rule, old rule) share of studies where a trial ``shift`` from the best's true mean
    is pruned; n equal prior trials, a shared fold effect and run noise."""
    rng = np.random.default_rng([seed, folds, priors])
    new = old = 0
    for _ in range(REPS):
        fold = rng.normal(0, 0.06, size=folds)
        x = 0.8 + fold + rng.normal(0, SD, size=(priors, folds))
        trials = [
            create_trial(
                state=TrialState.COMPLETE,
                value=float(row.mean()),
                user_attrs={"fold_values": [round(float(v), 6) for v in row]},
            )
            for row in x
        ]
        ref = run_reference(trials, folds)
        best = x[np.argmax(x.mean(axis=1))]
        y = 0.8 + shift + fold + rng.normal(0, SD, size=folds)
        new += any(prune_reason(list(y[:m]), ref, folds) for m in range(1, folds))
        old += any(
            stats.ttest_rel(y[:m], best[:m], alternative="less").pvalue < 0.05
            for m in range(2, folds)
        )
    return new / REPS, old / REPS


@pytest.mark.parametrize("folds,priors", [(3, 10), (3, 40), (5, 10), (5, 40)])
def test_a_trial_as_good_as_the_best_is_pruned_at_most_5_percent_of_the_time(folds, priors):
    new, old = simulated_rates(folds, priors, 0.0, seed=1)
    assert new <= 0.08
    if priors == 40:  # the same studies tell the old rule's excess apart
        assert old >= 0.11


def test_a_clearly_worse_trial_is_pruned_by_its_second_run():
    """A run counts at most 2 run SDs below its run's mean, so one run far down (a trial 4 SDs
    worse, or an equal trial whose run collapsed) seldom decides alone; two such runs do."""
    rng = np.random.default_rng(5)
    x = 0.8 + rng.normal(0, SD, size=(40, 3))
    ref = run_reference(
        [
            create_trial(
                state=TrialState.COMPLETE,
                value=float(r.mean()),
                user_attrs={"fold_values": list(r)},
            )
            for r in x
        ],
        3,
    )
    assert ref.trials == 40 and ref.top == 14 and ref.sigma == pytest.approx(SD, rel=0.2)
    worse = 0.8 - 4 * SD + rng.normal(0, SD, size=(200, 2))
    reasons = [prune_reason(list(y), ref, 3) for y in worse]
    assert np.mean([r is not None for r in reasons]) >= 0.9
    assert next(r for r in reasons if r).startswith("pruned after run 2: ")
    new, _ = simulated_rates(3, 10, -4 * SD, seed=2)
    assert new >= 0.9


def test_with_fewer_than_two_complete_trials_nothing_is_pruned():
    one = [
        create_trial(state=TrialState.COMPLETE, value=0.8, user_attrs={"fold_values": [0.8] * 3})
    ]
    assert run_reference(one, 3) is None
    assert prune_reason([0.1, 0.1], None, 3) is None


# --- as a study runs, and under noise the rule was not built on ------------------------------


def equal_runs(rng, count: int, runs: int, sdlog: float = 0.0, collapse: float = 0.0):
    """Run values of equal trials (true mean 0.8; fold effects cancel in the rule, so none):
    run noise SD ``SD``, scaled per config by exp(sdlog N(0, 1)); a share ``collapse`` of the
    runs 0.15 (5 SDs) lower."""
    scale = np.exp(rng.normal(0, sdlog, size=(count, 1)))
    x = 0.8 + scale * rng.normal(0, SD, size=(count, runs))
    return x - 0.15 * (rng.random((count, runs)) < collapse)


def complete(row) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.COMPLETE,
        value=float(np.mean(row)),
        user_attrs={"fold_values": [round(float(v), 6) for v in row]},
    )


def stopped(row, ref, runs: int) -> bool:
    return any(prune_reason(list(row[:m]), ref, runs) for m in range(1, runs))


def test_in_a_study_that_runs_with_per_config_noise_equal_trials_are_seldom_pruned():
    """Equal trials one after another, each judged against the trials complete so far (a
    pruned one never joins them), every config with its own noise SD (lognormal, sdlog 0.5):
    the rule calibrated on complete trials of one noise SD pruned about 30 % of them here."""
    rng = np.random.default_rng(7)
    pruned = judged = 0
    for _ in range(120):
        done: list = []
        for row in equal_runs(rng, 40, 3, sdlog=0.5):
            ref = run_reference(done, 3)
            judged += ref is not None
            if stopped(row, ref, 3):
                pruned += 1
            else:
                done.append(complete(row))
    # 2.5 binomial SEs, and 0.01 for the clustering of a study's trials
    assert pruned / judged <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / judged) + 0.01, pruned / judged


def test_per_config_noise_and_collapsed_runs_do_not_make_equal_trials_pruned():
    """40 equal complete trials, noise SD per config (sdlog 0.5) and 5 % of runs 0.15 lower:
    a trial as good as them is pruned at most 5 % of the time (the best trial alone as the
    reference and no floor on a run pruned 10-12 %)."""
    rng = np.random.default_rng(8)
    reps, hits = 700, 0
    for _ in range(reps):
        x = equal_runs(rng, 41, 3, sdlog=0.5, collapse=0.05)
        hits += stopped(x[40], run_reference([complete(r) for r in x[:40]], 3), 3)
    assert hits / reps <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / reps), hits / reps


# --- a training seed per run -------------------------------------------------------------------


def seeds_space(**base):
    return parse_space(
        {
            "base": {"model": "tiny-vit", "pretrained": "none", **base},
            "space": {"lr_modules": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
        }
    )


def test_each_run_of_a_trial_has_a_seed_of_its_own_and_every_trial_the_same_ones():
    space = seeds_space(val_folds=3, val_repeats=2, seed=7)
    runs = [run_configs(space.config({"lr_modules": lr})) for lr in (1e-3, 5e-2)]
    pairs = [[(c.val_fold, c.seed) for c in r] for r in runs]
    assert pairs[0] == pairs[1]  # runs pair across trials
    assert [f for f, _ in pairs[0]] == [0, 1, 2, 0, 1, 2]
    assert sorted(s for _, s in pairs[0]) == list(range(7, 13))  # a seed per (repeat, fold)


def test_confirm_seeds_never_meet_the_studys_or_one_anothers():
    from hpo.decide.confirm import SEED_STRIDE

    cfg = seeds_space(val_folds=5, val_repeats=2).config({"lr_modules": 1e-3})
    seeds = [{c.seed for c in run_configs(cfg, SEED_STRIDE * s)} for s in range(4)]
    assert all(len(x) == 10 for x in seeds)
    assert len(set().union(*seeds)) == 40


def test_the_objective_trains_every_trial_on_the_same_seed_per_run():
    space = parse_space(SPACE)
    calls: list[tuple[int, int, int]] = []

    def fit(cfg, **kw):
        calls.append((round(cfg.lr_modules * 1e6), cfg.val_fold, cfg.seed))
        return stub_fit(cfg, **kw)

    study = optuna.create_study(direction="maximize")
    for lr in (1e-3, 2e-3):
        study.enqueue_trial({"lr_modules": lr})
    objective = Objective(space, data=StubPool(), fit_fn=fit, prune_between_runs=False)
    study.optimize(objective, n_trials=2, catch=())
    first = [(f, s) for lr, f, s in calls if lr == 1000]
    assert first == [(f, s) for lr, f, s in calls if lr == 2000]
    assert len({s for _, s in first}) == 3


# --- per epoch: the median of the same run and epoch ------------------------------------------

EPOCHS = 8
RAMP = np.linspace(-0.08, 0.0, EPOCHS)  # every run rises by 0.08 to its value


def curves(*levels: float) -> list[list[float]]:
    """One rising curve per run, ending at each level (6 decimals, as trials report them)."""
    return [np.round(level + RAMP, 6).tolist() for level in levels]


def reported(runs: list[list[float]]) -> dict[int, float]:
    """As ``Objective`` reports them: run k's epoch e at step k * EPOCHS + e."""
    return {k * EPOCHS + e + 1: v for k, vals in enumerate(runs) for e, v in enumerate(vals)}


def median_study(others, pruner=None, pruned=()) -> optuna.Study:
    """A study holding complete trials with these runs, and pruned ones that stopped at the
    end of the given partial runs."""
    pruner = pruner or make_pruner("median", EPOCHS, warmup_epochs=1, runs=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for runs in others:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=float(np.mean([max(r) for r in runs])),
                intermediate_values=reported(runs),
            )
        )
    for runs in pruned:
        study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values=reported(runs)))
    return study


def stops_at(study: optuna.Study, runs: list[list[float]]) -> tuple[int, int] | None:
    """(run, epoch) where the study's pruner stops a trial with these curves, asked as
    ``Objective`` asks it (after the warm-up epoch of each run), or None."""
    trial = study.ask()
    for k, values in enumerate(runs):
        callback = PruningCallback(trial, offset=k * EPOCHS, warmup=1 if k else 0)
        for e, v in enumerate(values):
            try:
                callback(e, {"mAP": v})
            except optuna.TrialPruned:
                return k, e + 1
    return None


def today(pruner_epochs: int = EPOCHS):
    """The median pruner before runs were compared on their own: Optuna's."""
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


OTHERS = [curves(0.60 + d, 0.80 + d) for d in (-0.01, 0.0, 0.01, 0.0, 0.005)]  # fold 2 easier


def test_a_trial_as_good_on_the_second_fold_is_kept_after_a_better_first_fold():
    """Fold 2 is the easier fold. The trial's fold-1 run was better than everyone's; on fold 2
    it runs 0.005 below the others, within their spread. Compared run by run it is ahead;
    Optuna's pruner took its best over both folds (a fold-1 value, below every fold-2 one)
    against the others' fold-2 values and stopped it."""
    trial = curves(0.65, 0.795)
    assert stops_at(median_study(OTHERS), trial) is None
    assert stops_at(median_study(OTHERS, today()), trial) is not None  # what it replaces


def test_a_poor_second_fold_is_not_hidden_by_an_easier_first_fold():
    """Fold 1 is the easier fold: a trial as good there and 0.1 worse on fold 2 is stopped
    during fold 2; Optuna's pruner compared its fold-1 best with the fold-2 values and never
    stopped it."""
    others = [curves(0.80 + d, 0.60 + d) for d in (-0.01, 0.0, 0.01, 0.0, 0.005)]
    trial = curves(0.80, 0.50)
    at = stops_at(median_study(others), trial)
    assert at is not None and at[0] == 1
    assert stops_at(median_study(others, today()), trial) is None


def test_trials_pruned_earlier_in_the_run_still_count_at_its_later_epochs():
    """Four trials were stopped at epoch 3, below the three complete ones. A trial between the
    two groups is kept: compared with the complete trials alone (the survivors of epoch 3)
    it would be below the median at every later epoch."""
    others = [curves(0.80 + d) for d in (-0.005, 0.0, 0.005)]
    pruned = [[c[0][:3]] for c in (curves(0.70 + d) for d in (-0.01, 0.0, 0.01, 0.02))]
    trial = curves(0.78)
    assert stops_at(median_study(others, pruned=pruned), trial) is None
    assert stops_at(median_study(others, today(), pruned=pruned), trial) is not None
    assert stops_at(median_study(others, pruned=pruned), curves(0.70)) is not None


# --- baselines -------------------------------------------------------------------------------

SPACE = {
    "base": {
        "model": "tiny-vit",
        "pretrained": "none",
        "image_size": [64, 64],
        "batch_size": 16,
        "epochs": 3,
        "warmup_epochs": 0,
        "val_folds": 3,
    },
    "space": {"lr_modules": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
}


class StubPool:
    def get(self, cfg):
        return None


def stub_fit(cfg, *, callbacks=(), device=None, data=None):
    """val mAP 0.8 for lr_modules 1e-3, 0.5 otherwise, with noise per (config, fold, seed)."""
    rng = np.random.default_rng([cfg.seed, cfg.val_fold, round(cfg.lr_modules * 1e6)])
    value = (0.8 if cfg.lr_modules == 1e-3 else 0.5) + rng.normal(0, 0.01)
    history = []
    for epoch in range(cfg.epochs):
        metrics = dict.fromkeys(("mAP", "rank1", "rank5", "rank10"), value) | {"loss": 1.0}
        history.append(metrics)
        for cb in callbacks:
            cb(epoch, metrics)
    best = {k: value for k in ("rank1", "rank5", "rank10", "mAP")}
    aps = {f"f{cfg.val_fold}-{i}": [4 * value, 4] for i in range(4)}
    return FitResult(history, cfg.epochs - 1, best, "completed", 0.1, 0, object(), None, aps)


@pytest.mark.parametrize("per_epoch", [True, False], ids=["median pruner", "between runs"])
@pytest.mark.parametrize("label", [None, "hand-tuned"], ids=["plain trial", "baseline"])
def test_a_baseline_is_never_pruned(per_epoch, label):
    """A poor trial queued after three good ones is pruned, unless it is a baseline (here a
    retry of one, labelled as ``hpo.fleet.recovery`` labels it)."""
    space = parse_space(SPACE)
    pruner = make_pruner("median", 3) if per_epoch else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(3):
        study.enqueue_trial({"lr_modules": 1e-3})
    attrs = {"baseline": label, "retry_of": 0} if label else {}
    study.enqueue_trial({"lr_modules": 0.05}, user_attrs=attrs)
    objective = Objective(space, data=StubPool(), fit_fn=stub_fit, prune_between_runs=not per_epoch)
    study.optimize(objective, n_trials=4, catch=())
    poor = study.trials[3]
    if label:
        assert poor.state == TrialState.COMPLETE
        assert len(attrs_of(poor)["fold_values"]) == 3
    else:
        assert poor.state == TrialState.PRUNED
        expected = "pruned at " if per_epoch else "pruned after run 1: "
        assert poor.user_attrs["prune_reason"].startswith(expected)
