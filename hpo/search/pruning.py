"""Pruning: per epoch inside a training run, and between the runs (folds, repeats) of a trial.

Inside a run the callback reports val mAP at step ``offset + epoch + 1`` (epochs spent over
the trial's runs, so run k of every trial is compared at the same steps) and asks the study's
pruner, except during the run's LR warm-up, where low-LR trials only look worse.

Baselines are never pruned, by either pruner: a trial carrying the ``baseline`` user attribute
(every enqueued baseline and every retry of one, ``hpo.fleet.recovery``) reports its values but is
not asked, so it always completes and ``hpo confirm`` can race it.

Between runs a trial is compared with the top of the complete trials. Their values are biased
*upward* by their selection: for n trials of equal quality the best one's mean over T runs is
on average ``sigma * e_n / sqrt(T)`` above its true quality (``e_n`` = expected maximum of n
standard normals: 1.54 for 10, 2.16 for 40). The rule here:

- the reference level is the mean of the top third of the complete trials (the ``ceil(n/3)``
  highest trial means), moved to the runs done so far: each run's mean over the complete
  trials measures its fold effect (same fold and seed for every trial), so ``trial's runs -
  their run means`` is compared with ``top-third mean - grand mean``. The top third, not the
  best trial alone: the maximum of n trials follows its noisiest, luckiest member, so where
  configs differ in noise (lognormal SD, sdlog 0.5) the best alone pruned 7-12 % of trials as
  good as it in studies of complete trials and 10-17 % as studies ran; a third of the trials
  averages that luck out;
- each run counts at most ``FLOOR`` (2) sigma below its run's mean: one collapsed run (an
  outlier of the run, not the config: 5 % of runs 5 SDs down made the rule prune 6-11 % of
  equal trials) cannot decide alone, while a trial low on every run still falls through (two
  runs of a trial 4 SDs worse are enough). After one run the rule seldom prunes: a single run
  far down cannot tell a poor config from a collapsed run (the per-epoch pruner stops broken
  configs within their first run);
- the statistic after m runs is ``z = (mean of the m floored differences - level + sigma *
  t_{n,j} / sqrt(T)) / (sigma * sqrt(1/m + 1/(j T)))``, ``t_{n,j}`` the expected mean of the
  top j of n standard normals (j = ceil(n/3)): the difference corrected for that selection.
  The least favourable case is every trial of the same quality (a worse trial can only lower
  the top third), which is the case simulated below;
- sigma is the run noise pooled over every complete trial (two-way residual of trials x runs,
  (n-1)(T-1) degrees of freedom), not the trial's own 1-4 differences. Every run of a trial
  trains with a seed of its own (``hpo.search.objective.run_configs``), so a config's luck
  with a seed (config x seed interaction) is part of each run's own noise, independent
  between runs, and of this residual. With one seed shared by a trial's folds it was a
  trial-level error that no residual shows: at SD 0.02 of a run SD of 0.03, trials as good as
  the best were pruned 23-69 % of the time;
- the threshold comes from simulating the study as it runs (``SequentialNull``): equal trials
  arrive one at a time, each judged by this very rule after runs 1..T-1 against the trials
  complete so far, and only the ones it keeps join them (a pruned trial leaves no values in the
  reference, so the complete trials are a selected set). At each n the threshold keeps the
  share of arriving equal trials pruned at 4 % (``RUN_ALPHA``, the 5 % target less a margin),
  counted over every trial a study runs at that n, so a study that happens to prune many (a
  tight reference) counts with all of them, and a fresh trial's own chance at 4 % as well; one
  constant boundary over the looks, Pocock-style. Two such studies run side by side, one with
  the same noise SD for every config and one with a lognormal SD per config (sdlog
  ``NOISE_SDLOG`` = 0.5), and the lower threshold of the two holds. Calibrated on complete
  trials alone, the rule pruned 5-7 % of fresh equal trials as studies ran, and 7-8 % of all
  the equal trials those studies ran. The p reported is
  the larger share of fresh null trials at or below the observed z (below 0.04 for any pruned
  trial). The statistic does not depend on the noise's scale or on the fold effects, so one
  table per T serves every study; it is computed once per process, seeded, as far in n as a
  study asks (about 1 s for 40 trials of 3 runs); beyond 100 complete trials n = 100's table
  serves (measured at 200 and 300 trials: 2-5 %).

With a study's trials all of equal quality, measured (``benchmarks/decisions_pruning.py``,
K = 3 and 5 runs, 10 and 40 complete trials, each stress alone, 2,000 studies per cell): a
trial as good as the best is pruned 1.4-4.5 % of the time under normal run noise, config x
seed luck, per-config noise and collapsed runs, in studies of complete trials and as studies
run (also with one more trial completing during each of its runs), against 4-69 % before.
A trial 2 SDs worse is pruned 70-72 % of the time with K = 3 (72-77 % before) and 96-97 % with
K = 5 (92-93 % before). A Wilcoxon signed-rank test (Optuna's ``WilcoxonPruner``) is the distribution-free
choice for paired values, but with 2-4 pairs its exact p cannot fall below 0.25-0.0625, so it
would never prune. With fewer than two complete trials there is no noise estimate and nothing
is pruned.

The per-epoch pruner (``hpo run``'s default ``median``, ``FoldMedianPruner``) answers another
question: is this trial below the median of the other trials at the same epoch of the same run?
Runs are compared with the same run only: Optuna's ``MedianPruner`` took a trial's best over
*all* its earlier steps against the others' values at the current step, so a poor run after an
easier fold was hidden by that fold's values, and a good run after a harder one was judged
against values its earlier fold could not reach. A run's seed luck (SD ~0.03 on the sample)
lasts all its epochs, so every run is a fresh chance to fall below the median: compared per run
alone and stopped at the first epoch below, a trial 2 SDs *better* than the best was stopped
17-19 % of the time with 3 folds (6-7 % with one run; Optuna's pruner 6-9 %). So the score
averages the run so far with the trial's earlier runs, and a trial stops only after several
epochs below in a row (a sixth of the run's epochs, at least 3: ``hpo.search.study.make_pruner``).
Trials that a pruner stopped earlier in the run still count, at the best they had reached: the
median of the survivors alone rises epoch by epoch, and in studies that ran with it about half
of the trials 2 SDs better were stopped. It stays the default although it stops 50-70 % of the
trials as good as the best where all trials are equal (23-35 % where they are spread; Optuna's
pruner 63-75 % and 33-47 %), because that error costs a second measurement of a quality the
study already holds, not the study's best: a trial 2 SDs better is stopped 0.3-3.3 % of the time
(K = 1 and 3, 8 epochs, 10 and 40 complete trials, with the rule above between runs), and it
stops poor trials in the first epochs of the first run, where the rule above must wait for two
runs. ``--pruner runs`` keeps only the calibrated between-run rule; ``--pruner none`` prunes
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from hpo.common.attrs import attrs_of
from hpo.common.lines import p_text

# False-prune rate for a trial as good as the best, all looks together: the target is 5 %; the
# rule is calibrated at 4 % so that the calibration's Monte Carlo error and a reference that
# moves between looks (other workers completing trials) keep it under 5 %.
RUN_ALPHA = 0.04
CALIBRATION_DRAWS = 20_000  # simulated studies per T and noise model: rate +- 0.0015
CALIBRATION_SEED = 17
TOP_SHARE = 3  # the reference is the top 1/TOP_SHARE of the complete trials
FLOOR = 2.0  # a run counts at most FLOOR run SDs below its run's mean
NOISE_SDLOG = 0.5  # per-config noise SD spread (lognormal) of the second calibration model
_NULL_SDLOGS = (0.0, NOISE_SDLOG)
_EXACT_N = 100  # above this many complete trials, n = 100's threshold serves
_MAX_DRAWS = 50  # equal trials a simulated study draws at one n before it keeps one anyway
_STORED_PRECISION = 1e-6  # fold_values are rounded to 6 digits
_GRID = np.linspace(-9.0, 9.0, 3601)


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
        # 6 decimals, as run values are stored (a pruned trial's value is its last report)
        self.trial.report(round(value, 6), step=self.offset + epoch + 1)
        if not self.exempt and epoch >= self.warmup and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at {self.where}epoch {epoch + 1} ({self.metric} {value:.3f})"
            )


# --- per epoch: the median of the same run ----------------------------------------------------


class FoldMedianPruner(optuna.pruners.BasePruner):
    """Median pruning aligned by run and epoch: at step ``k * epochs + e`` (epoch e of run k,
    as ``PruningCallback`` reports it) a trial's score is its best value over epochs 1..e of
    run k, averaged with its run values (best epoch) of runs 0..k-1; it stops when that score
    has been worse than the median of the other trials' scores at the same run and epoch at
    ``patience`` checked epochs of run k in a row (at every checked epoch of a run that has
    fewer).

    Every value is compared only with other trials' values of the same run (fold and seed)
    and epoch, so fold effects cancel; the earlier runs enter as whole runs, so a good trial's
    one unlucky run (seed luck lasts all the epochs of a run) is weighed against its other
    runs. The other trials are the complete and pruned ones that started run k: one pruned
    before epoch e of run k counts with its best when it stopped, below the median then (only
    the trials still running at epoch e would make each epoch's median the median of the
    previous epoch's survivors, which rises epoch by epoch). Nothing is pruned before
    ``n_startup_trials`` trials are complete, nor at epochs of a run before ``n_warmup_steps``
    (the epoch within the run, 1-based, as Optuna's ``n_warmup_steps`` is for the first run).
    A trial whose values so far are all NaN is pruned, as Optuna's median pruner does.
    """

    def __init__(
        self,
        epochs: int,
        *,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 0,
        patience: int = 3,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        if n_startup_trials < 0 or n_warmup_steps < 0 or patience < 1:
            raise ValueError("n_startup_trials, n_warmup_steps >= 0 and patience >= 1 required")
        self.epochs = int(epochs)
        self.n_startup_trials = int(n_startup_trials)
        self.n_warmup_steps = int(n_warmup_steps)
        self.patience = int(patience)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < 1:
            return False
        run, epoch = divmod(step - 1, self.epochs)
        start = max(self.n_warmup_steps, 1)  # the first checked epoch of a run
        patience = max(min(self.patience, self.epochs - start + 1), 1)
        checks = range(epoch + 2 - patience, epoch + 2)  # 1-based epochs of run k
        if checks.start < start:
            return False
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        if complete == 0 or complete < self.n_startup_trials:
            return False
        maximize = study.direction != optuna.study.StudyDirection.MINIMIZE
        others = [t.intermediate_values for t in trials if t.number != trial.number]
        for e in checks:
            last = run * self.epochs + e
            mine = run_score(trial.intermediate_values, run, last, self.epochs, maximize)
            if mine is None:
                return False
            if math.isnan(mine):
                return True
            scores = [
                score
                for values in others
                if (score := run_score(values, run, last, self.epochs, maximize)) is not None
                and not math.isnan(score)
            ]
            if not scores:
                return False
            median = float(np.median(scores))
            if (mine >= median) if maximize else (mine <= median):
                return False
        return True


def run_score(
    values: dict[int, float], run: int, last: int, epochs: int, maximize: bool
) -> float | None:
    """A trial's ``FoldMedianPruner`` score at step ``last`` of run ``run``: the mean of its
    run values (best epoch) of the earlier runs and its best in run ``run`` up to ``last``.
    None if it has no value in one of those runs; NaN if one of them has only NaN."""
    bests = [run_best(values, r * epochs + 1, (r + 1) * epochs, maximize) for r in range(run)]
    bests.append(run_best(values, run * epochs + 1, last, maximize))
    if any(b is None for b in bests):
        return None
    return float(np.mean(bests))


def run_best(values: dict[int, float], first: int, last: int, maximize: bool) -> float | None:
    """The best of ``values`` at steps ``first..last`` (None without any; NaN if all are)."""
    seen = [float(v) for s, v in values.items() if first <= s <= last]
    if not seen:
        return None
    finite = [v for v in seen if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite) if maximize else min(finite)


# --- between runs: the top third of the complete trials ---------------------------------------


@dataclass(frozen=True)
class Reference:
    """What a trial's runs are compared with: the complete trials' top third, the best of
    them, each run's mean over the complete trials (the run's fold effect) and the run noise."""

    number: int  # the best complete trial
    values: tuple[float, ...]  # its run values, in run order
    run_means: tuple[float, ...]  # each run's mean over the complete trials
    sigma: float  # run noise SD pooled over the complete trials (two-way residual)
    trials: int  # n: complete trials
    level: float  # mean of the top ceil(n/3) trial means, less the grand mean

    @property
    def top(self) -> int:
        """How many trials the reference level averages."""
        return int(top_count(self.trials))

    def expected(self, m: int) -> float:
        """The best trial's value moved to the first ``m`` runs (their fold effects)."""
        return float(np.mean(self.values) - np.mean(self.run_means) + np.mean(self.run_means[:m]))


def top_count(n):
    """j = ceil(n / TOP_SHARE), at least 1: how many of n complete trials make the reference."""
    return np.maximum(1, -(-np.asarray(n) // TOP_SHARE))


def run_reference(trials: Sequence[FrozenTrial], runs: int) -> Reference | None:
    """The top of the complete trials that recorded all ``runs`` run values (maximising), with
    the run means and run noise over them; None with fewer than two such trials.

    sigma is the two-way (trials x runs) residual: what is left of a run value after its
    trial's mean and its run's mean over the trials. A run's fold and seed effects shared by
    every trial go into the run mean, a trial's quality into its mean; a config's luck with
    the run's training seed is neither, and since every run trains with a seed of its own
    (``run_configs``) it varies from run to run of a trial, so it is in this residual with the
    rest of the run noise."""
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
    means = x.mean(axis=1)
    best = int(np.argmax(means))
    resid = x - means[:, None] - x.mean(axis=0) + x.mean()
    sigma = math.sqrt(float((resid**2).sum()) / ((len(x) - 1) * (runs - 1)))
    j = int(top_count(len(x)))
    level = float(np.sort(means)[-j:].mean() - x.mean())
    return Reference(numbers[best], tuple(x[best]), tuple(x.mean(axis=0)), sigma, len(x), level)


@lru_cache(maxsize=4096)
def top_mean(n: int, j: int) -> float:
    """E[mean of the j largest of n independent standard normals] (0 for n = 1).

    The top j hold a point z when at most j - 1 of the other n - 1 lie above it, so the
    expected sum of the top j is ``n * integral z phi(z) P(Bin(n-1, 1-Phi(z)) <= j-1) dz``.
    """
    if n <= 1:
        return 0.0
    weight = stats.binom.cdf(j - 1, n - 1, stats.norm.sf(_GRID))
    return float(n / j * np.trapezoid(_GRID * stats.norm.pdf(_GRID) * weight, _GRID))


def expected_max(n: int) -> float:
    """E[max of n independent standard normals] (0 for n = 1)."""
    return top_mean(n, 1)


def _statistics(
    adjusted: np.ndarray, level: np.ndarray, sigma: np.ndarray, n: int, runs: int
) -> np.ndarray:
    """Selection-corrected z after each run.

    adjusted: (..., m) the trial's run values less each run's mean over the complete trials;
    level: (...) the top third's mean less the complete trials' grand mean; sigma: (...).
    Returns (..., m).
    """
    m = np.arange(1, adjusted.shape[-1] + 1)
    j = int(top_count(n))
    sigma = np.asarray(sigma, dtype=float)[..., None]
    floored = np.maximum(adjusted, -FLOOR * sigma)
    bias = sigma * top_mean(int(n), j) / math.sqrt(runs)
    diff = np.cumsum(floored, axis=-1) / m - np.asarray(level)[..., None] + bias
    with np.errstate(divide="ignore", invalid="ignore"):
        return diff / (sigma * np.sqrt(1.0 / m + 1.0 / (j * runs)))


class SequentialNull:
    """Simulated studies of equal trials that grow as a real one does under this rule.

    ``CALIBRATION_DRAWS`` studies per noise model of ``_NULL_SDLOGS`` (a config's noise SD is
    ``exp(sdlog * N(0, 1))``), run side by side. At n complete trials each study is asked
    about one fresh equal trial: the minimum z over its looks, sorted per model, is
    ``minima[n]``; the threshold at n is the lower of the models' ``RUN_ALPHA`` points; then
    each study draws equal trials until one is above the threshold, and that one joins it.
    ``extend(n)`` goes on from where the last call stopped, so the tables do not depend on
    how far any caller asked.
    """

    def __init__(self, runs: int, draws: int = CALIBRATION_DRAWS, seed: int = CALIBRATION_SEED):
        self.runs, self.draws = runs, draws
        self.rng = np.random.default_rng([seed, runs])
        self.sdlog = np.repeat(np.asarray(_NULL_SDLOGS, dtype=float), draws)  # one per study
        studies = self.sdlog.size
        self.cols = np.zeros((studies, runs))  # run sums over the complete trials
        self.squares = np.zeros(studies)  # sum of squared run values
        self.row_squares = np.zeros(studies)  # sum of squared trial means
        self.rows = np.zeros((studies, 16))  # trial means
        self.n = 0
        self.minima: dict[int, np.ndarray] = {}  # n -> (models, draws), sorted per model
        self.thresholds: dict[int, float] = {}
        for _ in range(2):  # with fewer than two complete trials nothing is judged
            self._add(self._trials(np.arange(studies)))

    def _trials(self, studies: np.ndarray) -> np.ndarray:
        """(len(studies), runs): run values of one equal trial per study, less its true mean."""
        scale = np.exp(self.sdlog[studies] * self.rng.standard_normal(studies.size))
        return scale[:, None] * self.rng.standard_normal((studies.size, self.runs))

    def _add(self, x: np.ndarray) -> None:
        if self.n == self.rows.shape[1]:
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)], axis=1)
        means = x.mean(axis=1)
        self.cols += x
        self.squares += (x**2).sum(axis=1)
        self.row_squares += means**2
        self.rows[:, self.n] = means
        self.n += 1

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(run means, top-third level, sigma) of every study at its n complete trials."""
        n, runs = self.n, self.runs
        run_means = self.cols / n
        grand = run_means.mean(axis=1)
        ss = (
            self.squares
            - runs * self.row_squares
            - n * (run_means**2).sum(axis=1)
            + n * runs * grand**2
        )
        sigma = np.sqrt(np.maximum(ss, 0.0) / ((n - 1) * (runs - 1)))
        j = int(top_count(n))
        top = -np.partition(-self.rows[:, :n], j - 1, axis=1)[:, :j]
        return run_means, top.mean(axis=1) - grand, sigma

    def _minimum(self, x: np.ndarray, state, studies: np.ndarray) -> np.ndarray:
        run_means, level, sigma = (a[studies] for a in state)
        adjusted = (x - run_means)[:, : self.runs - 1]
        return _statistics(adjusted, level, sigma, self.n, self.runs).min(axis=1)

    def extend(self, n: int) -> None:
        """Tables for every number of complete trials up to ``n``."""
        models, draws = len(_NULL_SDLOGS), self.draws
        k = math.ceil(RUN_ALPHA * draws)
        allowed = math.floor(RUN_ALPHA * draws / (1 - RUN_ALPHA))  # pruned per kept, x draws
        everyone = np.arange(self.sdlog.size)
        model = everyone // draws
        while self.n <= n:
            state = self._state()
            x = self._trials(everyone)
            z = self._minimum(x, state, everyone)
            minima = np.sort(z.reshape(models, draws), axis=1)
            self.minima[self.n] = minima
            cut = float(minima[:, k - 1].min())  # a fresh trial: RUN_ALPHA of them pruned
            # Every study draws trials until one is at or above ``cut``. A study's running
            # maximum of its draws' minimum z stays below a lower cut c for as many draws as
            # c would prune before it keeps one, so counting those maxima below c counts the
            # trials c prunes, heavy-pruning studies with all their trials.
            rounds, need, top = [(everyone, x, z)], everyone, z
            below: list[list[np.ndarray]] = [[] for _ in range(models)]
            while True:
                low = top < cut
                need, top = need[low], top[low]
                for m in range(models):
                    below[m].append(top[model[need] == m])
                if not need.size or len(rounds) == _MAX_DRAWS:
                    break
                x = self._trials(need)
                z = self._minimum(x, state, need)
                rounds.append((need, x, z))
                top = np.maximum(top, z)
            for m in range(models):  # pruned / (pruned + kept) <= RUN_ALPHA over the studies
                counted = np.sort(np.concatenate(below[m]))
                if counted.size > allowed:
                    cut = min(cut, float(counted[allowed]))
            self.thresholds[self.n] = cut
            kept = np.zeros_like(self.cols)
            done = np.zeros(everyone.size, dtype=bool)
            for studies, x, z in rounds:  # each study keeps its first trial at or above cut
                ok = ~done[studies] & (z >= cut)
                kept[studies[ok]] = x[ok]
                done[studies[ok]] = True
            studies, x, _ = rounds[-1]  # one that pruned _MAX_DRAWS in a row: its last
            kept[studies[~done[studies]]] = x[~done[studies]]
            self._add(kept)

    def p(self, n: int, z: float) -> float:
        """The larger share, over the noise models, of null trials at n whose minimum z is at or
        below ``z``."""
        self.extend(n)
        return max(np.searchsorted(m, z, side="right") / m.size for m in self.minima[n])


@lru_cache(maxsize=16)
def sequential_null(runs: int) -> SequentialNull:
    """The calibration of T = ``runs`` (one per process, extended as studies grow)."""
    return SequentialNull(runs)


def prune_p(values: Sequence[float], ref: Reference, runs: int) -> tuple[float, float]:
    """(z, p) after ``len(values)`` of ``runs`` runs; p: the share of null trials (as good as
    the best, in a study grown under this rule) whose minimum z over all looks is at or below
    this one."""
    m = len(values)
    # at the 6 digits that trials store their run values with
    adjusted = np.round(np.asarray(values, dtype=float), 6) - np.asarray(ref.run_means[:m])
    if ref.sigma <= _STORED_PRECISION:  # noise-free runs: any shortfall is real
        z = -math.inf if adjusted.mean() - ref.level < -_STORED_PRECISION else math.inf
    else:
        z = float(
            _statistics(adjusted, np.asarray(ref.level), np.asarray(ref.sigma), ref.trials, runs)[
                -1
            ]
        )
    return z, sequential_null(runs).p(min(ref.trials, _EXACT_N), z)


def threshold(n: int, runs: int) -> float:
    """The boundary on z with n complete trials of ``runs`` runs: the rule prunes below it."""
    null = sequential_null(runs)
    n = min(n, _EXACT_N)
    null.extend(n)
    return null.thresholds[n]


def prune_reason(values: Sequence[float], ref: Reference | None, runs: int) -> str | None:
    """Why a trial with these first run values (of ``runs``) should stop, or None to go on."""
    m = len(values)
    if ref is None or not 1 <= m < runs:
        return None
    z, p = prune_p(values, ref, runs)
    if not z < threshold(ref.trials, runs):
        return None
    mean, best = float(np.mean(values)), ref.expected(m)
    return (
        f"pruned after run {m}: mean val mAP {mean:.3f} vs {best:.3f} for best trial "
        f"{ref.number} on the same runs (judged against the top {ref.top} of {ref.trials} "
        f"complete trials: z={z:.2f}, corrected for that selection and {runs - 1} looks, "
        f"{p_text(p)})"
    )


def between_runs_prune(study: optuna.Study, values: list[float], runs: int) -> str | None:
    """Why the trial should stop after these run values (of ``runs``), or None to go on."""
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        return None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return prune_reason(values, run_reference(trials, runs), runs)
