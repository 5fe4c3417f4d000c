"""The decisions under models their calibration left out (an outside statistician's findings):
a config x identity effect that new identities redraw, config x seed luck, survivor feedback,
per-config noise, outlier runs, folds under the per-epoch median pruner, and the identity
bootstrap's SE. The generators here are Gaussian on the AP scale, written for these tests
alone; ``benchmarks/decisions_stress.py`` measures the same questions at full size.

Each rate is checked against its target plus 2.5 binomial SEs of the rate at these sizes, and,
where the old design is at hand, against the old design's rate on the same draws, which shows
the test can fail.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpo.decide import confirm as cf
from hpo.decide import verdict as vd
from hpo.search.pruning import PruningCallback, between_runs_prune, prune_reason, run_reference
from hpo.search.study import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

# per-identity AP on the AP scale: a person's hands (shared by every config), a training seed
# (shared), config x seed luck, config x identity (new identities redraw it), the rest
HANDS, SEED, LUCK, BY_ID, REST = 0.15, 0.01, 0.01, 0.09, 0.06
FOLD_IDS, CONFIRM_IDS, FOLDS, SEEDS = 20, 15, 3, 3


def slack(p: float, n: int) -> float:
    """2.5 binomial SEs of a rate ``p`` over ``n`` draws."""
    return 2.5 * math.sqrt(p * (1 - p) / n)


def identity_aps(rng, means, seeds: int, by_id: np.ndarray, hands: np.ndarray) -> np.ndarray:
    """(configs, seeds, identities): each run's AP per identity on the identities whose
    config x identity effects are ``by_id`` (configs, identities) and difficulty ``hands``."""
    c, n = by_id.shape
    return (
        np.asarray(means)[:, None, None]
        + hands[None, None, :]
        + rng.normal(0, SEED, (1, seeds, 1))
        + rng.normal(0, LUCK, (c, seeds, 1))
        + by_id[:, None, :]
        + rng.normal(0, REST, (c, seeds, n))
    )


def same_fold_says_better(values: np.ndarray, incumbent: int = 1) -> bool:
    """``hpo confirm``'s verdict before confirm identities: ``decide`` on run values
    (configs, seeds, folds) measured on the study's own folds; config 0 the baseline."""
    c, m, k = values.shape
    runs = {}
    for n in range(c):
        r = cf.Runs()
        for s in range(m):
            for i in range(k):
                r.values.append(float(values[n, s, i]))
                r.keys.append((s + 1, i))
                r.identity_ap.append({})
            r.seeds.add(s + 1)
        runs[n] = r
    info = {n: {"role": "baseline" if n == 0 else "candidate", "baseline": ""} for n in range(c)}
    summary = cf.decide(runs, info, list(range(1, m + 1)), k, k, [0], incumbent)
    return cf.decision(summary) == "better"


def compared(means: np.ndarray) -> int:
    """The config the verdict speaks of: the winner, or the best candidate if the baseline
    (0) wins."""
    winner = int(np.argmax(means))
    return winner if winner else 1 + int(np.argmax(means[1:]))


def new_ids_say_better(terms: np.ndarray) -> bool:
    d = vd.new_identities(terms, 0)[compared(terms.mean(axis=(1, 2)))]
    return d.ci[0] > 0


# --- finding 1: confirm on the identities the study selected on ---------------------------


def test_a_winner_lucky_on_the_study_identities_is_not_called_better_on_new_ones():
    """100 configs equal on new identities; the study picks the top 5 on its 3 folds, where
    the config x identity effects differ. The same-fold confirm keeps that luck; confirm
    identities redraw it."""
    rng = np.random.default_rng(11)
    reps, old, new = 300, 0, 0
    n = 100
    for _ in range(reps):
        hands = rng.normal(0, HANDS, FOLDS * FOLD_IDS)
        by_id = rng.normal(0, BY_ID, (n, FOLDS * FOLD_IDS))
        study = identity_aps(rng, np.zeros(n), 1, by_id, hands)[:, 0]
        value = study.reshape(n, FOLDS, FOLD_IDS).mean(axis=(1, 2))
        top = [int(t) for t in np.argsort(-value)[:5] if t != 0][:5]
        rows = [0, *top]
        fresh = identity_aps(rng, np.zeros(len(rows)), SEEDS, by_id[rows], hands)
        old += same_fold_says_better(fresh.reshape(len(rows), SEEDS, FOLDS, FOLD_IDS).mean(-1))
        confirm = identity_aps(
            rng,
            np.zeros(len(rows)),
            SEEDS,
            rng.normal(0, BY_ID, (len(rows), CONFIRM_IDS)),
            rng.normal(0, HANDS, CONFIRM_IDS),
        )
        new += new_ids_say_better(confirm)
    assert new / reps <= 0.05 + slack(0.05, reps), new / reps
    assert old / reps >= 0.09, old / reps  # the luck it keeps


def test_an_advantage_on_the_study_identities_only_is_not_called_better():
    """Config 1 is +0.05 on the study's identities and equal elsewhere: the same-fold confirm
    calls it better half the time, the confirm identities do not."""
    rng = np.random.default_rng(12)
    reps, old, new = 200, 0, 0
    means = np.zeros(6)
    for _ in range(reps):
        ids = FOLDS * FOLD_IDS
        by_id = rng.normal(0, BY_ID, (6, ids))
        by_id[1] += 0.05
        y = identity_aps(rng, means, SEEDS, by_id, rng.normal(0, HANDS, ids))
        old += same_fold_says_better(y.reshape(6, SEEDS, FOLDS, FOLD_IDS).mean(-1))
        confirm = identity_aps(
            rng,
            means,
            SEEDS,
            rng.normal(0, BY_ID, (6, CONFIRM_IDS)),
            rng.normal(0, HANDS, CONFIRM_IDS),
        )
        new += new_ids_say_better(confirm)
    assert new / reps <= 0.05 + slack(0.05, reps), new / reps
    assert old / reps >= 0.35, old / reps


def test_the_intervals_on_new_identities_cover_their_true_differences():
    """All five simultaneous intervals cover at their level, and their SE is the spread of
    the difference over new identities and seeds."""
    rng = np.random.default_rng(13)
    means = np.array([0.8, 0.82, 0.79, 0.8, 0.83, 0.81])
    truth = means - means[0]
    reps, family = 400, 0
    errors, variances = [], []
    for _ in range(reps):
        terms = identity_aps(
            rng,
            means,
            SEEDS,
            rng.normal(0, BY_ID, (6, CONFIRM_IDS)),
            rng.normal(0, HANDS, CONFIRM_IDS),
        )
        diffs = vd.new_identities(terms, 0)
        family += all(d.ci[0] <= truth[i] <= d.ci[1] for i, d in diffs.items())
        errors.append(diffs[1].diff - truth[1])
        variances.append(diffs[1].se ** 2)
        assert diffs[1].comparisons == 5
    assert abs(family / reps - 0.95) <= slack(0.95, reps), family / reps
    # the SE: mean estimated variance against the variance of the error (SE of that: ~7 %)
    ratio = float(np.mean(variances) / np.mean(np.square(errors)))
    assert 0.8 <= ratio <= 1.25, ratio


def test_one_configs_interval_on_new_identities_covers_its_mean():
    rng = np.random.default_rng(14)
    reps, covered = 400, 0
    for _ in range(reps):
        terms = identity_aps(
            rng,
            [0.8],
            SEEDS,
            rng.normal(0, BY_ID, (1, CONFIRM_IDS)),
            rng.normal(0, HANDS, CONFIRM_IDS),
        )[0]
        mean, se, (lo, hi) = vd.on_new_identities(terms)
        covered += lo <= 0.8 <= hi
        assert mean == pytest.approx(terms.mean()) and se > 0
    assert abs(covered / reps - 0.95) <= slack(0.95, reps), covered / reps


def test_linearized_terms_average_to_the_runs_map():
    aps = {"a": [3.0, 4], "b": [1.0, 2], "c": [5.5, 6]}
    terms = vd.linearized(aps, ["a", "b", "c"])
    assert terms.mean() == pytest.approx(9.5 / 12)
    assert vd.linearized({"a": [2.0, 2], "b": [1.0, 2]}, ["a", "b"]).tolist() == [1.0, 0.5]


# --- findings 2 and 3: between-run pruning --------------------------------------------------

RUN_SD = 0.03


def trials_of(x: np.ndarray) -> list:
    return [
        create_trial(
            state=TrialState.COMPLETE,
            value=float(row.mean()),
            user_attrs={"fold_values": [round(float(v), 6) for v in row]},
        )
        for row in x
    ]


def run_values(rng, count: int, fold: np.ndarray, seeds, luck=0.0, sdlog=0.0, drop=0.0):
    """Run values of equal trials: fold effect + scale * (luck with the run's seed + noise),
    5 % of runs (``drop``) collapsing."""
    index = [sorted(set(seeds)).index(s) for s in seeds]
    u = rng.normal(0, luck, (count, len(set(seeds))))[:, index]
    e = rng.normal(0, math.sqrt(RUN_SD**2 - luck**2), (count, len(seeds)))
    scale = np.exp(rng.normal(0, sdlog, (count, 1)))
    x = 0.8 + fold + scale * (u + e)
    return x - drop * (rng.random(x.shape) < 0.05)


def equal_trial_pruned(rng, reps: int, seeds, **stress) -> float:
    """Share of studies of 40 equal complete trials in which an equal trial is pruned."""
    k, hits = len(seeds), 0
    for _ in range(reps):
        fold = rng.normal(0, 0.04, k)
        x = run_values(rng, 41, fold, seeds, **stress)
        ref = run_reference(trials_of(x[:40]), k)
        hits += any(prune_reason(list(x[40, :m]), ref, k) for m in range(1, k))
    return hits / reps


def tree_seeds(folds: int = 3) -> list[int]:
    """The training seed of each fold run of a trial, as ``run_configs`` assigns them."""
    from hpo.records.space import parse_space
    from hpo.search.objective import run_configs

    base = {"model": "tiny-vit", "pretrained": "none", "val_folds": folds}
    space = parse_space(
        {"base": base, "space": {"lr_modules": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    )
    return [c.seed for c in run_configs(space.config({"lr_modules": 1e-3}))]


def test_config_by_seed_luck_does_not_make_the_between_run_rule_prune_equal_trials():
    """Config x seed SD 0.02 of 0.03, seeds as the objective assigns them (one per fold)."""
    seeds = tree_seeds()
    assert len(set(seeds)) == len(seeds), seeds
    rate = equal_trial_pruned(np.random.default_rng(21), 500, seeds, luck=0.02)
    assert rate <= 0.05 + slack(0.05, 500), rate


def test_with_a_seed_per_fold_seed_luck_is_plain_run_noise():
    rng = np.random.default_rng(22)
    apart = equal_trial_pruned(rng, 500, [0, 1, 2], luck=0.02)
    shared = equal_trial_pruned(rng, 300, [0, 0, 0], luck=0.02)
    assert apart <= 0.05 + slack(0.05, 500), apart
    assert shared >= 0.15, shared  # one seed for every fold: the luck is the trial's


def test_outlier_runs_do_not_make_the_between_run_rule_prune_equal_trials():
    rate = equal_trial_pruned(np.random.default_rng(23), 500, [0, 1, 2], drop=0.15)
    assert rate <= 0.05 + slack(0.05, 500), rate


def test_per_config_noise_does_not_make_the_between_run_rule_prune_equal_trials():
    rate = equal_trial_pruned(np.random.default_rng(24), 500, [0, 1, 2], sdlog=0.5)
    assert rate <= 0.05 + slack(0.05, 500), rate


def test_in_a_sequential_study_pruned_trials_leaving_the_reference_keep_the_rate():
    """Studies of 40 equal trials, one after another: a trial is judged against the trials
    complete so far, and a pruned one never joins them."""
    rng = np.random.default_rng(25)
    pruned = judged = 0
    for _ in range(60):
        fold = rng.normal(0, 0.04, 3)
        x = run_values(rng, 40, fold, [0, 1, 2])
        done: list = []
        for row in x:
            ref = run_reference(done, 3)
            judged += ref is not None
            if any(prune_reason(list(row[:m]), ref, 3) for m in (1, 2)):
                pruned += 1
            else:
                done += trials_of(row[None])
    assert pruned / judged <= 0.05 + slack(0.05, judged), pruned / judged


# --- finding 4: the per-epoch median pruner over folds --------------------------------------

EPOCHS, WARMUP = 8, 1


def curve(run_value: float, rng) -> list[float]:
    """A run rising linearly by 0.08 to its value, epoch jitter 0.01."""
    ramp = 0.08 * (1 - np.arange(EPOCHS) / (EPOCHS - 1))
    return (run_value - ramp + rng.normal(0, 0.01, EPOCHS)).tolist()


def as_reported(runs: list[list[float]]) -> dict[int, float]:
    """Intermediate values as the objective reports them: run k's epoch e at step k*E + e."""
    return {k * EPOCHS + e + 1: v for k, vals in enumerate(runs) for e, v in enumerate(vals)}


def stopped(study: optuna.Study, runs: list[list[float]], values: list[float], trial) -> bool:
    """Whether the study's pruners stop ``trial`` with these epoch curves (one per fold),
    asked as ``Objective`` asks them: per epoch after the warm-up, and between runs."""
    try:
        for k, vals in enumerate(runs):
            callback = PruningCallback(trial, offset=k * EPOCHS, warmup=WARMUP if k else 0)
            for e, v in enumerate(vals):
                callback(e, {"mAP": v})
            if k < len(runs) - 1 and between_runs_prune(study, values[: k + 1], len(runs)):
                return True
    except optuna.TrialPruned:
        return True
    return False


def sequential_study(rng, trials: int) -> optuna.Study:
    """A study of equal trials run one after another (3 folds, 8 epochs), each stopped or not
    by the default pruners: the complete ones are the survivors."""
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner("median", EPOCHS, WARMUP, 3)
    )
    fold = rng.normal(0, 0.04, 3)
    for row in run_values(rng, trials, fold, [0, 1, 2]):
        curves = [curve(v, rng) for v in row]
        values = [max(c) for c in curves]
        trial = study.ask()
        if stopped(study, curves, values, trial):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("fold_values", [round(v, 6) for v in values])
            study.tell(trial, float(np.mean(values)))
    study.set_user_attr("fold", fold.tolist())
    return study


def better_trial_pruned(rng, studies: int, probes: int, shift: float) -> tuple[int, int]:
    """(stopped, asked) trials ``shift`` above the true mean of equal trials, each asked
    against the finished study of 30 (its survivors and its pruned trials)."""
    hits = 0
    for _ in range(studies):
        study = sequential_study(rng, 30)
        fold = np.array(study.user_attrs["fold"])
        for _ in range(probes):
            probe = optuna.create_study(
                direction="maximize", pruner=make_pruner("median", EPOCHS, WARMUP, 3)
            )
            probe.add_trials(study.get_trials(deepcopy=False))
            curves = [curve(v, rng) for v in run_values(rng, 1, fold, [0, 1, 2])[0] + shift]
            hits += stopped(probe, curves, [max(c) for c in curves], probe.ask())
    return hits, studies * probes


def test_the_median_pruner_over_folds_seldom_stops_a_trial_better_than_the_best():
    """K=3 folds, 8 epochs: a trial 2 run SDs better than any other, asked against a
    sequential study, whose complete trials are those that outlived the pruner (Optuna's
    MedianPruner over all steps stopped a third of them here)."""
    hits, asked = better_trial_pruned(np.random.default_rng(31), 12, 10, 2 * RUN_SD)
    assert hits / asked <= 0.05 + 2 * slack(0.05, asked), hits / asked  # 10 per study: clustered


# --- finding 8: the identity bootstrap's SE ---------------------------------------------------


def runs_of(rng, folds: int, ids: int, seeds: int, seed_sd: float) -> list:
    """One config's runs as the objective records them: ``folds`` disjoint sets of ``ids``
    new identities, ``seeds`` runs on each (a run-wide seed effect of SD ``seed_sd``). The
    config's true mAP on new identities is 0.8."""
    from hpo.search.objective import RunResult

    runs = []
    for f in range(folds):
        hands = rng.normal(0, HANDS, ids) + rng.normal(0, BY_ID, ids)
        queries = rng.integers(2, 20, ids)
        for s in range(seeds):
            ap = 0.8 + hands + rng.normal(0, seed_sd) + rng.normal(0, REST, ids)
            aps = {
                f"{f}-{i}": [float(a * q), int(q)]
                for i, (a, q) in enumerate(zip(ap, queries, strict=True))
            }
            value = float((ap * queries).sum() / queries.sum())
            runs.append(RunResult(f, s, value, 1, 1, "completed", {}, identity_ap=aps))
    return runs


def se_check(seed: int, reps: int, folds: int, ids: int, seeds: int, seed_sd: float):
    """(share of ±2 SE intervals covering 0.8, RMS SE / RMS error) of ``value_se``."""
    from hpo.search.objective import value_se

    rng = np.random.default_rng(seed)
    errors, ses = [], []
    for _ in range(reps):
        runs = runs_of(rng, folds, ids, seeds, seed_sd)
        errors.append(np.mean([r.value for r in runs]) - 0.8)
        ses.append(value_se(runs, folds))
    e, s = np.asarray(errors), np.asarray(ses)
    return float(np.mean(np.abs(e) <= 2 * s)), float(np.sqrt(np.mean(s**2) / np.mean(e**2)))


def test_the_two_stage_bootstrap_is_not_short_when_identities_dominate():
    """3 folds, one seed each, no seed noise: the ±2 SE interval covers, and the SE is not
    short; it runs long (about 1.2x here), since the spread between folds already holds the
    identity sampling that each fold's resample adds again."""
    covered, ratio = se_check(41, 200, folds=3, ids=20, seeds=1, seed_sd=0.0)
    assert covered >= 0.95 - slack(0.95, 200), covered
    assert 0.9 <= ratio <= 1.45, ratio


def test_one_run_on_one_split_leaves_out_the_seed_and_repeats_bring_it_back():
    """With one run the SE is identity sampling alone: a seed effect as large as it leaves
    ±2 SE short. Three repeats on the split show the seed spread, and the interval covers."""
    one, one_ratio = se_check(42, 200, folds=1, ids=15, seeds=1, seed_sd=0.04)
    three, _ = se_check(43, 200, folds=1, ids=15, seeds=3, seed_sd=0.04)
    assert one <= 0.88, one
    assert one_ratio <= 0.8, one_ratio
    assert three >= 0.95 - slack(0.95, 200), three
