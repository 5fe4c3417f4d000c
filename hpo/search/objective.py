"""The objective: base config + suggestions -> one fit() per run -> mean best validation mAP.

A trial's value is the mean, over its runs, of each run's best validation mAP. The runs are
the ``val_folds`` folds (fold k validates on its own identities) times the ``val_repeats``
repeats, each run with a training seed of its own (``run_configs``); with one fold and one
repeat a trial is exactly one ``fit()`` of the config, as before folds existed. Each trial records the run values and a
standard error (identity bootstrap, and over folds), so every value is reported with its
uncertainty.
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from handreid.config import TrainConfig
from handreid.engine import PreparedData, data_key, fit, prepare_data, resolve_device
from handreid.stats import bootstrap_se, mean_se
from hpo.common.attrs import attrs_of
from hpo.records.optuna_internals import set_attr
from hpo.search.pruning import PruningCallback, between_runs_prune, is_baseline

METRICS = ("rank1", "rank5", "rank10", "mAP")
log = logging.getLogger("hpo")


class DataPool:
    """Decoded data per data-relevant config (one per fold), shared by a process's trials."""

    def __init__(self) -> None:
        self._items: dict[tuple, PreparedData] = {}

    def get(self, cfg) -> PreparedData:
        key = data_key(cfg)
        if key not in self._items:
            self._items[key] = prepare_data(cfg)
        return self._items[key]


def run_configs(cfg: TrainConfig, seed_offset: int = 0) -> list[TrainConfig]:
    """The training runs that make up one evaluation of ``cfg``: repeats x folds.

    Run ``(r, k)`` validates on fold k with training seed ``cfg.seed + seed_offset + r * K + k``
    (K = ``val_folds``): a seed of its own for every run, and the same (fold, seed) for every
    trial, so runs pair across trials. With one seed for all the folds of a repeat, a config's
    luck with that seed (config x seed interaction) would last the whole trial: a trial-level
    error that no spread between its runs shows. With a seed per run it is part of each run's
    own noise, independent between runs, which is what the between-run pruner's residual
    (``hpo.search.pruning.run_reference``) and the confirm verdict's fold-level spread measure.

    The runs use the R x K consecutive seeds from ``cfg.seed + seed_offset``; a caller that
    wants fresh seeds (``hpo confirm``) steps ``seed_offset`` by at least R x K.
    """
    folds = cfg.val_folds
    return [
        cfg.replace(val_fold=k, seed=cfg.seed + seed_offset + r * folds + k)
        for r in range(cfg.val_repeats)
        for k in range(folds)
    ]


def run_label(cfg: TrainConfig, index: int) -> str:
    """``"fold 2/3, "`` / ``"repeat 1/2, "`` / ``""`` for run ``index`` of ``run_configs``."""
    k, r = index % cfg.val_folds, index // cfg.val_folds
    parts = []
    if cfg.val_folds > 1:
        parts.append(f"fold {k + 1}/{cfg.val_folds}")
    if cfg.val_repeats > 1:
        parts.append(f"repeat {r + 1}/{cfg.val_repeats}")
    return "".join(f"{p}, " for p in parts)


def fixed_length(cfg: TrainConfig, epochs: int | None) -> TrainConfig:
    """``cfg`` trained for exactly ``epochs`` (no early stopping), or unchanged for None.

    ``hpo confirm`` measures a config the way its final model is trained: a fixed number of
    epochs, the value read at the last one (``Objective`` does so for runs queued with the
    ``train_epochs`` attribute).
    """
    if epochs is None:
        return cfg
    return cfg.replace(epochs=int(epochs), early_stop_patience=0)


@dataclass
class RunResult:
    """One training run's outcome, as stored and compared."""

    fold: int
    seed: int
    value: float  # best val mAP (the last epoch's for a fixed-length run)
    best_epoch: int  # 1-based
    epochs_run: int
    status: str
    metrics: dict[str, float]
    identity_ap: dict[str, list] = field(default_factory=dict)
    identities: dict = field(default_factory=dict)  # identity_lists() of the run's split
    seconds: float = 0.0
    peak_memory_bytes: int = 0


def value_se(runs: list[RunResult], folds: int) -> float:
    """Standard error of the mean run value.

    Folds hold disjoint identities: a two-stage bootstrap over folds, then identities within
    each, one identity draw shared by the repeats (seeds) of a fold, since they validate on the
    same identities. With one fold every run saw the same identities, so the seed spread
    between runs cannot show identity sampling: its bootstrap variance is added to the
    between-run one.
    """
    aps = [r.identity_ap for r in runs if r.identity_ap]
    if folds > 1 and len(aps) == len(runs):
        return bootstrap_se(aps, groups=[r.fold for r in runs])
    identity_var = (
        statistics.fmean(bootstrap_se([a]) ** 2 for a in aps) if aps else 0.0
    )  # NaN-free: bootstrap_se of a non-empty run is finite
    return mean_se([r.value for r in runs], extra_var=identity_var)[1]


def summarize(runs: list[RunResult], cfg: TrainConfig) -> dict[str, Any]:
    """User attributes of a finished set of runs: value, spread, SE, per-run values, metrics."""
    values = [r.value for r in runs]
    out: dict[str, Any] = {
        "fold_values": [round(v, 6) for v in values],
        "n_folds": cfg.val_folds,
        "n_repeats": cfg.val_repeats,
        "value_sd": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
        "best_epochs": [r.best_epoch for r in runs],
        "best_epoch": round(statistics.median(r.best_epoch for r in runs)),
        "epochs_run": sum(r.epochs_run for r in runs),
        "peak_memory_mb": round(max(r.peak_memory_bytes for r in runs) / 2**20, 1),
    }
    se = value_se(runs, cfg.val_folds)
    if math.isfinite(se):  # NaN where nothing varies (one run, every identity's AP 1.0)
        out["value_se"] = round(se, 6)
    for key in METRICS:
        out[key] = statistics.fmean(r.metrics.get(key, math.nan) for r in runs)
    digests = {r.identities.get("digest") for r in runs} - {None}
    if digests:
        out["split_digest"] = ",".join(sorted(digests)) if len(digests) > 1 else digests.pop()
    return out


@dataclass
class EpochRecord:
    """One validated epoch of one run of a trial, as the trial's history keeps it."""

    run: int  # index in run_configs
    fold: int
    seed: int
    where: str  # "fold 2/3, " or ""
    epoch: int  # 1-based
    epochs: int  # of this run
    step: int  # the intermediate-value step this epoch reported at
    metrics: dict[str, float]
    metric: str = "val mAP"  # "confirm mAP" for a run measured on the confirm identities


class _EpochLog:
    """fit() callback: keeps every validated epoch of the trial and tells ``on_epoch``."""

    def __init__(self, trial, cfg: TrainConfig, run: int, where: str, sink: list, on_epoch):
        self.trial, self.cfg, self.run, self.where = trial, cfg, run, where
        self.sink, self.on_epoch = sink, on_epoch

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        record = EpochRecord(
            run=self.run,
            fold=self.cfg.val_fold,
            seed=self.cfg.seed,
            where=self.where,
            epoch=epoch + 1,
            epochs=self.cfg.epochs,
            step=self.run * self.cfg.epochs + epoch + 1,
            # to the 6 decimals the pruning callback reports, so history and steps agree exactly
            metrics={k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
            metric="confirm mAP" if self.cfg.confirm_run else "val mAP",
        )
        self.sink.append(record)
        if self.on_epoch is not None:
            self.on_epoch(self.trial, record)


class Objective:
    """Callable for ``study.optimize``; the runs of ``run_configs`` per trial.

    User attributes written per trial: ``config_sha256`` (digest of the resolved trainer
    config, stored whole as the trial artifact ``config.yaml`` when a store is given), ``fold_values``,
    ``value_sd``, ``value_se``, ``n_folds``, ``n_repeats``, mean ``rank1``..``mAP`` of the
    runs' best epochs, ``best_epoch`` (median), ``best_epochs``, ``epochs_run``, ``seconds``,
    ``peak_memory_mb``, ``status``, ``split_digest``; ``pruned_at`` and ``prune_reason`` for
    pruned trials, ``error`` for failures.

    With a store, every trial that validated at least one epoch (complete, pruned, failed or
    interrupted) also gets its epoch history as the artifacts ``history.json`` and
    ``curves.png`` (``hpo.records.history``), and with ``keep_checkpoints`` K > 0 the best K complete
    trials keep a model as ``checkpoint.pt`` (``hpo.records.checkpoints``).
    """

    def __init__(
        self,
        space,
        *,
        device: str | None = None,
        data: DataPool | None = None,
        fit_fn=fit,
        prune_between_runs: bool = True,
        keep_identity_ap: bool = False,
        store=None,
        on_epoch: Callable[[optuna.Trial, EpochRecord], None] | None = None,
        keep_checkpoints: int = 0,
        keeper=None,
    ) -> None:
        self.space = space
        self.device = resolve_device(device)
        self.data = data or DataPool()
        self.fit_fn = fit_fn
        self.prune_between_runs = prune_between_runs
        self.keep_identity_ap = keep_identity_ap  # per-run identity AP, for paired comparisons
        self.store = store  # artifact store for each trial's config.yaml (None: digest only)
        self.on_epoch = on_epoch  # called after every validated epoch (progress lines)
        self.epochs: list[EpochRecord] = []  # the current trial's history, every run
        self.keeper = keeper  # which models to keep (hpo.records.checkpoints); default: the top K
        if keeper is None and store is not None and keep_checkpoints > 0:
            from hpo.records.checkpoints import CheckpointKeeper

            self.keeper = CheckpointKeeper(store, keep_checkpoints)
        self._plan: list[dict] = []  # the current trial's runs: run, fold, seed, epochs
        self._snapshot = (
            None  # run 0's model, waiting for the trial's value (hpo.records.checkpoints)
        )

    def __call__(self, trial: optuna.Trial) -> float:
        start = time.perf_counter()
        runs: list[RunResult] = []
        pruning = None
        self.epochs, self._plan = [], []
        try:
            cfg = fixed_length(
                self.space.config(self.space.suggest(trial)), attrs_of(trial).get("train_epochs")
            )
            fixed = "train_epochs" in attrs_of(trial)
            if attrs_of(trial).get("on_confirm_ids"):
                # ``hpo confirm``: train on every study identity, measure on the confirm ones
                cfg = cfg.replace(confirm_run=True, val_folds=1, val_fold=0, val_repeats=1)
            self._record_config(trial, cfg)
            # a trial runs on the base seeds; ``hpo confirm`` sets an offset for fresh ones
            offset = int(attrs_of(trial).get("seed_offset", 0))
            configs = run_configs(cfg, offset)
            self._plan = [
                {"run": i, "fold": c.val_fold, "seed": c.seed, "epochs": c.epochs}
                for i, c in enumerate(configs)
            ]
            if self.keeper is not None:
                self._sweep(trial)  # what earlier workers left (an interrupted trial's)
            for index, run_cfg in enumerate(configs):
                where = run_label(cfg, index)
                # the study's pruner waits out the first run's warm-up (make_pruner); later
                # runs restart the schedule, so their warm-up epochs are skipped here
                warmup = cfg.warmup_epochs if index else 0
                pruning = PruningCallback(
                    trial, offset=index * cfg.epochs, warmup=warmup, where=where
                )
                epoch_log = _EpochLog(trial, run_cfg, index, where, self.epochs, self.on_epoch)
                keep = (trial, len(configs)) if index == 0 and self.keeper is not None else None
                runs.append(self._run(run_cfg, [epoch_log, pruning], where, keep, fixed))
                if self.prune_between_runs and len(runs) < len(configs):
                    set_attr(trial, "fold_values", [round(r.value, 6) for r in runs])
                    reason = not is_baseline(trial) and between_runs_prune(
                        trial.study, [r.value for r in runs], len(configs)
                    )
                    if reason:
                        pruning = None
                        raise optuna.TrialPruned(reason)
        except optuna.TrialPruned as exc:
            if pruning is not None:
                where = f"{run_label(cfg, len(runs))}epoch {pruning.last_epoch}"
            else:
                where = f"after {run_label(cfg, len(runs) - 1).rstrip(', ') or 'the run'}"
            diverged = str(exc).startswith("loss diverged")
            set_attr(trial, "prune_reason", str(exc))
            set_attr(trial, "pruned_at", where)
            status = "diverged" if diverged else "pruned"
            self._record(trial, status=status, runs=runs, pruning=pruning, start=start)
            self._released(exc)
            raise  # keeps the exception's context: a storage error names its cause
        except torch.OutOfMemoryError as exc:
            self._record(
                trial,
                status="oom",
                runs=runs,
                pruning=pruning,
                start=start,
                error="CUDA out of memory",
            )
            self._released(exc)
            raise  # keeps the exception's context: a storage error names its cause
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            self._record(
                trial, status="failed", runs=runs, pruning=pruning, start=start, error=error
            )
            self._released(exc)
            raise  # keeps the exception's context: a storage error names its cause
        except KeyboardInterrupt:
            self._discard_snapshot()
            self._save_history(trial, "interrupted")
            raise
        self._release()
        try:
            return self._finish(trial, cfg, runs, start)
        finally:
            self._discard_snapshot()

    def _record_config(self, trial: optuna.Trial, cfg: TrainConfig) -> None:
        """A short digest attribute (a 1.5 kB config attribute made the dashboard's trial page
        several windows wide) and, with a store, the config as the trial artifact config.yaml."""
        from hpo.records.artifacts import config_attrs, record_config

        if self.store is not None:
            record_config(trial, cfg, self.store)
        else:
            for key, value in config_attrs(cfg).attrs.items():
                set_attr(trial, key, value)

    def _run(
        self, cfg: TrainConfig, callbacks: list, where: str = "", keep_model=None, fixed=False
    ) -> RunResult:
        """One fit(); ``keep_model`` = (trial, runs) snapshots the model for a checkpoint;
        ``fixed``: the run's value is its last epoch's, not its best's."""
        data = self.data.get(cfg)
        result = self.fit_fn(cfg, callbacks=callbacks, device=self.device, data=data)
        try:
            if result.status == "diverged":
                raise optuna.TrialPruned(
                    f"loss diverged (not finite) in {where}epoch {result.epochs_run}"
                )
            if keep_model is not None:
                self._snapshot_model(cfg, result, *keep_model)
            splits = getattr(result.data, "splits", None)
            at, epoch = result.best, result.best_epoch
            identity_ap = getattr(result, "val_identity_ap", {})
            if fixed:
                at, epoch = result.history[-1], result.epochs_run - 1
                identity_ap = getattr(result, "last_identity_ap", {})
            return RunResult(
                fold=cfg.val_fold,
                seed=cfg.seed,
                value=float(at["mAP"]),
                best_epoch=epoch + 1,
                epochs_run=result.epochs_run,
                status=result.status,
                metrics={k: float(at[k]) for k in METRICS},
                identity_ap=dict(identity_ap or {}),
                identities=splits.identity_lists() if splits is not None else {},
                seconds=result.seconds,
                peak_memory_bytes=result.peak_memory_bytes,
            )
        finally:
            result.model = result.data = None

    def _snapshot_model(self, cfg: TrainConfig, result, trial: optuna.Trial, runs: int) -> None:
        """Save run 0's model when the trial can still enter the top K (``hpo.records.checkpoints``);
        a failure to save is a warning, never the trial's end."""
        from hpo.records.checkpoints import upper_bound

        if not self.keeper.wants(trial, upper_bound(float(result.best_map), runs)):
            return
        val = {**result.best, "epoch": result.best_epoch + 1}
        try:
            self._snapshot = self.keeper.snapshot(result.model, result.data, cfg, self.device, val)
        except (OSError, RuntimeError) as exc:
            log.warning("warning: trial %d: could not save its checkpoint: %s", trial.number, exc)

    def _sweep(self, trial: optuna.Trial) -> None:
        try:
            self.keeper.sweep(trial)
        except Exception as exc:  # noqa: BLE001 - a store problem never costs a trial
            log.warning("warning: could not remove checkpoints outside the top K: %s", exc)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback: once a trial is recorded, sweep again, so the checkpoint limit
        holds over trials that other processes finished meanwhile."""
        if self.keeper is None:
            return
        try:
            self.keeper.after_trial(study)
        except Exception as exc:  # noqa: BLE001 - a store problem never costs a trial
            log.warning("warning: could not remove checkpoints outside the top K: %s", exc)

    def _discard_snapshot(self) -> None:
        from hpo.records.checkpoints import discard

        discard(self._snapshot)
        self._snapshot = None

    def _save_history(self, trial: optuna.Trial, status: str) -> None:
        """history.json and curves.png for a trial that validated at least one epoch."""
        if self.store is None or not self.epochs:
            return
        from hpo.records.history import history_document, save_history

        save_history(
            trial, self.store, history_document(trial.number, status, self._plan, self.epochs)
        )

    def _finish(
        self, trial: optuna.Trial, cfg: TrainConfig, runs: list[RunResult], start: float
    ) -> float:
        attrs = summarize(runs, cfg)
        statuses = {r.status for r in runs}
        status = "completed" if statuses == {"completed"} else ",".join(sorted(statuses))
        if self.keep_identity_ap:  # kilobytes: a trial record, not a user attribute
            from hpo.records.optuna_internals import set_trial_record

            set_trial_record(
                trial,
                "run_identity_ap",
                [{k: [round(v[0], 6), int(v[1])] for k, v in r.identity_ap.items()} for r in runs],
            )
        # 6 decimals, as the run values are stored: digits below an mAP's 1e-6 are noise, and
        # each would widen every row of ``optuna trials``
        value = round(statistics.fmean(r.value for r in runs), 6)
        if self._snapshot is not None:
            snapshot, self._snapshot = self._snapshot, None
            try:
                self.keeper.offer(trial, value, snapshot)
            except Exception as exc:  # noqa: BLE001 - the trial's value stands without it
                log.warning(
                    "warning: trial %d: could not keep its checkpoint: %s", trial.number, exc
                )
        self._record(trial, status=status, runs=runs, pruning=None, start=start, **attrs)
        _remember_identities(trial, runs)
        return value

    def _released(self, exc: BaseException) -> BaseException:
        """Drop the traceback's frames (they hold the model, optimiser and batches) and free
        their memory before Optuna records the trial, so a pruned or failed trial leaves the
        device as it found it."""
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        self._discard_snapshot()
        self._release()
        return exc

    def _record(
        self,
        trial: optuna.Trial,
        *,
        status: str,
        runs: list[RunResult],
        pruning: PruningCallback | None,
        start: float,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        epochs = sum(r.epochs_run for r in runs) + (pruning.last_epoch if pruning else 0)
        set_attr(trial, "status", status)
        set_attr(trial, "epochs_run", extra.pop("epochs_run", epochs))
        set_attr(trial, "seconds", round(time.perf_counter() - start, 2))
        if error:
            set_attr(trial, "error", error)
        for key, value in extra.items():
            set_attr(trial, key, value)
        self._save_history(trial, status)

    def _release(self) -> None:
        """Free the model and optimiser now, not when the next trial happens to collect them."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _remember_identities(trial: optuna.Trial, runs: list[RunResult]) -> None:
    """Store each split's identity lists once per study, under its digest."""
    from hpo.records.optuna_internals import set_study_record, study_record

    known = study_record(trial.study, "identities") or {}
    new = {
        r.identities["digest"]: {k: r.identities[k] for k in ("val", "test", "train_count")}
        for r in runs
        if r.identities and r.identities["digest"] not in known
    }
    if new:
        set_study_record(trial.study, "identities", {**known, **new})


__all__ = [
    "DataPool",
    "EpochRecord",
    "METRICS",
    "Objective",
    "RunResult",
    "fixed_length",
    "run_configs",
    "summarize",
]
