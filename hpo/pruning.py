"""Pruning: per epoch inside a training run, and between the runs (folds, repeats) of a trial.

Inside a run the callback reports val mAP at step ``offset + epoch + 1`` (epochs spent over
the trial's runs, so run k of every trial is compared at the same steps) and asks the study's
pruner, except during the run's LR warm-up, where low-LR trials only look worse.

Between runs the trial is compared with the best complete trial on the same runs (same
validation fold, same training seed) by a one-sided paired t test on the run values. A
Wilcoxon signed-rank test (Optuna's ``WilcoxonPruner``) is the distribution-free choice for
this shape, but its exact p-value cannot fall below 0.25 with 2 pairs or 0.125 with 3, so
with the 3-5 folds a study affords it would never prune; the t test uses the size of the
differences, which is what a few folds carry. The threshold is strict (0.05) because the best
trial's values are themselves the maximum of many noisy trials (biased upward).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from handreid.stats import paired_t_less

RUN_P_THRESHOLD = 0.05


class PruningCallback:
    """``fit()`` callback reporting ``metrics[metric]`` at step ``offset + epoch + 1``.

    ``warmup``: epochs of this run during which the pruner is not asked. ``where`` names the
    run in the prune message (e.g. ``"fold 2/3, "``).
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

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.last_epoch = epoch + 1
        value = metrics[self.metric]
        self.trial.report(value, step=self.offset + epoch + 1)
        if epoch >= self.warmup and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at {self.where}epoch {epoch + 1} ({self.metric} {value:.4f})"
            )


def best_run_values(study: optuna.Study, n: int) -> tuple[int, list[float]] | None:
    """(number, first ``n`` run values) of the best complete trial that recorded its runs."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    values = best.user_attrs.get("fold_values")
    if best.state != TrialState.COMPLETE or not values or len(values) < n:
        return None
    return best.number, [float(v) for v in values[:n]]


def between_runs_prune(study: optuna.Study, values: list[float]) -> str | None:
    """Why the trial should stop after these run values, or None to go on."""
    if len(values) < 2:
        return None
    best = best_run_values(study, len(values))
    if best is None:
        return None
    number, reference = best
    p = paired_t_less(values, reference)
    if p < RUN_P_THRESHOLD:
        mean = sum(values) / len(values)
        ref = sum(reference) / len(reference)
        return (
            f"pruned after run {len(values)}: mean val mAP {mean:.4f} vs {ref:.4f} for best "
            f"trial {number} on the same runs (paired t test, one-sided p={p:.3f})"
        )
    return None
