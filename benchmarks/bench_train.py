"""Trainer throughput: images/s of full training steps and of evaluation, peak memory, ms per epoch.

Runs the trainer's own ``train_one_epoch`` (P x K sampling, device-side augmentation, forward
under bf16 autocast on CUDA, loss, backward, clipping, AdamW step, LR schedule) and
``evaluate_set`` (features in half precision on CUDA, one similarity matrix, ranking over the
query/gallery splits) on synthetic uint8 images with random weights, so nothing is
downloaded. The default sizes are those of the old trainer's 11k dorsal-right runs: 890
training images per epoch and 1,042 evaluated images (it needed about 37 s and 31 s for them).

    python benchmarks/bench_train.py --model tiny-vit --batch-size 32          # CPU
    python benchmarks/bench_train.py --model vitb16 --batch-size 64            # CUDA
    python benchmarks/bench_train.py --model rn50 --batch-size 64 --json rn50.json

The last line is ``train_images_per_s=<x>``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from handreid.config import TrainConfig
from handreid.engine import (
    EvalSet,
    PreparedData,
    _place_data,
    build_step_parts,
    evaluate_set,
    resolve_device,
    seed_everything,
    train_one_epoch,
)
from handreid.models import build_model

TINY = ("tiny-vit", "tiny-rn")
ASPECT = ("dorsal right",)


@dataclass
class Result:
    model: str
    device: str
    batch_size: int
    image_size: int
    amp: bool
    compile: bool
    train_images: int
    eval_images: int
    train_images_per_s: float
    eval_images_per_s: float
    train_ms_per_epoch: float
    eval_ms: float
    epoch_plus_val_ms: float
    peak_memory_mb: float
    peak_memory_kind: str
    setup_s: float


def synthetic_data(
    n_train: int, n_eval: int, size: int, k: int, num_splits: int, seed: int = 0
) -> PreparedData:
    """Random uint8 images (N, 3, size, size): ``k`` images per training identity; the
    evaluated set has 4 images per identity and splits with one gallery image per identity."""
    gen = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)

    train_labels = torch.arange(n_train) // k
    eval_ids = torch.arange(n_eval) // 4
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(num_splits):
        gallery = np.array(
            [
                rng.choice(np.flatnonzero(eval_ids.numpy() == i))
                for i in range(int(eval_ids.max()) + 1)
            ]
        )
        query = np.setdiff1d(np.arange(n_eval), gallery)
        splits.append((query, gallery))
    evalset = EvalSet(
        images(n_eval), eval_ids, torch.zeros(n_eval, dtype=torch.long), tuple(splits)
    )
    return PreparedData(
        splits=None,
        aspects=ASPECT,
        train_images=images(n_train),
        train_labels=train_labels,
        train_aspects=torch.zeros(n_train, dtype=torch.long),
        num_classes=int(train_labels.max()) + 1,
        val=evalset,
        test=evalset,
    )


def config(args: argparse.Namespace, size: int) -> TrainConfig:
    return TrainConfig(
        model=args.model,
        pretrained="none",
        image_size=(size, size),
        batch_size=args.batch_size,
        num_instances=4,
        epochs=args.epochs + 1,
        warmup_epochs=1,
        amp=not args.no_amp,
        compile=args.compile,
        num_splits=args.num_splits,
        eval_batch_size=args.eval_batch_size,
        aspects=ASPECT,
        lr_clip_visual=1e-5,
        lr_modules=1e-4,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    # ru_maxrss is in KiB on Linux: the whole process, model and data included
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def run(args: argparse.Namespace) -> Result:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fit() sets it
    size = args.image_size or (64 if args.model in TINY else 224)
    cfg = config(args, size)
    start = time.perf_counter()
    data = _place_data(
        synthetic_data(args.train_images, args.eval_images, size, 4, cfg.num_splits), device
    )
    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, data.aspects).to(device)
    step_model = torch.compile(model) if cfg.compile else model
    parts = build_step_parts(model, cfg, data, device)
    optimizer, sampler, scheduler = parts.optimizer, parts.sampler, parts.scheduler
    augment, gen, loss_fn, steps = parts.augment, parts.gen, parts.loss_fn, parts.steps

    def epoch(i: int) -> None:
        train_one_epoch(
            step_model, data, sampler, augment, optimizer, scheduler, loss_fn, i, cfg, device, gen
        )

    # warm-up: cuDNN algorithm search, compilation, allocator growth
    epoch(0)
    evaluate_set(model, data.val, cfg, device)
    _sync(device)
    setup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(1, args.epochs + 1):
        epoch(i)
    _sync(device)
    train_s = (time.perf_counter() - t0) / args.epochs
    t0 = time.perf_counter()
    for _ in range(args.eval_repeats):
        evaluate_set(model, data.val, cfg, device)
    _sync(device)
    eval_s = (time.perf_counter() - t0) / args.eval_repeats
    peak, kind = _peak_memory(device)
    seen = steps * sampler.batch_size
    return Result(
        model=args.model,
        device=_device_name(device),
        batch_size=sampler.batch_size,
        image_size=size,
        amp=cfg.amp and device.type == "cuda",
        compile=cfg.compile,
        train_images=seen,
        eval_images=args.eval_images,
        train_images_per_s=seen / train_s,
        eval_images_per_s=args.eval_images / eval_s,
        train_ms_per_epoch=1000 * train_s,
        eval_ms=1000 * eval_s,
        epoch_plus_val_ms=1000 * (train_s + eval_s),
        peak_memory_mb=peak,
        peak_memory_kind=kind,
        setup_s=setup_s,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="tiny-vit", help="tiny-vit, tiny-rn, rn50, vitb16 (random weights)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--image-size", type=int, default=0, help="pixels a side (default 64 tiny, 224 full)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--train-images", type=int, default=890, help="training images per epoch")
    p.add_argument("--eval-images", type=int, default=1042, help="images evaluated per validation")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--num-splits", type=int, default=10, help="query/gallery splits per evaluation")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (bf16 autocast by default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(args)
    print(
        f"{r.model} on {r.device}: batch {r.batch_size}, {r.image_size} px, "
        f"{'bf16 autocast' if r.amp else 'fp32'}{', compiled' if r.compile else ''}"
    )
    print(
        f"  training   {r.train_images_per_s:9.1f} images/s  {r.train_ms_per_epoch:9.1f} ms per epoch "
        f"of {r.train_images} images"
    )
    print(
        f"  evaluation {r.eval_images_per_s:9.1f} images/s  {r.eval_ms:9.1f} ms for {r.eval_images} images"
    )
    print(
        f"  epoch + validation {r.epoch_plus_val_ms:.1f} ms; peak memory {r.peak_memory_mb:.0f} MiB "
        f"({r.peak_memory_kind}); setup and warm-up {r.setup_s:.1f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r.__dict__, f, indent=1)
    print(f"train_images_per_s={r.train_images_per_s:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
