"""The pruning callback: report val mAP each epoch, ask the pruner, stop the trial."""

from __future__ import annotations

import optuna


class PruningCallback:
    """``fit()`` callback reporting ``metrics[metric]`` at step ``epoch + 1`` (epochs spent)."""

    def __init__(self, trial: optuna.Trial, metric: str = "mAP") -> None:
        self.trial = trial
        self.metric = metric
        self.last_epoch = 0

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.last_epoch = epoch + 1
        self.trial.report(metrics[self.metric], step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {epoch + 1} ({self.metric} {metrics[self.metric]:.4f})"
            )
