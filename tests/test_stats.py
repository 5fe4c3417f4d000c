"""Uncertainty helpers: identity bootstrap, paired comparisons, t intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from handreid.stats import (
    bootstrap_se,
    mean_se,
    paired_bootstrap_se,
    paired_t_less,
    pooled_map,
    t_interval,
    two_sided_p,
)


def identities(aps, queries=4, start=0):
    return {f"id{start + i}": (a * queries, queries) for i, a in enumerate(aps)}


def test_pooled_map_weights_identities_by_their_queries():
    assert pooled_map({"a": (1.0, 1), "b": (0.0, 3)}) == pytest.approx(0.25)
    assert math.isnan(pooled_map({}))


def test_one_fold_bootstrap_matches_the_standard_error_of_identity_means():
    aps = np.random.default_rng(0).uniform(0.2, 1.0, size=30)
    analytic = aps.std(ddof=0) / math.sqrt(len(aps))  # the bootstrap's plug-in SE
    se = bootstrap_se([identities(aps)], draws=4000)
    assert se == pytest.approx(analytic, rel=0.08)


def test_folds_add_their_spread_to_the_standard_error():
    rng = np.random.default_rng(1)
    low = identities(rng.uniform(0.30, 0.32, size=10))
    high = identities(rng.uniform(0.70, 0.72, size=10), start=10)
    within = bootstrap_se([low])
    both = bootstrap_se([low, high])
    # two folds 0.4 apart: SE of their mean is about 0.4 / 2 (resampling 2 folds)
    assert within < 0.01 and 0.1 < both < 0.3
    assert bootstrap_se([low, identities(rng.uniform(0.30, 0.32, size=10), start=10)]) < 0.01


def test_paired_bootstrap_sees_only_what_differs_per_identity():
    aps = np.random.default_rng(2).uniform(0.1, 0.9, size=25)
    a, shifted = identities(aps), identities(np.clip(aps + 0.05, 0, 1))
    assert paired_bootstrap_se(shifted, a) < 0.2 * bootstrap_se([a])
    assert math.isnan(paired_bootstrap_se(a, identities([0.5], start=99)))


def test_t_interval_and_p_value_follow_the_t_distribution():
    lo, hi = t_interval(1.0, 0.5, 4)
    q = sps.t.ppf(0.975, 4)
    assert (lo, hi) == pytest.approx((1.0 - q * 0.5, 1.0 + q * 0.5))
    assert two_sided_p(1.0, 0.5, 4) == pytest.approx(2 * sps.t.sf(2.0, 4))
    assert all(math.isnan(v) for v in t_interval(1.0, 0.5, 0))


def test_mean_se_adds_the_variance_the_values_cannot_show():
    values = [0.5, 0.6, 0.7]
    _, plain = mean_se(values)
    assert plain == pytest.approx(np.std(values, ddof=1) / math.sqrt(3))
    _, more = mean_se(values, extra_var=0.01)
    assert more == pytest.approx(math.sqrt(plain**2 + 0.01))
    assert mean_se([0.4], extra_var=0.0004) == pytest.approx((0.4, 0.02))


def test_paired_t_less_is_one_sided():
    assert paired_t_less([0.5, 0.52, 0.49], [0.6, 0.61, 0.62]) < 0.01
    assert paired_t_less([0.7, 0.72], [0.6, 0.61]) > 0.9
    assert math.isnan(paired_t_less([0.5], [0.6]))
    d = np.array([0.5, 0.62, 0.55]) - np.array([0.6, 0.61, 0.58])
    assert paired_t_less([0.5, 0.62, 0.55], [0.6, 0.61, 0.58]) == pytest.approx(
        sps.ttest_1samp(d, 0.0, alternative="less").pvalue
    )


def test_repeats_of_a_fold_share_its_identities_in_the_bootstrap():
    rng = np.random.default_rng(3)
    folds = [identities(rng.uniform(0.6, 1.0, size=8), start=10 * k) for k in range(3)]
    once = bootstrap_se(folds, groups=[0, 1, 2])
    thrice = bootstrap_se(folds * 3, groups=[0, 1, 2] * 3)
    # three identical repeats of each fold carry no more information than one
    assert thrice == pytest.approx(once, rel=0.02)
    # counted as nine disjoint folds they would shrink the SE by about sqrt(3)
    assert bootstrap_se(folds * 3) < 0.7 * once
    with pytest.raises(ValueError, match="2 groups for 3 runs"):
        bootstrap_se(folds, groups=[0, 1])


def test_repeats_that_differ_add_their_seed_spread():
    rng = np.random.default_rng(4)
    folds = [identities(rng.uniform(0.6, 1.0, size=8), start=10 * k) for k in range(3)]
    shifted = [
        {k: (s + 4 * d, c) for k, (s, c) in f.items()}
        for f, d in zip(folds, (0.1, -0.1, 0.0), strict=True)
    ]
    same = bootstrap_se(folds * 2, groups=[0, 1, 2] * 2)
    differ = bootstrap_se(folds + shifted, groups=[0, 1, 2] * 2)
    assert differ > same
