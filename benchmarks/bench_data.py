"""Images per second for one training epoch: decode every epoch (old) vs decode once (new).

OLD: a torch DataLoader (``--workers`` processes) over a Dataset that opens each JPEG with PIL,
resizes it to 224 x 224, converts it to a tensor and normalises it, every epoch.
NEW: ``load_images`` (its cache already built) + ``PKSampler`` batches + ``BatchAugment`` on
the uint8 tensor.

Cases: the shared 11k Hands sample (100 x 100 thumbnails; skipped when absent) and synthetic
1600 x 1200 JPEGs written to a temporary folder (the size of the 11k originals). The last line
is ``speedup_vs_decode_per_epoch=<x>`` for the 1600 x 1200 case.

    python benchmarks/bench_data.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from handreid.data.augment import CLIP_MEAN, CLIP_STD, BatchAugment
from handreid.data.cache import load_images
from handreid.data.sampler import PKSampler

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "11k-mini-100px"


class DecodeEveryEpoch(Dataset):
    """The old way: decode, resize, ToTensor and Normalize per image, per epoch."""

    def __init__(self, paths: list[Path], labels: np.ndarray, size: int) -> None:
        self.paths, self.labels = paths, labels
        self.transform = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.ToTensor(),
                transforms.Normalize(CLIP_MEAN, CLIP_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), int(self.labels[i])


def old_epoch(paths, labels, size: int, batch: int, workers: int) -> float:
    """Seconds for one epoch, worker start-up included (it is paid every epoch)."""
    loader = DataLoader(
        DecodeEveryEpoch(paths, labels, size), batch_size=batch, shuffle=True, num_workers=workers
    )
    start = time.perf_counter()
    for images, _ in loader:
        images.sum()  # touch the batch, as a training step would
    return time.perf_counter() - start


def new_epoch(images: torch.Tensor, labels, batch: int, epoch: int) -> tuple[float, int]:
    """Seconds and images for one epoch over the cached uint8 tensor."""
    start = time.perf_counter()
    sampler = PKSampler(labels, p=batch // 4, k=4, seed=0)
    sampler.set_epoch(epoch)
    augment = BatchAugment(flip_prob=0.5, pad=10, random_erasing=0.5)
    generator = torch.Generator().manual_seed(epoch)
    seen = 0
    for index in sampler:
        x = augment(images.index_select(0, index), generator)
        x.sum()
        seen += len(index)
    return time.perf_counter() - start, seen


def compare(name: str, paths, labels, args, cache_dir: Path) -> float:
    print(f"\n== {name}: {len(paths)} images, {len(set(labels.tolist()))} identities")
    start = time.perf_counter()
    load_images(paths, (args.size, args.size), cache_dir=cache_dir)
    build = time.perf_counter() - start
    print(f"cache build (once):            {len(paths) / build:9.1f} images/s  ({build:.2f} s)")
    start = time.perf_counter()
    images = load_images(paths, (args.size, args.size), cache_dir=cache_dir)
    images.view(-1)[::4096].sum()  # page the mapped file in, as the first epoch would
    print(f"cache load (once per run):     {time.perf_counter() - start:9.2f} s")
    old = [
        old_epoch(paths, labels, args.size, args.batch, args.workers)
        for _ in range(args.old_epochs)
    ]
    old_rate = len(paths) / min(old)
    print(f"old: decode every epoch        {old_rate:9.1f} images/s  (best of {len(old)} epochs)")
    runs = [new_epoch(images, labels, args.batch, e) for e in range(args.new_epochs)]
    rates = [n / t for t, n in runs]
    new_rate = max(rates)
    print(
        f"new: cache + P x K + augment   {new_rate:9.1f} images/s  (best of {len(runs)} epochs, "
        f"median {statistics.median(rates):.1f})"
    )
    speedup = new_rate / old_rate
    print(f"speedup                        {speedup:9.1f} x")
    return speedup


def write_large_jpegs(folder: Path, n: int, per_id: int = 8) -> tuple[list[Path], np.ndarray]:
    """n 1600 x 1200 JPEGs (quality 90): smooth random colour fields, shapes and mild noise."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> Path:
        rng = np.random.default_rng(i)
        field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        img = field.resize((1600, 1200), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.integers(0, 1400), rng.integers(0, 1000)
            w, h = rng.integers(80, 500, 2)
            draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        noise = rng.integers(-6, 7, (1200, 1600, 3), dtype=np.int16)
        arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"{i // per_id:04d}_{i % per_id}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        return path

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        paths = list(pool.map(one, range(n)))
    return paths, np.arange(n) // per_id


def sample_paths() -> tuple[list[Path], np.ndarray] | None:
    csv_path = SAMPLE / "HandInfo.csv"
    if not csv_path.is_file():
        return None
    import csv

    present = set(os.listdir(SAMPLE / "Hands"))
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["imageName"] in present]
    keys = sorted({(r["id"].strip(), r["aspectOfHand"]) for r in rows})
    label_of = {k: i for i, k in enumerate(keys)}
    paths = [SAMPLE / "Hands" / r["imageName"] for r in rows]
    labels = np.array([label_of[(r["id"].strip(), r["aspectOfHand"])] for r in rows])
    return paths, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs")
    parser.add_argument(
        "--images", type=int, default=None, help="1600x1200 images (default 320, quick 128)"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the old way")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the new way (default 1: conservative against the old way's two "
        "worker processes, and immune to thread-pool stalls on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_large = args.images or (128 if args.quick else 320)
    args.old_epochs = 1 if args.quick else 2
    args.new_epochs = 3 if args.quick else 5
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    )

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        sample = sample_paths()
        if sample is None:
            print(f"\n== 11k sample: skipped, not found at {SAMPLE}")
        else:
            compare("11k sample (100x100 JPEG)", *sample, args, tmp / "cache")
        start = time.perf_counter()
        paths, labels = write_large_jpegs(tmp / "large", n_large)
        print(
            f"\n(wrote {n_large} synthetic 1600x1200 JPEGs in {time.perf_counter() - start:.1f} s)"
        )
        speedup = compare("synthetic 1600x1200 JPEG", paths, labels, args, tmp / "cache")
    print(f"speedup_vs_decode_per_epoch={speedup:.1f}")


if __name__ == "__main__":
    main()
