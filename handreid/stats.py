"""Uncertainty of re-ID values: identity bootstrap, t intervals, paired comparisons.

A validation mAP is the mean AP over the queries of a few identities, so its noise comes from
which identities were drawn (and, across runs, from the training seed). Per-identity AP sums
(``evaluate_ranking(..., per_identity=True)``) make every resample cheap: the mAP of a
resample of identities is ``sum of their AP sums / sum of their query counts``.
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


def _arrays(identity_ap: IdentityAP) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(identity_ap)
    sums = np.array([float(identity_ap[k][0]) for k in keys])
    counts = np.array([float(identity_ap[k][1]) for k in keys])
    return sums, counts


def bootstrap_se(folds: Sequence[IdentityAP], draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> float:
    """Standard error of the mean over folds of each fold's mAP, by a two-stage bootstrap.

    folds: one ``{identity: (AP sum, queries)}`` per validation fold (or per run). With one
    fold this resamples its identities; with several it resamples folds, then identities
    within each drawn fold (Davison & Hinkley's two-stage scheme), so both the fold-to-fold
    spread and the identity sampling inside a fold show. 0.0 when nothing varies.
    """
    arrays = [_arrays(f) for f in folds if f]
    if not arrays:
        return float("nan")
    rng = np.random.default_rng(seed)
    k = len(arrays)
    # fold indices first, then each fold's identity resamples vectorised over the replicates
    picks = rng.integers(0, k, size=(draws, k)) if k > 1 else np.zeros((draws, 1), dtype=int)
    totals = np.zeros(draws)
    for f, (sums, counts) in enumerate(arrays):
        uses = (picks == f).sum(axis=1)  # how often fold f was drawn in each replicate
        n = len(sums)
        for times in np.unique(uses[uses > 0]):
            rows = np.flatnonzero(uses == times)
            idx = rng.integers(0, n, size=(len(rows), times, n))
            s, c = sums[idx].sum(axis=2), counts[idx].sum(axis=2)
            fold_maps = np.divide(s, c, out=np.full_like(s, np.nan), where=c > 0)
            totals[rows] += np.nansum(fold_maps, axis=1)
    return float(np.std(totals / k, ddof=1))


def paired_bootstrap_se(
    a: IdentityAP, b: IdentityAP, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> float:
    """Standard error of mAP(a) - mAP(b) on the same identities, resampling them jointly."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return float("nan")
    sa, ca = _arrays({k: a[k] for k in common})
    sb, cb = _arrays({k: b[k] for k in common})
    idx = np.random.default_rng(seed).integers(0, len(common), size=(draws, len(common)))
    diff = sa[idx].sum(1) / ca[idx].sum(1) - sb[idx].sum(1) / cb[idx].sum(1)
    return float(np.std(diff, ddof=1))


def t_interval(mean: float, se: float, df: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided ``level`` interval ``mean +- t(df) * se`` (normal when df is large)."""
    if not math.isfinite(se) or df < 1:
        return (float("nan"), float("nan"))
    q = float(sps.t.ppf(0.5 + level / 2, df))
    return (mean - q * se, mean + q * se)


def mean_se(values: Sequence[float], extra_var: float = 0.0) -> tuple[float, float]:
    """Mean and its standard error from the spread of ``values`` plus ``extra_var``.

    ``extra_var`` is a variance the values cannot show, e.g. identity sampling when every
    value was measured on the same identities.
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    var = float(np.var(x, ddof=1)) / len(x) if len(x) > 1 else float("nan")
    if len(x) == 1:
        return float(x[0]), math.sqrt(extra_var) if extra_var > 0 else float("nan")
    return float(x.mean()), math.sqrt(var + max(extra_var, 0.0))


def two_sided_p(mean: float, se: float, df: int) -> float:
    """p-value of a t test of ``mean == 0``."""
    if not math.isfinite(se) or df < 1:
        return float("nan")
    if se == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * sps.t.sf(abs(mean / se), df))


def paired_t_less(values: Sequence[float], reference: Sequence[float]) -> float:
    """One-sided p of a paired t test that ``values`` are lower than ``reference``.

    Pairs are matched by position (fold and seed). NaN with fewer than 2 pairs; 0 when every
    difference is equal and negative, 1 when equal and non-negative.
    """
    d = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    if len(d) < 2:
        return float("nan")
    sd = float(np.std(d, ddof=1))
    if sd == 0:
        return 0.0 if d.mean() < 0 else 1.0
    return float(sps.t.cdf(d.mean() / (sd / math.sqrt(len(d))), len(d) - 1))


__all__ = [
    "bootstrap_se",
    "mean_se",
    "paired_bootstrap_se",
    "paired_t_less",
    "pooled_map",
    "t_interval",
    "two_sided_p",
]
