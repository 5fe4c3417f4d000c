"""The best trial against the baseline, as show, the note and the report state it."""

from __future__ import annotations

import math
import statistics

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hpo.decide.compare import compare_to_baseline

DISTS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "classifier": CategoricalDistribution(["linear", "arcface"]),
    "scale": FloatDistribution(8, 64),
}


def add(study, value, params, folds=None, se=None, baseline=None, **extra):
    attrs = dict(extra)
    if folds is not None:
        attrs["fold_values"] = folds
    if se is not None:
        attrs["value_se"] = se
    if baseline:
        attrs["baseline"] = baseline
    study.add_trial(
        optuna.trial.create_trial(
            value=value,
            params=params,
            distributions={k: DISTS[k] for k in params},
            user_attrs=attrs,
        )
    )


def test_changes_and_a_paired_difference_over_the_same_runs():
    study = optuna.create_study(direction="maximize")
    add(
        study,
        0.60,
        {"lr": 1e-3, "classifier": "arcface", "scale": 30.0},
        [0.58, 0.60, 0.62],
        baseline="manual",
    )
    add(study, 0.70, {"lr": 3e-3, "classifier": "linear"}, [0.69, 0.70, 0.71])
    c = compare_to_baseline(study)
    assert c.best.number == 1 and c.baseline.number == 0 and c.paired
    assert c.diff == pytest.approx(0.10)
    assert c.diff_se == pytest.approx(0.01 / math.sqrt(3))
    assert c.change_lines() == [
        "lr: 0.001 -> 0.003",
        "classifier: arcface -> linear",
        "scale: 30 -> -",
    ]
    # two trials: nothing to choose among, a plain t interval (df 2)
    assert "+0.100 val mAP ([+0.075, +0.125], paired by fold and seed)" in c.value_line()
    assert c.value_line().endswith(": unconfirmed; `hpo confirm` measures it on new identities")
    assert c.value_line(confirmed=True).endswith("the confirmed verdict says what holds")


def test_overlapping_trials_are_called_noise_and_no_baseline_is_none():
    study = optuna.create_study(direction="maximize")
    assert compare_to_baseline(study) is None
    add(study, 0.60, {"lr": 1e-3}, se=0.05, baseline="manual")
    add(study, 0.62, {"lr": 2e-3}, se=0.05)
    c = compare_to_baseline(study)
    assert not c.paired and c.diff_se == pytest.approx(math.hypot(0.05, 0.05))
    assert "unconfirmed" in c.value_line() and "within the noise" not in c.value_line()
    add(study, 0.90, {"lr": 1e-2}, se=0.01, baseline="other")
    c = compare_to_baseline(study)
    assert c.same_trial and "is the best trial" in c.value_line() and c.changes == []


def test_repeats_of_a_fold_are_averaged_and_one_split_is_not_paired():
    """With K folds x R repeats the fold is the unit (df K - 1): repeats share a fold's
    identities. Repeats on one split cannot show identity sampling: the trials' SEs are used."""
    study = optuna.create_study(direction="maximize")
    # runs ordered repeat-major: (r0 k0, r0 k1, r0 k2, r1 k0, r1 k1, r1 k2)
    base = [0.50, 0.60, 0.70, 0.52, 0.62, 0.72]
    best = [0.60, 0.66, 0.80, 0.62, 0.68, 0.82]
    add(study, 0.61, {"lr": 1e-3}, base, se=0.05, baseline="manual", n_folds=3, n_repeats=2)
    add(study, 0.70, {"lr": 3e-3}, best, se=0.05, n_folds=3, n_repeats=2)
    c = compare_to_baseline(study)
    assert c.paired and c.units == 3
    diffs = [0.10, 0.06, 0.10]  # per fold, the same in both repeats
    assert c.diff_se == pytest.approx(statistics.stdev(diffs) / math.sqrt(3))
    lo, hi = c.diff_ci()
    assert hi - lo == pytest.approx(2 * 4.302653 * c.diff_se, rel=1e-4)  # t(0.975, df 2)

    one_split = optuna.create_study(direction="maximize")
    add(one_split, 0.60, {"lr": 1e-3}, [0.58, 0.62], se=0.05, baseline="m", n_folds=1)
    add(one_split, 0.70, {"lr": 3e-3}, [0.69, 0.71], se=0.04, n_folds=1, n_repeats=2)
    c = compare_to_baseline(one_split)
    assert not c.paired and c.diff_se == pytest.approx(math.hypot(0.05, 0.04))


def test_the_best_of_many_trials_gets_an_interval_adjusted_for_the_choice():
    """Twenty trials no better than the baseline: the plain interval on the largest lead sits
    above 0 far more often than 5 %; the adjusted one does not."""
    rng = np.random.default_rng(3)
    above_plain = above_adjusted = 0
    for _ in range(200):
        study = optuna.create_study(direction="maximize")
        add(study, 0.6 + rng.normal(0, 0.02), {"lr": 1e-3}, se=0.02, baseline="manual")
        for k in range(19):
            add(study, 0.6 + rng.normal(0, 0.02), {"lr": 2e-3 + k * 1e-4}, se=0.02)
        c = compare_to_baseline(study)
        if c.same_trial:
            continue
        plain_lo = c.diff - 1.96 * c.diff_se
        above_plain += plain_lo > 0
        above_adjusted += c.diff_ci()[0] > 0
        assert f"adjusted for the choice among {c.trials} trials" in c.value_line()
    assert above_plain >= 20  # ~ 18 %: the largest of 19 leads, each with the baseline's noise
    assert above_adjusted <= 15  # <= 5 % of 200, with room for the Monte Carlo error
