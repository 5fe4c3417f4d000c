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
    df: float  # Satterthwaite's on new identities, so not always whole
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


# --- on confirm identities: identities no decision has seen ----------------------------------


def linearized(identity_ap: dict, names: list[str]) -> np.ndarray:
    """Per-identity terms whose mean is the run's mAP over ``names``, the identities it was
    measured on (``{identity: [AP sum, queries]}``).

    mAP = sum of AP sums / sum of queries is a ratio; its first-order (delta-method) terms
    ``x_i = n (s_i - m q_i) / Q + m`` average to m exactly and carry its identity-sampling
    variance, so that a mean over identities can be treated like any other mean.
    """
    s = np.array([float(identity_ap[k][0]) for k in names])
    q = np.array([float(identity_ap[k][1]) for k in names])
    total = q.sum()
    m = s.sum() / total
    return len(names) * (s - m * q) / total + m


def _crossed(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, variance of the mean and Satterthwaite df of a seeds x identities table whose
    rows (seeds) and columns (identities) are both random draws (crossed random effects)."""
    m, n = x.shape
    grand = float(x.mean())
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    effects = []
    if m > 1:
        effects.append((n * float(np.sum((rows - grand) ** 2)) / (m - 1), m - 1))
    if n > 1:
        effects.append((m * float(np.sum((cols - grand) ** 2)) / (n - 1), n - 1))
    residual = None
    if m > 1 and n > 1:
        resid = x - rows[:, None] - cols[None, :] + grand
        residual = (float(np.sum(resid**2)) / ((m - 1) * (n - 1)), (m - 1) * (n - 1))
    return grand, *_combine(effects, residual, m * n)


def _combine(
    effects: list[tuple[float, float]], residual: tuple[float, float] | None, cells: int
) -> tuple[float, float]:
    """The variance of a mean over ``cells`` from crossed random effects, and its df.

    Each effect's mean square estimates ``residual + (cells on its level) * component``, so the
    variance is ``(sum of effect MS - (k - 1) residual MS) / cells``. An effect whose mean
    square falls below the residual's has its component set to 0 (it is dropped together
    with one residual term); the df are Satterthwaite's for what is left.
    """
    if residual is None:
        if len(effects) != 1:
            return float("nan"), 0.0
        ms, df = effects[0]
        return ms / cells, float(df)
    kept = [(ms, df) for ms, df in effects if ms > residual[0]]
    parts = [(ms, df, 1.0) for ms, df in kept]
    if kept:
        parts.append((residual[0], residual[1], -(len(kept) - 1.0)))
    else:
        parts = [(residual[0], residual[1], 1.0)]
    total = sum(sign * ms for ms, _, sign in parts)
    denom = sum((sign * ms) ** 2 / df for ms, df, sign in parts if df > 0 and sign != 0)
    return total / cells, (total**2 / denom if denom > 0 else math.inf)


def new_identities(
    terms: np.ndarray, reference: int, level: float = LEVEL
) -> dict[int, Difference]:
    """Simultaneous ``level`` intervals for every config's mAP on new identities minus the
    reference's, from runs measured on identities no decision has seen.

    terms: (configs, seeds, identities), each run's ``linearized`` per-identity terms; every
    config is measured on the same identities with the same seeds. The model is

        y[c, s, i] = mu[c] + a[s] + b[i] + (ab)[s, i] + u[c, s] + v[c, i] + e[c, s, i]

    with seeds and identities both random: u is a config's luck with a seed (it lasts over all
    identities), v how the config fares on one person's hands (new identities redraw it), e the
    rest. A difference of two configs has the variance ``2 (var u / M + var v / n + var e /
    (M n))``; the three-way analysis of variance gives it as ``2 (MS_CS + MS_CI - MS_CSI) /
    (M n)``, pooled over all configs like ``pooled_error`` (their noise alike), with
    Satterthwaite's df. The selection of the winner among the configs is covered as in
    ``against_reference``: Dunnett's many-to-one critical value.
    """
    y = np.asarray(terms, dtype=float)
    c, m, n = y.shape
    others = [i for i in range(c) if i != reference]
    if not others or m < 1 or n < 2:
        return {}
    var, df = _config_terms(y)
    if not (math.isfinite(var) and df > 0):
        return {}
    crit = critical_value(len(others), df, level)
    means = y.mean(axis=(1, 2))
    se = math.sqrt(2 * var)
    diffs = np.array([means[i] - means[reference] for i in others])
    ses = np.full(len(others), se)
    ps = _p(diffs, ses, lambda t: 1 - _cdf(t, len(others), df))
    return {
        i: Difference(d, se, _within_one(d - crit * se, d + crit * se), p, df, m, len(others))
        for i, d, p in zip(others, diffs.tolist(), ps.tolist(), strict=True)
    }


def _config_terms(y: np.ndarray) -> tuple[float, float]:
    """Half the variance of a difference of two configs' means (``var u / M + var v / n +
    var e / (M n)``) and its df, from the config x seed, config x identity and three-way mean
    squares of ``y`` (configs, seeds, identities)."""
    c, m, n = y.shape
    if c < 2:
        return float("nan"), 0.0
    g = y.mean()
    c_, s_, i_ = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    cs, ci, si = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    effects = []
    if m > 1:
        r = cs - c_[:, None] - s_[None, :] + g
        effects.append((n * float(np.sum(r**2)) / ((c - 1) * (m - 1)), (c - 1) * (m - 1)))
    r = ci - c_[:, None] - i_[None, :] + g
    effects.append((m * float(np.sum(r**2)) / ((c - 1) * (n - 1)), (c - 1) * (n - 1)))
    residual = None
    if m > 1:
        r = (
            y
            - cs[:, :, None]
            - ci[:, None, :]
            - si[None, :, :]
            + c_[:, None, None]
            + s_[None, :, None]
            + i_[None, None, :]
            - g
        )
        df = (c - 1) * (m - 1) * (n - 1)
        residual = (float(np.sum(r**2)) / df, df)
    return _combine(effects, residual, m * n)


def new_identities_between(
    terms: np.ndarray, a: int, b: int, level: float = LEVEL
) -> Difference | None:
    """One unadjusted interval for mean(a) - mean(b) on new identities, with the error pooled
    over every config of ``terms`` (configs, seeds, identities) as in ``new_identities``."""
    y = np.asarray(terms, dtype=float)
    var, df = _config_terms(y)
    if not (math.isfinite(var) and df > 0):
        return None
    means = y.mean(axis=(1, 2))
    d, se = float(means[a] - means[b]), math.sqrt(2 * var)
    q = critical_value(1, df, level)
    p = float(_p(np.array([d]), np.array([se]), lambda t: 2 * special.stdtr(df, -t))[0])
    return Difference(d, se, _within_one(d - q * se, d + q * se), p, df, y.shape[1])


def on_new_identities(terms: np.ndarray, level: float = LEVEL) -> tuple[float, float, tuple]:
    """One config's mean over its runs on new identities, its SE and ``level`` interval
    (seeds x identities, both random: ``_crossed``); terms: (seeds, identities)."""
    mean, var, df = _crossed(np.asarray(terms, dtype=float))
    if not (math.isfinite(var) and df > 0):
        return mean, float("nan"), (float("nan"), float("nan"))
    se = math.sqrt(var)
    q = critical_value(1, df, level)
    return mean, se, (max(mean - q * se, 0.0), min(mean + q * se, 1.0))


def seeds_by_splits(
    x: np.ndarray, level: float = LEVEL, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float, float, tuple[float, float]]:
    """Mean, SE, df and ``level`` interval (cut to ``bounds``) of a (seeds, splits) table of a
    test metric: every seed's model is evaluated on the same query/gallery splits, so seeds and
    splits are crossed random effects (``_crossed``). One row (no seed to vary: a floor) leaves
    the splits alone; one column, the seeds alone."""
    x = np.asarray(x, dtype=float)
    mean, var, df = _crossed(x)
    if not (math.isfinite(var) and df > 0):
        return mean, float("nan"), 0.0, (float("nan"), float("nan"))
    se = math.sqrt(max(var, 0.0))
    q = critical_value(1, df, level)
    return mean, se, float(df), (max(mean - q * se, bounds[0]), min(mean + q * se, bounds[1]))


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
    "linearized",
    "max_abs_t_cdf",
    "new_identities",
    "new_identities_between",
    "on_new_identities",
    "pooled_error",
]
