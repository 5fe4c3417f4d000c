"""The objective: base config + suggestions -> fit() with pruning -> best validation mAP."""

from __future__ import annotations

import gc
import time
import traceback
from typing import Any

import optuna
import torch

from handreid.engine import PreparedData, data_key, fit, prepare_data, resolve_device
from hpo.pruning import PruningCallback
from hpo.space import SearchSpace

METRICS = ("rank1", "rank5", "rank10", "mAP")


class DataPool:
    """Decoded data per data-relevant config, shared by every trial of this process."""

    def __init__(self) -> None:
        self._items: dict[tuple, PreparedData] = {}

    def get(self, cfg) -> PreparedData:
        key = data_key(cfg)
        if key not in self._items:
            self._items[key] = prepare_data(cfg)
        return self._items[key]


class Objective:
    """Callable for ``study.optimize``; one trainer run per trial.

    User attributes written per trial: ``config`` (resolved trainer config), ``rank1``..``mAP``
    of the best epoch, ``best_epoch``, ``epochs_run``, ``seconds``, ``peak_memory_mb``,
    ``status``, and ``error`` for failures.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        device: str | None = None,
        data: DataPool | None = None,
        fit_fn=fit,
    ) -> None:
        self.space = space
        self.device = resolve_device(device)
        self.data = data or DataPool()
        self.fit_fn = fit_fn

    def __call__(self, trial: optuna.Trial) -> float:
        pruning = PruningCallback(trial)
        start = time.perf_counter()
        try:
            cfg = self.space.config(self.space.suggest(trial))
            trial.set_user_attr("config", cfg.to_dict())
            result = self.fit_fn(
                cfg, callbacks=[pruning], device=self.device, data=self.data.get(cfg)
            )
        except optuna.TrialPruned as exc:
            self._record(trial, status="pruned", epochs_run=pruning.last_epoch, start=start)
            raise self._released(exc) from None
        except torch.OutOfMemoryError as exc:
            error = "CUDA out of memory"
            self._record(
                trial, status="oom", epochs_run=pruning.last_epoch, start=start, error=error
            )
            raise self._released(exc) from None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            self._record(
                trial, status="failed", epochs_run=pruning.last_epoch, start=start, error=error
            )
            raise self._released(exc) from None
        try:
            return self._finish(trial, result, start)
        finally:
            result.model = result.data = None
            self._release()

    def _released(self, exc: BaseException) -> BaseException:
        """Drop the traceback's frames (they hold the model, optimiser and batches) and free
        their memory before Optuna records the trial, so a pruned or failed trial leaves the
        device as it found it."""
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        self._release()
        return exc

    def _finish(self, trial: optuna.Trial, result, start: float) -> float:
        peak_mb = round(result.peak_memory_bytes / 2**20, 1)
        if result.status == "diverged":
            self._record(
                trial,
                status="diverged",
                epochs_run=result.epochs_run,
                start=start,
                peak_memory_mb=peak_mb,
            )
            raise optuna.TrialPruned(f"loss diverged (not finite) in epoch {result.epochs_run}")
        self._record(
            trial,
            status=result.status,
            epochs_run=result.epochs_run,
            start=start,
            best_epoch=result.best_epoch + 1,
            peak_memory_mb=peak_mb,
            **{k: float(result.best[k]) for k in METRICS},
        )
        return float(result.best_map)

    def _record(
        self,
        trial: optuna.Trial,
        *,
        status: str,
        epochs_run: int,
        start: float,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        trial.set_user_attr("status", status)
        trial.set_user_attr("epochs_run", epochs_run)
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        if error:
            trial.set_user_attr("error", error)
        for key, value in extra.items():
            trial.set_user_attr(key, value)

    def _release(self) -> None:
        """Free the model and optimiser now, not when the next trial happens to collect them."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


__all__ = ["DataPool", "Objective", "METRICS"]
