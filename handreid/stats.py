"""Uncertainty of re-ID values: identity bootstrap, t intervals, paired comparisons.

A validation mAP is the mean AP over the queries of a few identities, so its noise comes from
which identities were drawn (and, across runs, from the training seed). Per-identity AP sums
(``evaluate_ranking(..., per_identity=True)``) make every resample cheap: the mAP of a
resample of identities is ``sum of their AP sums / sum of their query counts``.

Where scipy computes the same thing we call it: the t interval (``scipy.stats.t.interval``),
the two-sided p (``t.sf``), the paired t test (``ttest_rel``), the standard error of a mean
(``sem``) and the one-stage identity bootstraps (``scipy.stats.bootstrap``, paired over the
(AP sum, query count) columns). Our own code is only the two-stage bootstrap of ``bootstrap_se``
with several folds: scipy resamples one level of units, while runs that validate on one fold
share its identities, so folds are resampled first and one identity draw per drawn fold is
applied to every repeat (training seed) of that fold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

IdentityAP = Mapping[str, Sequence[float]]  # identity -> (sum of AP, number of queries)
BOOTSTRAP_DRAWS = 2000


def pooled_map(identity_ap: IdentityAP) -> float:
    """mAP over every query of the given identities."""
    sums = sum(float(v[0]) for v in identity_ap.values())
    count = sum(float(v[1]) for v in identity_ap.values())
    return sums / count if count else float("nan")


def _arrays(identity_ap: IdentityAP, keys: Sequence[str] | None = None):
    """(AP sums, query counts) over ``keys`` (default: the sorted identities); absent: 0."""
    keys = sorted(identity_ap) if keys is None else keys
    zero = (0.0, 0.0)
    sums = np.array([float(identity_ap.get(k, zero)[0]) for k in keys])
    counts = np.array([float(identity_ap.get(k, zero)[1]) for k in keys])
    return sums, counts


def _ratio(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    """mAP of each resample: sum of AP sums / sum of query counts (pairs of columns)."""
    out = columns[0].sum(axis=axis) / columns[1].sum(axis=axis)
    if len(columns) == 4:
        out = out - columns[2].sum(axis=axis) / columns[3].sum(axis=axis)
    return out


def _one_stage_se(columns: tuple[np.ndarray, ...], draws: int, seed: int) -> float:
    """Bootstrap SE of ``_ratio`` resampling identities (rows shared by every column)."""
    if len(columns[0]) < 2 or not np.any(np.ptp(np.stack(columns), axis=1)):
        return 0.0 if len(columns[0]) else float("nan")
    res = sps.bootstrap(
        columns,
        _ratio,
        n_resamples=draws,
        vectorized=True,
        paired=True,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.standard_error)


def bootstrap_se(
    folds: Sequence[IdentityAP],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> float:
    """Standard error of the mean over runs of each run's mAP, by a (two-stage) bootstrap.

    folds: one ``{identity: (AP sum, queries)}`` per run. ``groups``: the validation fold of
    each run; runs of one fold (its repeats, other training seeds) share its identities.
    Default: every run its own fold. With one fold this resamples its identities
    (``scipy.stats.bootstrap``); with several it resamples folds, then the identities of each
    drawn fold once, applied to all of that fold's repeats (Davison & Hinkley's two-stage
    scheme), so the fold-to-fold spread, the seed spread inside it and the identity sampling
    all show, and R repeats of one fold count as one fold, not as R. 0.0 when nothing varies.
    """
    groups = list(range(len(folds))) if groups is None else list(groups)
    if len(groups) != len(folds):
        raise ValueError(f"{len(groups)} groups for {len(folds)} runs")
    members: dict[int, list[IdentityAP]] = {}
    for g, f in zip(groups, folds, strict=True):
        if f:
            members.setdefault(g, []).append(f)
    if not members:
        return float("nan")
    arrays = []  # per fold: (AP sums, counts), each (repeats, identities)
    for runs in members.values():
        keys = sorted(set().union(*runs))
        pairs = [_arrays(r, keys) for r in runs]
        arrays.append((np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))
    if len(arrays) == 1 and len(arrays[0][0]) == 1:
        return _one_stage_se((arrays[0][0][0], arrays[0][1][0]), draws, seed)
    rng = np.random.default_rng(seed)
    k = len(arrays)
    # fold indices first, then each fold's identity resamples vectorised over the replicates
    picks = rng.integers(0, k, size=(draws, k)) if k > 1 else np.zeros((draws, 1), dtype=int)
    totals = np.zeros(draws)
    for f, (sums, counts) in enumerate(arrays):
        uses = (picks == f).sum(axis=1)  # how often fold f was drawn in each replicate
        n = sums.shape[1]
        for times in np.unique(uses[uses > 0]):
            rows = np.flatnonzero(uses == times)
            idx = rng.integers(0, n, size=(len(rows), times, n))  # one draw for all repeats
            s, c = sums[:, idx].sum(axis=-1), counts[:, idx].sum(axis=-1)  # (repeats, rows, t)
            run_maps = np.divide(s, c, out=np.full_like(s, np.nan), where=c > 0)
            totals[rows] += np.nansum(np.nanmean(run_maps, axis=0), axis=1)
    return float(np.std(totals / k, ddof=1))


def paired_bootstrap_se(
    a: IdentityAP, b: IdentityAP, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> float:
    """Standard error of mAP(a) - mAP(b) on the same identities, resampling them jointly."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return float("nan")
    return _one_stage_se((*_arrays(a, common), *_arrays(b, common)), draws, seed)


def t_interval(
    mean: float,
    se: float,
    df: int,
    level: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """Two-sided ``level`` interval ``mean +- t(df) * se`` (``scipy.stats.t.interval``), cut
    to ``bounds``, the values the quantity can take (an mAP lies in [0, 1]: an interval
    reaching past 1 says nothing more than one that stops there)."""
    if not math.isfinite(se) or df < 1:
        return (float("nan"), float("nan"))
    if se == 0:
        return (mean, mean)
    lo, hi = sps.t.interval(level, df, loc=mean, scale=se)
    return (max(float(lo), bounds[0]), min(float(hi), bounds[1]))


def mean_se(values: Sequence[float], extra_var: float = 0.0) -> tuple[float, float]:
    """Mean and its standard error from the spread of ``values`` plus ``extra_var``.

    ``extra_var`` is a variance the values cannot show, e.g. identity sampling when every
    value was measured on the same identities.
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) == 1:
        return float(x[0]), math.sqrt(extra_var) if extra_var > 0 else float("nan")
    return float(x.mean()), math.sqrt(float(sps.sem(x)) ** 2 + max(extra_var, 0.0))


def two_sided_p(mean: float, se: float, df: int) -> float:
    """p-value of a t test of ``mean == 0`` (``scipy.stats.t.sf``)."""
    if not math.isfinite(se) or df < 1:
        return float("nan")
    if se == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * sps.t.sf(abs(mean / se), df))


def paired_t_less(values: Sequence[float], reference: Sequence[float]) -> float:
    """One-sided p of a paired t test that ``values`` are lower than ``reference``.

    ``scipy.stats.ttest_rel``; pairs are matched by position (fold and seed). NaN with fewer
    than 2 pairs; 0 when every difference is equal and negative, 1 when equal and
    non-negative (where scipy's statistic is undefined).
    """
    x, y = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if len(x) < 2:
        return float("nan")
    d = x - y
    if np.ptp(d) == 0:
        return 0.0 if d[0] < 0 else 1.0
    return float(sps.ttest_rel(x, y, alternative="less").pvalue)


__all__ = [
    "bootstrap_se",
    "mean_se",
    "paired_bootstrap_se",
    "paired_t_less",
    "pooled_map",
    "t_interval",
    "two_sided_p",
]
