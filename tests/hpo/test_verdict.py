"""`hpo confirm`'s verdict statistics: Dunnett's critical values, the fold as the unit, and the
verdict's error rate and coverage on seeded simulations run through the real ``decide``."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from hpo.decide import confirm as cf
from hpo.decide import verdict as vd


def _benchmark():
    """benchmarks/decisions_verdict.py: its simulation (noise as on the 11k sample) and its
    way of running simulated runs through the real ``decide``, shared with these tests."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "decisions_verdict.py"
    spec = importlib.util.spec_from_file_location("decisions_verdict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark()
simulate = BENCH.simulate_runs  # (configs, seeds, folds) run values; config 0 the baseline
decided = BENCH.summary_of  # ``cf.decide`` on them; the baseline is config 0, the incumbent 1


def old_says_better(y) -> bool:
    """The rule before: the largest mean, a t interval over K*M run differences."""
    return BENCH.old_rule(y)[0] == "better"


@pytest.mark.parametrize(
    ("comparisons", "df", "table"),
    # Dunnett (1955, 1964) two-sided 95 % tables
    [(2, 10, 2.57), (4, 10, 2.89), (5, 10, 2.99), (4, 20, 2.65), (5, math.inf, 2.51)],
)
def test_critical_values_are_dunnetts(comparisons, df, table):
    assert vd.critical_value(comparisons, df) == pytest.approx(table, abs=0.01)


def test_one_comparison_is_the_t_quantile_and_many_match_a_simulation():
    assert vd.critical_value(1, 4) == pytest.approx(sps.t.ppf(0.975, 4))
    rng = np.random.default_rng(0)
    n, k, df = 200_000, 5, 2
    x0, x = rng.normal(size=(n, 1)), rng.normal(size=(n, k))
    s = np.sqrt(rng.chisquare(df, size=(n, 1)) / df)
    t = np.abs(x - x0) / math.sqrt(2) / s
    c = vd.critical_value(k, df)
    assert (t.max(axis=1) <= c).mean() == pytest.approx(0.95, abs=0.003)


def test_the_pooled_error_is_the_config_by_fold_interaction():
    additive = np.add.outer([0.0, 0.1, 0.3], [0.5, 0.6, 0.8, 0.7])
    assert vd.pooled_error(additive) == (pytest.approx(0.0), 6)
    bumped = additive.copy()
    bumped[0, 0] += 0.12  # residuals 0.12 * (1 - 1/3)(1 - 1/4) etc.: sum of squares 0.12^2/2
    ms, df = vd.pooled_error(bumped)
    assert df == 6 and ms == pytest.approx(0.12**2 * (2 / 3) * (3 / 4) / 6)
    assert vd.pooled_error(additive[:, :1]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_a_fold_shared_by_every_seed_counts_once():
    # identity effects that move config 1 on folds 0 and 1 for all 3 seeds: 3 folds of
    # evidence, not 9 runs, so they do not make config 1 "better"
    y = np.full((3, 3, 3), 0.8)
    y[1, :, :2] += 0.06
    y += np.random.default_rng(1).normal(0, 0.002, size=y.shape)
    rows = {r["trial"]: r for r in decided(y)["rows"]}
    d = rows[1]["vs_baseline"]
    assert d["df"] == 4 and d["n"] == 9 and d["comparisons"] == 2
    assert d["ci"][0] < 0 < d["ci"][1]
    assert old_says_better(y)  # 9 runs with df 8 called it better


def test_five_equal_candidates_are_called_better_at_most_five_percent_of_the_time():
    rng = np.random.default_rng(2026)
    reps, new, old = 500, 0, 0
    for _ in range(reps):
        y = simulate(rng, [0.8] * 6)
        new += cf.decision(decided(y)) == "better"
        old += old_says_better(y)
    # binomial SE at 5 %: 1 %; the old rule's ~15 % on the same data shows the test can fail
    assert new / reps <= 0.05, new / reps
    assert old / reps >= 0.10, old / reps


def test_the_simultaneous_intervals_cover_the_true_differences_at_their_level():
    rng = np.random.default_rng(7)
    means = [0.8, 0.83, 0.8, 0.79, 0.8, 0.81]
    truth = {n: means[n] - means[0] for n in range(1, 6)}
    reps, covered = 500, 0
    for _ in range(reps):
        rows = {r["trial"]: r for r in decided(simulate(rng, means))["rows"]}
        covered += all(
            rows[n]["vs_baseline"]["ci"][0] <= t <= rows[n]["vs_baseline"]["ci"][1]
            for n, t in truth.items()
        )
    assert 0.92 <= covered / reps <= 0.98, covered / reps  # binomial SE 1 %


def test_a_candidate_better_by_five_points_is_found_most_of_the_time():
    rng = np.random.default_rng(5)
    reps, found = 300, 0
    for _ in range(reps):
        summary = decided(simulate(rng, [0.8, 0.85, 0.8, 0.8, 0.8, 0.8]))
        found += cf.decision(summary) == "better" and summary["winner"] == 1
    assert found / reps >= 0.8, found / reps


def test_one_fold_uses_the_runs_as_units_and_adds_identity_noise():
    y = np.random.default_rng(3).normal(0.8, 0.01, size=(3, 4, 1))
    rows = {r["trial"]: r for r in decided(y)["rows"]}
    assert rows[1]["vs_baseline"]["df"] == 2 * 3  # (configs - 1) * (runs - 1)


def test_the_benchmark_reports_every_figure():
    result = BENCH.simulate_verdicts(reps=40, seed=0)
    for key in (
        "false_better_verdict_n5",
        "false_better_old_n5",
        "power_better_0.03",
        "power_better_0.05",
        "ci_coverage_diff",
    ):
        assert 0.0 <= result[key] <= 1.0
    assert result["power_better_0.05"] > result["false_better_verdict_n5"]
