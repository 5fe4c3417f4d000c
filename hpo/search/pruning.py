"""Pruning: per epoch inside a training run, and between the runs (folds, repeats) of a trial.

Inside a run the callback reports val mAP at step ``offset + epoch + 1`` (epochs spent over
the trial's runs, so run k of every trial is compared at the same steps) and asks the study's
pruner, except during the run's LR warm-up, where low-LR trials only look worse.

Baselines are never pruned, by either pruner: a trial carrying the ``baseline`` user attribute
(every enqueued baseline and every retry of one, ``hpo.fleet.recovery``) reports its values but is
not asked, so it always completes and ``hpo confirm`` can race it.

Between runs a trial is compared with the best complete trial. The best is the maximum of n
noisy trial values, so its values are biased *upward*: for n trials of equal quality, its mean
over T runs is on average ``sigma * e_n / sqrt(T)`` above its true quality (``e_n`` = expected
maximum of n standard normals: 1.54 for 10, 2.16 for 40). A plain paired t test at p<0.05
against it therefore prunes a trial as good as the best far more often than 5 % (measured:
13 % at n=10 and 16 % at n=40 with 3 folds, 26 % and 35 % with 5 folds and three uncorrected
looks). The rule here:

- the reference is the best trial's mean over all its T runs, moved to the runs done so far:
  each run's mean over the complete trials measures its fold effect (same fold and seed for
  every trial), so ``trial's runs - their run means`` is compared with ``best's mean - grand
  mean``. Using all T runs of the best (not only the m it shares) cuts the variance of the
  difference after run 1 from 2 to 1 + 1/T run variances and spreads a lucky run of the best
  over T, so one outlier run cannot decide (paired per run, t-distributed noise pushed the
  rate to 10-12 %; this way 4.6-5.4 %);
- the statistic after m runs is ``z = (difference + sigma * e_n / sqrt(T)) / (sigma *
  sqrt(1/m + 1/T))``: the difference corrected for the selection of the best;
- sigma is the run noise pooled over every complete trial (two-way residual of trials x runs,
  (n-1)(T-1) degrees of freedom), not the trial's own 1-4 differences: a t with 1-2 degrees of
  freedom needs a threshold so far out (t > 6.3 at one degree) that it could only prune trials
  many SDs worse, and it cannot look after the first run at all;
- the threshold comes from simulating this exact rule under the least favourable null: n
  complete trials and the new one all of equal quality (the selection bias is largest then),
  with its looks after runs 1..T-1 taken together (one constant boundary, Pocock-style, on
  the minimum z over the looks). The p reported is the share of simulated null studies whose
  minimum z fell at or below the observed z, and the trial is pruned when it is below 4 %
  (the 5 % target less a margin, ``RUN_ALPHA``). Under normal run noise the statistic does
  not depend on sigma or on the fold effects, so a table over (n, T) serves every study; it
  is computed once per process, seeded (about 0.1 s for 40 trials of 3 runs).

A Wilcoxon signed-rank test (Optuna's ``WilcoxonPruner``) is the distribution-free choice for
paired values, but with 2-4 pairs its exact p cannot fall below 0.25-0.0625, so it would never
prune. With fewer than two complete trials there is no noise estimate and nothing is pruned.
The measured false-prune rate, power and runs saved are in ``benchmarks/decisions_pruning.py``
and docs/benchmarks.md ("Decisions: pruning").

The per-epoch median pruner (``hpo run``'s default) answers another question: is this trial's
best value so far below the median of the earlier trials at this epoch? A run's seed luck (SD
~0.03 on the sample) lasts all its epochs, so a trial as good as the best is below that median
at some epoch in 62-66 % of simulated studies whose configs are all equal, 36-43 % when they
are spread. It stays the default because that error costs a second measurement of a quality the
study already holds, not the study's best: a trial *better* than the best by 2 SD is pruned in
2-6 % of them, and it stops poor trials in the first epochs of the first run, where the rule
above must wait a whole run (30 epochs on rn50/vitb16). ``--pruner runs`` keeps only the
calibrated between-run rule; ``--pruner none`` prunes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import integrate, stats

from hpo.common.attrs import attrs_of
from hpo.common.lines import p_text

# False-prune rate for a trial as good as the best, all looks together: the target is 5 %; the
# rule is calibrated at 4 % so that the calibration's Monte Carlo error and a reference that
# moves between looks (other workers completing trials) keep it under 5 %.
RUN_ALPHA = 0.04
CALIBRATION_DRAWS = 20_000  # simulated null studies per (n, T): rate +- 0.0015
CALIBRATION_SEED = 17
_EXACT_N = 100  # above this many complete trials, n is rounded up to the next grid point
_STORED_PRECISION = 1e-6  # fold_values are rounded to 6 digits
_N_GRID = (125, 150, 200, 250, 300, 400, 500, 700, 1000, 1500, 2000)


def is_baseline(trial: optuna.Trial | FrozenTrial) -> bool:
    """Whether the trial is a baseline of the space (or a retry of one): never pruned."""
    return bool(attrs_of(trial).get("baseline"))


class PruningCallback:
    """``fit()`` callback reporting ``metrics[metric]`` at step ``offset + epoch + 1``.

    ``warmup``: epochs of this run during which the pruner is not asked. ``where`` names the
    run in the prune message (e.g. ``"fold 2/3, "``). A baseline reports but is never asked.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str = "mAP",
        *,
        offset: int = 0,
        warmup: int = 0,
        where: str = "",
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.offset, self.warmup, self.where = offset, warmup, where
        self.last_epoch = 0
        self.exempt = is_baseline(trial)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.last_epoch = epoch + 1
        value = metrics[self.metric]
        self.trial.report(value, step=self.offset + epoch + 1)
        if not self.exempt and epoch >= self.warmup and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at {self.where}epoch {epoch + 1} ({self.metric} {value:.3f})"
            )


@dataclass(frozen=True)
class Reference:
    """What a trial's runs are compared with: the best complete trial, each run's mean over
    the complete trials (the run's fold effect) and the run noise."""

    number: int  # the best complete trial
    values: tuple[float, ...]  # its run values, in run order
    run_means: tuple[float, ...]  # each run's mean over the complete trials
    sigma: float  # run noise SD pooled over the complete trials (two-way residual)
    trials: int  # n: complete trials the best was chosen from

    def expected(self, m: int) -> float:
        """The best trial's value moved to the first ``m`` runs (their fold effects)."""
        return float(np.mean(self.values) - np.mean(self.run_means) + np.mean(self.run_means[:m]))


def run_reference(trials: Sequence[FrozenTrial], runs: int) -> Reference | None:
    """The best of the complete trials that recorded all ``runs`` run values (maximising),
    with the run means and run noise over them; None with fewer than two such trials."""
    rows, numbers = [], []
    for t in trials:
        values = attrs_of(t).get("fold_values") or []
        if t.state == TrialState.COMPLETE and len(values) == runs:
            x = [float(v) for v in values]
            if all(math.isfinite(v) for v in x):
                rows.append(x)
                numbers.append(t.number)
    if len(rows) < 2 or runs < 2:
        return None
    x = np.array(rows)
    best = int(np.argmax(x.mean(axis=1)))
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0) + x.mean()
    sigma = math.sqrt(float((resid**2).sum()) / ((len(x) - 1) * (runs - 1)))
    return Reference(numbers[best], tuple(x[best]), tuple(x.mean(axis=0)), sigma, len(x))


@lru_cache(maxsize=256)
def expected_max(n: int) -> float:
    """E[max of n independent standard normals] (0 for n = 1)."""
    if n <= 1:
        return 0.0
    f = lambda z: z * n * stats.norm.pdf(z) * stats.norm.cdf(z) ** (n - 1)  # noqa: E731
    return float(integrate.quad(f, -12, 12, points=[0.0, 2.0])[0])


def _calibration_n(n: int) -> int:
    if n <= _EXACT_N:
        return n
    return next((g for g in _N_GRID if g >= n), _N_GRID[-1])


def _statistics(
    adjusted: np.ndarray, best: np.ndarray, sigma: np.ndarray, n: int, runs: int
) -> np.ndarray:
    """Selection-corrected z after each run.

    adjusted: (..., m) the trial's run values less each run's mean over the complete trials;
    best: (...) the best trial's mean less the complete trials' grand mean; sigma: (...).
    Returns (..., m).
    """
    m = np.arange(1, adjusted.shape[-1] + 1)
    bias = sigma[..., None] * expected_max(n) / math.sqrt(runs)
    diff = np.cumsum(adjusted, axis=-1) / m - best[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (diff + bias) / (sigma[..., None] * np.sqrt(1.0 / m + 1.0 / runs))


@lru_cache(maxsize=64)
def null_minima(n: int, runs: int) -> np.ndarray:
    """Sorted minimum z over the looks (after runs 1..runs-1) in simulated studies where the
    n complete trials and the new trial are all of equal quality (unit normal run noise)."""
    rng = np.random.default_rng([CALIBRATION_SEED, n, runs])
    block = max(1, 4_000_000 // (n * runs))
    out = []
    for start in range(0, CALIBRATION_DRAWS, block):
        reps = min(block, CALIBRATION_DRAWS - start)
        x = rng.standard_normal((reps, n, runs))
        y = rng.standard_normal((reps, runs))
        means = x.mean(axis=2)
        run_means, grand = x.mean(axis=1), x.mean(axis=(1, 2))
        best = means[np.arange(reps), np.argmax(means, axis=1)] - grand
        resid = x - means[:, :, None] - run_means[:, None, :] + grand[:, None, None]
        sigma = np.sqrt((resid**2).sum(axis=(1, 2)) / ((n - 1) * (runs - 1)))
        z = _statistics((y - run_means)[:, : runs - 1], best, sigma, n, runs)
        out.append(z.min(axis=1))
    return np.sort(np.concatenate(out))


def prune_p(values: Sequence[float], ref: Reference, runs: int) -> tuple[float, float]:
    """(z, p) after ``len(values)`` of ``runs`` runs; p: the share of null studies (the trial
    as good as the best) whose minimum z over all looks is at or below this one."""
    m = len(values)
    # at the 6 digits that trials store their run values with
    adjusted = np.round(np.asarray(values, dtype=float), 6) - np.asarray(ref.run_means[:m])
    best = float(np.mean(ref.values) - np.mean(ref.run_means))
    if ref.sigma <= _STORED_PRECISION:  # noise-free runs: any shortfall is real
        z = -math.inf if adjusted.mean() - best < -_STORED_PRECISION else math.inf
    else:
        z = float(
            _statistics(adjusted, np.asarray(best), np.asarray(ref.sigma), ref.trials, runs)[-1]
        )
    minima = null_minima(_calibration_n(ref.trials), runs)
    p = np.searchsorted(minima, z, side="right") / len(minima)
    return z, float(p)


def prune_reason(values: Sequence[float], ref: Reference | None, runs: int) -> str | None:
    """Why a trial with these first run values (of ``runs``) should stop, or None to go on."""
    m = len(values)
    if ref is None or not 1 <= m < runs:
        return None
    z, p = prune_p(values, ref, runs)
    if p >= RUN_ALPHA:
        return None
    mean, best = float(np.mean(values)), ref.expected(m)
    return (
        f"pruned after run {m}: mean val mAP {mean:.3f} vs {best:.3f} for best trial "
        f"{ref.number} on the same runs (best of {ref.trials}; z={z:.2f}, corrected for that "
        f"selection and {runs - 1} looks, {p_text(p)})"
    )


def between_runs_prune(study: optuna.Study, values: list[float], runs: int) -> str | None:
    """Why the trial should stop after these run values (of ``runs``), or None to go on."""
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        return None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return prune_reason(values, run_reference(trials, runs), runs)
