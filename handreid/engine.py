"""fit(): the training loop every trial calls. Returns numbers; callbacks see every epoch.

Order of work per step: device-side augmentation of a P x K batch, forward under bf16 autocast
(CUDA), loss, backward, ``clip_grad_norm_(max_norm)``, ``optimizer.step()``, LR schedule step.
Validation runs every epoch on validation identities (carved from the training ids); the test
identities are touched only by ``test_report`` after training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from handreid.config import TrainConfig
from handreid.data import load_splits
from handreid.data.augment import BatchAugment, normalize
from handreid.data.base import DataSplits, Partition
from handreid.data.cache import load_images
from handreid.data.sampler import PKSampler
from handreid.devices import check_device_name
from handreid.errors import UserError
from handreid.evaluation import (
    NonFiniteError,
    average_splits,
    check_finite,
    cosine_similarity,
    evaluate_ranking,
)
from handreid.losses import LossComputer, supcon_weight
from handreid.models import build_model

log = logging.getLogger("handreid")

Callback = Callable[[int, dict[str, float]], None]
METRICS = ("rank1", "rank5", "rank10", "mAP")


class StopTraining(Exception):
    """Raised by a callback to end training early; the best state is still restored."""


# ---- data ---------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Images of one partition with integer ids and aspect indices.

    images: uint8 (N, 3, H, W); ids, aspects: int64 (N,); splits: (query_idx, gallery_idx) pairs.
    """

    images: torch.Tensor
    ids: torch.Tensor
    aspects: torch.Tensor
    splits: tuple

    def to(self, device: torch.device) -> EvalSet:
        return EvalSet(
            self.images.to(device), self.ids.to(device), self.aspects.to(device), self.splits
        )


@dataclass
class PreparedData:
    """Decoded, resized images and labels; built once and shared by every trial of a process."""

    splits: DataSplits
    aspects: tuple[str, ...]
    train_images: torch.Tensor  # uint8 (N, 3, H, W)
    train_labels: torch.Tensor  # int64 (N,), 0..num_classes-1
    train_aspects: torch.Tensor  # int64 (N,)
    num_classes: int
    val: EvalSet
    test: EvalSet
    eval_names: tuple[str, ...] = ()  # identity name of each integer id in ``val``/``test``

    def to(self, device: torch.device) -> PreparedData:
        move = dict(
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            train_aspects=self.train_aspects.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
        )
        return PreparedData(**{**self.__dict__, **move})


DATA_KEYS = (
    "dataset",
    "aspects",
    "exclude_accessories",
    "split",
    "split_seed",
    "test_fraction",
    "val_fraction",
    "val_folds",
    "val_fold",
    "refit",
    "confirm_fraction",
    "confirm_run",
    "image_size",
    "num_splits",
)


def data_key(cfg: TrainConfig, data_root: str | Path | None = None) -> tuple:
    """The config keys that decide which images and splits a run sees (never ``seed``)."""
    return (str(data_root or cfg.data_root), *(getattr(cfg, k) for k in DATA_KEYS))


def _aspect_index(records, aspects: tuple[str, ...]) -> torch.Tensor:
    lookup = {a: i for i, a in enumerate(aspects)}
    return torch.tensor([lookup[r.aspect] for r in records], dtype=torch.long)


def _eval_set(part: Partition, images: torch.Tensor, aspects, id_map: dict[str, int]) -> EvalSet:
    for r in part.records:
        id_map.setdefault(r.identity, len(id_map))
    ids = torch.tensor([id_map[r.identity] for r in part.records], dtype=torch.long)
    return EvalSet(images, ids, _aspect_index(part.records, aspects), part.splits)


def prepare_data(cfg: TrainConfig, data_root: str | Path | None = None) -> PreparedData:
    """Load splits and decode every image once (through the on-disk cache)."""
    splits = load_splits(cfg, data_root)
    aspects = tuple(splits.aspects) or ("",)
    records = list(splits.train) + list(splits.val.records) + list(splits.test.records)
    cache_dir = cfg.cache_dir or None
    images = load_images([r.path for r in records], cfg.image_size, cache_dir, cfg.decode_workers)
    images = torch.as_tensor(images)
    n_train, n_val = len(splits.train), len(splits.val.records)
    classes = {ident: i for i, ident in enumerate(splits.train_identities)}
    eval_ids: dict[str, int] = {}
    return PreparedData(
        splits=splits,
        aspects=aspects,
        train_images=images[:n_train],
        train_labels=torch.tensor([classes[r.identity] for r in splits.train], dtype=torch.long),
        train_aspects=_aspect_index(splits.train, aspects),
        num_classes=len(classes),
        val=_eval_set(splits.val, images[n_train : n_train + n_val], aspects, eval_ids),
        test=_eval_set(splits.test, images[n_train + n_val :], aspects, eval_ids),
        eval_names=tuple(eval_ids),
    )


def _place_data(data: PreparedData, device: torch.device) -> PreparedData:
    """Keep the uint8 image cache on the GPU when it fits comfortably (11k at 224 px ~ 1.7 GB)."""
    if device.type != "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    size = data.train_images.nbytes + data.val.images.nbytes + data.test.images.nbytes
    return data.to(device) if size < 0.3 * free else data


# ---- schedule -----------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based).

    Linear warmup from 1/warmup_steps to 1 over ``warmup_steps``; then cosine decay to
    ``min_ratio`` at the last step, or constant.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class StepParts:
    """What the training steps of one run share: optimiser, schedule, sampler, augmentation,
    the seeded generator and the loss."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: PKSampler
    augment: BatchAugment
    gen: torch.Generator
    loss_fn: LossComputer

    @property
    def steps(self) -> int:
        return len(self.sampler)


def build_step_parts(
    model, cfg: TrainConfig, data: PreparedData, device: torch.device
) -> StepParts:
    """Seeded P x K sampler, AdamW groups and the per-step warmup/cosine schedule for ``cfg``."""
    optimizer = build_optimizer(model, cfg, device)
    labels = data.train_labels.cpu().numpy()
    sampler = PKSampler(labels, cfg.num_identities_per_batch, cfg.num_instances, seed=cfg.seed)
    total, warmup = cfg.epochs * len(sampler), cfg.warmup_epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, cfg.scheduler, cfg.min_lr_ratio)
    )
    augment = BatchAugment(cfg.flip_prob, cfg.pad, cfg.random_erasing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    return StepParts(optimizer, scheduler, sampler, augment, gen, LossComputer(cfg))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    groups = [g for g in model.param_groups(cfg) if g["params"]]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr_modules, weight_decay=cfg.weight_decay, fused=fused)


# ---- one epoch, evaluation ----------------------------------------------------------------
def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def epoch_indices(sampler: PKSampler, device: torch.device) -> torch.Tensor:
    """All P x K index batches of the sampler's current epoch as one (steps, P*K) int64 tensor
    on ``device``.

    One host-to-device copy per epoch, from pinned memory and non-blocking: a plain ``.to()``
    of each step's indices would wait for the GPU to finish the previous step (a host sync
    per step). Iterating the result yields row views, which needs no sync either.
    """
    batches = torch.stack(list(sampler))
    if device.type == "cuda":
        return batches.pin_memory().to(device, non_blocking=True)
    return batches.to(device)


def train_one_epoch(
    model,
    data: PreparedData,
    sampler,
    augment,
    optimizer,
    scheduler,
    loss_fn,
    epoch: int,
    cfg: TrainConfig,
    device: torch.device,
    gen,
    progress=None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> dict:
    """One pass over P x K batches; returns mean loss terms (floats, one host sync).
    ``on_batch(epoch, batch, batches)`` is called after each optimizer step (batch counts from
    1); it is given no tensor, so it costs no host sync."""
    model.train()
    sampler.set_epoch(epoch)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    batches = epoch_indices(sampler, data.train_images.device)
    for idx in batches:
        images = augment(data.train_images.index_select(0, idx).to(device, non_blocking=True), gen)
        labels = data.train_labels.index_select(0, idx.to(data.train_labels.device)).to(
            device, non_blocking=True
        )
        aspects = data.train_aspects.index_select(0, idx.to(data.train_aspects.device)).to(
            device, non_blocking=True
        )
        with _autocast(cfg, device):
            out = model(images, aspects, labels)
        loss, terms = loss_fn({k: v.float() for k, v in out.items()}, labels, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.max_norm).detach()
        optimizer.step()
        scheduler.step()
        for k, v in terms.items():
            if isinstance(v, torch.Tensor):
                sums[k] = sums.get(k, 0) + v.detach().float()
        steps += 1
        if progress is not None:
            progress.update(1)
        if on_batch is not None:
            on_batch(epoch, steps, len(batches))
    keys = list(sums)
    values = (torch.stack([sums[k] for k in keys]) / steps).tolist() if keys else []
    means = dict(zip(keys, values, strict=True))  # one host sync per epoch, not one per term
    means["supcon_w"] = supcon_weight(cfg, epoch)
    return means


@torch.no_grad()
def extract_features(
    model, images: torch.Tensor, aspects: torch.Tensor, cfg: TrainConfig, device: torch.device
) -> torch.Tensor:
    """L2-normalised eval features (N, D); half precision on CUDA to halve memory traffic."""
    model.eval()
    feats = []
    for start in range(0, len(images), cfg.eval_batch_size):
        batch = normalize(images[start : start + cfg.eval_batch_size].to(device, non_blocking=True))
        asp = aspects[start : start + cfg.eval_batch_size].to(device, non_blocking=True)
        with _autocast(cfg, device):
            f = model.extract(batch, asp)
        feats.append(f.half() if device.type == "cuda" else f.float())
    return torch.cat(feats)


def evaluate_set(
    model,
    evalset: EvalSet,
    cfg: TrainConfig,
    device: torch.device,
    per_identity: bool = False,
    per_split: bool = False,
) -> dict:
    """Mean (and std) of Rank-1/5/10 and mAP over the partition's query/gallery splits.

    ``per_identity`` adds ``identity_ap``: ``{integer id: [AP sum, queries]}`` over every split,
    whose pooled ratio is the mAP (each split has the same queries per identity).
    ``per_split`` adds ``splits``: one ``{metric: value}`` per query/gallery split, in order.
    """
    feats = extract_features(model, evalset.images, evalset.aspects, cfg, device)
    return evaluate_features(feats, evalset, cfg.eval_ap, per_identity, per_split)


def evaluate_features(
    feats: torch.Tensor,
    evalset: EvalSet,
    ap: str = "standard",
    per_identity: bool = False,
    per_split: bool = False,
) -> dict:
    """``evaluate_set`` on features already extracted: feats (N, D), one row per image of
    ``evalset``, on the device the ranking runs on. Used by the trainer and by the floors
    (``handreid.floors``), so both are scored by the same code on the same splits. Raises
    ``NonFiniteError`` when a feature is NaN or infinite rather than scoring it."""
    check_finite(feats, f"the features of {len(feats)} images")
    device = feats.device
    sim = cosine_similarity(feats, feats)  # float32 scores even from half features
    ids = evalset.ids.to(device)
    results = []
    for q, g in evalset.splits:
        q = torch.as_tensor(q, device=device)
        g = torch.as_tensor(g, device=device)
        results.append(
            evaluate_ranking(sim[q][:, g], ids[q], ids[g], ap=ap, per_identity=per_identity)
        )
    out = average_splits(results)
    if per_split:
        out["splits"] = [{k: float(r[k]) for k in METRICS} for r in results]
    if per_identity:
        totals: dict[int, list] = {}
        for r in results:
            for ident, (ap_sum, n) in r["identity_ap"].items():
                t = totals.setdefault(ident, [0.0, 0])
                t[0] += ap_sum
                t[1] += n
        out["identity_ap"] = totals
    return out


# ---- fit ----------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What a run produced. ``model`` holds the best (restored) state."""

    history: list[dict[str, float]]
    best_epoch: int
    best: dict[str, float]
    status: str  # completed | early_stopped | stopped | diverged
    seconds: float
    peak_memory_bytes: int
    model: Any = field(repr=False)
    data: PreparedData = field(repr=False)
    # identity -> [AP sum, queries] on the validation set at the best epoch (empty for refit)
    val_identity_ap: dict[str, list] = field(default_factory=dict, repr=False)
    # the same at the last validated epoch (a run of fixed length is measured there)
    last_identity_ap: dict[str, list] = field(default_factory=dict, repr=False)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def best_map(self) -> float:
        return self.best.get("mAP", float("nan"))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training can change: trainable parameters and buffers (BN statistics).

    Frozen weights (the text tower, frozen image stages) never change, so copying them for
    every best epoch would only double the model's memory.
    """
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k in trainable or k in buffers
    }


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` picks CUDA when present; anything unusable is a one-line UserError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device_name(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return dev


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _epoch_line(epoch: int, cfg: TrainConfig, m: dict) -> str:
    val = f" val mAP {m['mAP']:.4f} R1 {m['rank1']:.4f}" if "mAP" in m else ""
    return (
        f"epoch {epoch + 1}/{cfg.epochs} loss {m['loss']:.4f} (id {m.get('id', 0):.4f} "
        f"tri {m.get('tri', 0):.4f} supcon {m.get('supcon', 0):.4f}) lr {m['lr_modules']:.2e}" + val
    )


def fit(
    cfg: TrainConfig,
    *,
    callbacks: Iterable[Callback] = (),
    device: str | torch.device | None = None,
    data: PreparedData | None = None,
    data_root: str | Path | None = None,
    progress: bool = False,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> FitResult:
    """Train ``cfg`` and return the metric history with the best state restored.

    Each callback is called as ``cb(epoch, metrics)`` after validation (epoch is 0-based;
    metrics hold the loss terms, learning rates and val rank1/5/10/mAP). A callback may raise
    ``StopTraining`` to end the run normally; any other exception (e.g. a pruning signal)
    propagates after nothing more is trained. ``on_batch(epoch, batch, batches)``, if given,
    is called after each training batch (a progress display's hook; see ``train_one_epoch``).
    """
    start = time.perf_counter()
    device = resolve_device(device)
    data = _place_data(data if data is not None else prepare_data(cfg, data_root), device)
    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, data.aspects).to(device)
    if cfg.compile:
        model = torch.compile(model)
    parts = build_step_parts(model, cfg, data, device)
    optimizer, sampler, scheduler = parts.optimizer, parts.sampler, parts.scheduler
    augment, gen, loss_fn, steps = parts.augment, parts.gen, parts.loss_fn, parts.steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True  # input size is fixed: time conv algorithms once

    history: list[dict[str, float]] = []
    best, best_epoch, best_state, status = {}, -1, None, "completed"
    best_ap: dict[str, list] = {}
    last_ap: dict[str, list] = {}
    validate = len(data.val.ids) > 0  # a refit has no validation identities: last epoch wins
    epochs_bar = tqdm(range(cfg.epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in epochs_bar:
        epoch_start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch + 1}", disable=not progress, leave=False) as bar:
            metrics = train_one_epoch(
                model,
                data,
                sampler,
                augment,
                optimizer,
                scheduler,
                loss_fn,
                epoch,
                cfg,
                device,
                gen,
                bar,
                on_batch,
            )
        lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
        metrics.update(lrs)
        metrics.setdefault("lr_modules", optimizer.param_groups[-1]["lr"])
        if not math.isfinite(metrics["loss"]):
            history.append({"epoch": epoch, **metrics})
            status = "diverged"
            log.warning("epoch %d: loss is %s; training stopped", epoch + 1, metrics["loss"])
            break
        if not validate:
            history.append({"epoch": epoch, **metrics})
            log.info(_epoch_line(epoch, cfg, metrics))
            best_epoch = epoch
            continue
        try:
            val = evaluate_set(model, data.val, cfg, device, per_identity=True)
        except NonFiniteError as exc:  # a finite loss can still hide a broken model
            history.append({"epoch": epoch, **metrics})
            status = "diverged"
            log.warning("epoch %d: validation %s; training stopped", epoch + 1, exc)
            break
        metrics.update({k: val[k] for k in METRICS})
        metrics["seconds"] = time.perf_counter() - epoch_start  # training and validation
        history.append({"epoch": epoch, **metrics})
        log.info(_epoch_line(epoch, cfg, metrics))
        last_ap = {data.eval_names[i]: v for i, v in sorted(val.get("identity_ap", {}).items())}
        if best_epoch < 0 or metrics["mAP"] > best["mAP"]:
            best, best_epoch = {k: metrics[k] for k in METRICS}, epoch
            best_state = _snapshot(model)
            best_ap = last_ap
        try:
            for cb in callbacks:
                cb(epoch, dict(metrics))
        except StopTraining:
            status = "stopped"
            break
        if cfg.early_stop_patience and epoch - best_epoch >= cfg.early_stop_patience:
            status = "early_stopped"
            break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return FitResult(
        history,
        best_epoch,
        best,
        status,
        time.perf_counter() - start,
        peak,
        model,
        data,
        best_ap,
        last_ap,
    )


def test_report(
    model,
    data: PreparedData,
    cfg: TrainConfig,
    device: str | torch.device | None = None,
    per_split: bool = False,
) -> dict:
    """Rank-1/5/10 and mAP on the test identities: mean and std over ``num_splits`` splits,
    and ``test_set``, the digest of the images and splits they were measured on
    (``per_split``: each split's values too, as ``splits``)."""
    device = resolve_device(device)
    report = evaluate_set(model, data.test.to(device), cfg, device, per_split=per_split)
    return {**report, "test_set": data.splits.test.digest}
