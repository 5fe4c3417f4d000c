"""The statistics of ``hpo confirm``'s verdict: paired differences to the baseline with a known
error rate.

Design. Every confirmed config trains the same runs: ``K`` folds (disjoint validation
identities) times ``M`` fresh seeds. A run value is

    y[c, s, k] = mu[c] + f[k] + g[c, k] + e[c, s, k]

where ``f[k]`` is what fold k's identities do to every config (it cancels in a paired
difference), ``g[c, k]`` is how config c in particular fares on those identities (shared by all
of c's seeds on fold k) and ``e`` is training-seed noise. A difference of config means then has
the variance ``2 (var g / K + var e / (K M))``: the fold, not the run, is the unit of
replication for identity noise, so ``K M - 1`` degrees of freedom (the old rule) are too many
and made a t interval too short whenever ``var g > 0``.

We therefore average each config's runs per fold and fit the two-way additive model config x
fold to those fold means (a randomized block design with folds as random blocks and seeds as
sub-samples). The config x fold interaction mean square, pooled over all confirmed configs, is
the error of every comparison: its expectation is ``var g + var e / M``, exactly what a
difference needs, with ``(C - 1)(K - 1)`` degrees of freedom (10 for 5 candidates, a baseline
and 3 folds) instead of the ``K - 1`` a single pair's fold means would leave. Pooling assumes
the configs' noise is alike, the usual assumption of Dunnett's and Tukey's methods. With one
fold every run saw the same identities: the unit is then the run (the seed), and each pair's
identity-bootstrap variance is added, as before.

Selection. The verdict speaks of the winner, the largest of ``C`` noisy means, so a
per-comparison interval would say "better" for one of five equal candidates far more often
than 5 %. The intervals on the ``C - 1`` differences to the reference baseline are
*simultaneous* (Dunnett's many-to-one method: the ``1 - level`` quantile of the largest of
``C - 1`` |t| statistics that share the baseline, correlation 1/2, computed here by
quadrature), so all of them cover their true differences together with probability ``level``,
and whichever config wins, "better than the baseline" (lower bound above 0) is said falsely at
most ``1 - level`` of the time, in practice about half that (one side of the two). Choosing on some seeds and verifying on others does not
work here: the identity effect ``g`` is shared by every seed of a fold, so a winner chosen on
seed 1 keeps its lucky folds on seeds 2 and 3; splitting folds instead would leave K = 1 or 2.
Bonferroni would give the same guarantee with a wider interval (its critical value ignores the
shared baseline). ``benchmarks/decisions_verdict.py`` measures the error rate, the coverage and
the power of this function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

LEVEL = 0.95
_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(40)
_U, _U_WEIGHTS = np.polynomial.legendre.leggauss(64)
_U, _U_WEIGHTS = (_U + 1) / 2, _U_WEIGHTS / 2  # on (0, 1)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its interval; ``comparisons`` > 1 marks a simultaneous one."""

    diff: float
    se: float
    ci: tuple[float, float]
    p: float  # adjusted for the comparisons when there are several
    df: int
    n: int  # paired runs behind it
    comparisons: int = 1

    def record(self) -> dict:
        return {
            "diff": self.diff,
            "se": self.se,
            "ci": list(self.ci),
            "p": self.p,
            "df": self.df,
            "n": self.n,
            "comparisons": self.comparisons,
        }


def max_abs_t_cdf(c: float, comparisons: int, df: float) -> float:
    """P(max |T_i| <= c) for ``comparisons`` t statistics against one shared control.

    The T_i share the control's mean (correlation 1/2) and the error estimate (``df``);
    ``df=inf`` gives the normal case. One comparison is the two-sided t distribution.
    """
    return float(_cdf(np.array([c], dtype=float), comparisons, df)[0])


def _cdf(c: np.ndarray, comparisons: int, df: float) -> np.ndarray:
    """``max_abs_t_cdf`` for an array of ``c`` (c: (n,) -> (n,))."""
    c = np.maximum(c, 0.0)
    if comparisons == 1:
        tail = special.stdtr(df, -c) if math.isfinite(df) else special.ndtr(-c)
        return 1 - 2 * tail
    # E over the control's standardised noise (Gauss-Hermite) and the error scale
    # sqrt(chi2_df / df) (Gauss-Legendre on its probability scale), vectorised
    w = (math.sqrt(2.0) * _NODES)[None, :, None]
    weights = (_WEIGHTS / math.sqrt(math.pi))[:, None]
    s, u_weights = _scale_nodes(df)
    r = math.sqrt(0.5)
    cs = c[:, None, None] * s[None]
    inside = special.ndtr((cs + r * w) / r) - special.ndtr((-cs + r * w) / r)
    value = np.einsum("nhu,h,u->n", inside**comparisons, weights[:, 0], u_weights)
    return np.clip(value, 0.0, 1.0)


@lru_cache(maxsize=64)
def _scale_nodes(df: float) -> tuple[np.ndarray, np.ndarray]:
    if not math.isfinite(df):
        return np.ones((1, 1)), np.ones(1)
    return np.sqrt(sps.chi2.ppf(_U, df) / df)[None, :], _U_WEIGHTS


@lru_cache(maxsize=256)
def critical_value(comparisons: int, df: float, level: float = LEVEL) -> float:
    """The two-sided simultaneous ``level`` quantile of the largest |t| (Dunnett)."""
    if comparisons == 1:
        return (
            float(sps.t.ppf(0.5 + level / 2, df))
            if math.isfinite(df)
            else float(sps.norm.ppf(0.5 + level / 2))
        )
    return float(
        optimize.brentq(lambda c: max_abs_t_cdf(c, comparisons, df) - level, 0.1, 1e3, xtol=1e-6)
    )


def pooled_error(unit_means: np.ndarray) -> tuple[float, int]:
    """Mean square of the config x unit interaction of ``unit_means`` and its df.

    unit_means: (configs, units) each config's mean run value per unit of replication (a fold,
    or a run when there is one fold). The variance of a difference of two configs' means is
    ``2 * ms / units``.
    """
    y = np.asarray(unit_means, dtype=float)
    c, u = y.shape
    df = (c - 1) * (u - 1)
    if df < 1:
        return float("nan"), 0
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    return float(np.sum(resid**2) / df), df


def _within_one(lo: float, hi: float) -> tuple[float, float]:
    """An interval for a difference of two mAPs, which lies in [-1, 1]."""
    return max(lo, -1.0), min(hi, 1.0)


def against_reference(
    unit_means: np.ndarray,
    reference: int,
    runs: int,
    level: float = LEVEL,
    extra_var: dict[int, float] | None = None,
) -> dict[int, Difference]:
    """Simultaneous ``level`` intervals for every config's mean minus the reference's.

    unit_means: (configs, units) as in ``pooled_error``; runs: paired runs per config (for the
    record); extra_var: per config, a variance the runs cannot show (one fold's identities).
    Keys are row indices of ``unit_means``; the reference has none.
    """
    y = np.asarray(unit_means, dtype=float)
    ms, df = pooled_error(y)
    others = [i for i in range(len(y)) if i != reference]
    if df < 1 or not others:
        return {}
    crit = critical_value(len(others), df, level)
    means = y.mean(axis=1)
    diffs = np.array([means[i] - means[reference] for i in others])
    ses = np.sqrt([2 * ms / y.shape[1] + (extra_var or {}).get(i, 0.0) for i in others])
    ps = _p(diffs, ses, lambda t: 1 - _cdf(t, len(others), df))
    return {
        i: Difference(d, se, _within_one(d - crit * se, d + crit * se), p, df, runs, len(others))
        for i, d, se, p in zip(others, diffs.tolist(), ses.tolist(), ps.tolist(), strict=True)
    }


def between(
    unit_means: np.ndarray, a: int, b: int, runs: int, level: float = LEVEL, extra_var: float = 0.0
) -> Difference | None:
    """One unadjusted interval for mean(a) - mean(b), with the pooled error of every config."""
    y = np.asarray(unit_means, dtype=float)
    ms, df = pooled_error(y)
    if df < 1:
        return None
    means = y.mean(axis=1)
    d = float(means[a] - means[b])
    se = math.sqrt(2 * ms / y.shape[1] + extra_var)
    q = critical_value(1, df, level)
    p = float(_p(np.array([d]), np.array([se]), lambda t: 2 * special.stdtr(df, -t))[0])
    return Difference(d, se, _within_one(d - q * se, d + q * se), p, df, runs)


def _p(d: np.ndarray, se: np.ndarray, tail) -> np.ndarray:
    """p-values ``tail(|d| / se)``; with no error, 0 for a difference and 1 for none."""
    out = np.where(d != 0, 0.0, 1.0)
    ok = se > 0
    if ok.any():
        out[ok] = tail(np.abs(d[ok]) / se[ok])
    return out


__all__ = [
    "Difference",
    "LEVEL",
    "against_reference",
    "between",
    "critical_value",
    "max_abs_t_cdf",
    "pooled_error",
]
