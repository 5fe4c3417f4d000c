"""Time the test suite per tier and list its slowest tests, for docs/benchmarks.md.

    python benchmarks/bench_tests.py            # both tiers, as .ci/run runs them
    python benchmarks/bench_tests.py --tier fast

Each tier runs as its own ``python -m pytest`` (the README's command, then ``-m integration``)
with ``--durations``; the script prints each tier's wall time and result line, then the
slowest tests of the whole suite (setup, call and teardown added up per test). Start the
services first (``.ci/postgres start``, ``.ci/slurm start``, as .ci/run does) to time the
integration tier as CI runs it; without them those tests skip.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIERS = {"fast": [], "integration": ["-m", "integration"]}
DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)")
RESULT = re.compile(r"^=*\s*(\d+ (passed|failed).*) in [\d.]+s")


def run_tier(name: str, slowest: int) -> tuple[float, str, dict[str, float]]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TIERS[name]]
    cmd += [f"--durations={slowest}", "--durations-min=0.5"]
    start = time.monotonic()
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    wall = time.monotonic() - start
    per_test: dict[str, float] = collections.Counter()
    result = "no result line"
    for line in done.stdout.splitlines():
        if m := DURATION.match(line):
            per_test[m.group(3)] += float(m.group(1))
        elif m := RESULT.match(line):
            result = m.group(1)
    if done.returncode != 0:
        print(done.stdout[-3000:], file=sys.stderr)
    return wall, result, per_test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=[*TIERS, "both"], default="both")
    parser.add_argument("--slowest", type=int, default=20)
    args = parser.parse_args()
    tiers = list(TIERS) if args.tier == "both" else [args.tier]
    cpus = os.cpu_count()
    print(
        f"{time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · {cpus} CPUs"
    )
    slow: dict[str, tuple[float, str]] = {}
    total = 0.0
    for name in tiers:
        wall, result, per_test = run_tier(name, 200)
        total += wall
        print(f"tier {name:<12} {wall / 60:5.1f} min  {result}")
        for test, seconds in per_test.items():
            slow[test] = (seconds, name)
    if len(tiers) > 1:
        print(f"{'both tiers':<17} {total / 60:5.1f} min")
    print(f"\nslowest {args.slowest} tests (setup + call + teardown):")
    ranked = sorted(slow.items(), key=lambda kv: kv[1][0], reverse=True)[: args.slowest]
    for test, (seconds, name) in ranked:
        print(f"{seconds:6.1f} s  {name:<11}  {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
