"""How long a refusal that needs no model takes, and whether torch or open_clip were imported
for it: each command runs in a fresh interpreter (as a user's shell runs it), several times.

    python benchmarks/bench_refusals.py [--repeat 5] [--code DIR]

``--code DIR`` measures another checkout (e.g. the main branch) for comparison: it is put first
on PYTHONPATH. Prints one line per command: median and min wall seconds, median CPU seconds (user + system,
less disturbed than wall time on a shared machine), exit status, and the heavy modules the
refusal imported (from ``python -X importtime``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "torchvision", "scipy", "plotly", "optuna")

COMMANDS = {
    "hpo --help": ["-m", "hpo.cli", "--help"],
    "hpo (no command)": ["-m", "hpo.cli"],
    "hpo run --study ../x": ["-m", "hpo.cli", "run", "--backbone", "tiny-vit", "--study", "../x"],
    "hpo run --epochs 1 --set epochs=3": [
        "-m",
        "hpo.cli",
        "run",
        "--backbone",
        "tiny-vit",
        "--data",
        "no-such-folder",  # a refusal on older code too, never a study
        "--epochs",
        "1",
        "--set",
        "epochs=3",
    ],
    "hpo run --set epoch=2": [
        "-m",
        "hpo.cli",
        "run",
        "--backbone",
        "tiny-vit",
        "--data",
        ".",
        "--set",
        "epoch=2",
    ],
    "handreid train --set epoch=2": [
        "-m",
        "handreid.cli",
        "train",
        "--config",
        str(ROOT / "handreid" / "configs" / "tiny-vit.yaml"),
        "--set",
        "epoch=2",
    ],
    "hpo run --device tpu": [
        *("-m", "hpo.cli", "run", "--backbone", "tiny-vit", "--data", "."),
        *("--device", "tpu"),
    ],
    "hpo confirm --top 0": ["-m", "hpo.cli", "confirm", "--top", "0"],
    "hpo confirm --seeds 1": ["-m", "hpo.cli", "confirm", "--seeds", "1"],
    "hpo confirm --workers 2 (SQLite)": ["-m", "hpo.cli", "confirm", "--workers", "2"],
    "handreid evaluate --floors": ["-m", "handreid.cli", "evaluate", "--floors"],
    "handreid evaluate missing.pt": ["-m", "handreid.cli", "evaluate", "--checkpoint", "none.pt"],
}


def heavy_imports(args: list[str], env: dict[str, str], cwd: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    return [m for m in HEAVY if m in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--code", default=str(ROOT), help="checkout to measure (default: this one)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.code, "HF_HUB_OFFLINE": "1"}
    print(f"code {args.code}; {args.repeat} runs each; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as cwd:  # an empty working folder: nothing to resume
        for label, command in COMMANDS.items():
            times, cpus, code = [], [], None
            for _ in range(args.repeat):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, *command], env=env, cwd=cwd, capture_output=True, timeout=300
                )
                times.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                code = proc.returncode
            heavy = heavy_imports(command, env, cwd)
            print(
                f"{label:<34} wall median {statistics.median(times):5.2f} s, min {min(times):5.2f} s; "
                f"CPU median {statistics.median(cpus):5.2f} s; "
                f"exit {code}  imported: {', '.join(heavy) or 'none of torch/open_clip/optuna'}"
            )


if __name__ == "__main__":
    main()
