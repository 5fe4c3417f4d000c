"""Finished trials per hour with 1 vs N local workers on the tiny CPU study.

Runs ``hpo run --backbone tiny-vit`` on synthetic data in a temporary folder, once per worker
count, with the same trial budget, no pruning and a fresh journal file each time; the data
cache is built before timing. Last line: ``speedup_2_workers=<x>``.

    python benchmarks/bench_workers.py [--trials 8] [--epochs 2] [--workers 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def hpo(*args: str, cwd: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="4 trials of 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs = 4, 1
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        common = [
            "--backbone",
            "tiny-vit",
            "--data",
            "synthetic",
            "--epochs",
            str(args.epochs),
            "--pruner",
            "none",
            "--quiet",
        ]
        # warm-up: generates the synthetic set and the decoded-image cache outside the timing
        hpo(
            "run",
            *common,
            "--trials",
            "1",
            "--study",
            "warmup",
            "--storage",
            "studies/warmup.log",
            cwd=cwd,
        )
        rates = {}
        for n in args.workers:
            seconds = hpo(
                "run",
                *common,
                "--trials",
                str(args.trials),
                "--workers",
                str(n),
                "--study",
                f"w{n}",
                "--storage",
                f"studies/w{n}.log",
                cwd=cwd,
            )
            rates[n] = args.trials / seconds * 3600
            print(
                f"workers={n} trials={args.trials} epochs={args.epochs} seconds={seconds:.1f} "
                f"trials_per_hour={rates[n]:.0f}",
                flush=True,
            )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    if 1 in rates and 2 in rates:
        print(f"speedup_2_workers={rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
