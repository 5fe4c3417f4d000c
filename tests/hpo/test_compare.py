"""The best trial against the baseline, as show, the note and the report state it."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hpo.compare import compare_to_baseline

DISTS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "classifier": CategoricalDistribution(["linear", "arcface"]),
    "scale": FloatDistribution(8, 64),
}


def add(study, value, params, folds=None, se=None, baseline=None):
    attrs = {}
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
    assert "+0.1000 val mAP (95% CI" in c.value_line() and "paired" in c.value_line()
    assert "within the noise" not in c.value_line()


def test_overlapping_trials_are_called_noise_and_no_baseline_is_none():
    study = optuna.create_study(direction="maximize")
    assert compare_to_baseline(study) is None
    add(study, 0.60, {"lr": 1e-3}, se=0.05, baseline="manual")
    add(study, 0.62, {"lr": 2e-3}, se=0.05)
    c = compare_to_baseline(study)
    assert not c.paired and c.diff_se == pytest.approx(math.hypot(0.05, 0.05))
    assert "within the noise" in c.value_line()
    add(study, 0.90, {"lr": 1e-2}, se=0.01, baseline="other")
    c = compare_to_baseline(study)
    assert c.same_trial and "is the best trial" in c.value_line() and c.changes == []
