"""Error rates and power of every decision a study takes, by simulation on the real code.

Three parts, each runnable on its own with its full table:

- `decisions_pruning.py`: between-run pruning (a trial as good as the best pruned falsely, at 10
  and 40 prior complete trials, K=3 and K=5 folds, all looks together; power against trials
  worse by 2 and 4 run SDs; the old paired t rule beside it) and the per-epoch median pruner.
- `decisions_verdict.py`: `hpo confirm`'s "better than the baseline" with 5 candidates equal to
  it (K=3 folds, M=3 seeds, identity effects shared within a fold), power for a winner better
  by +0.03 and +0.05, coverage of the difference's interval; the old rule beside it.
- `decisions_stress.py`: the same decisions under models they were not calibrated on (config x
  identity effects that new identities redraw, config x seed luck, per-config noise, outlier
  runs, survivor feedback, a whole study through `Objective`) at the size of a real study.

Usage: `python benchmarks/bench_decisions.py [--reps-pruning 1000] [--reps-verdict 2000]
[--reps-stress 300]`. The line before the last holds the calibrated models' keys: both
false-prune rates <= 0.05, false_better_verdict_n5 <= 0.05, ci_coverage_diff within 0.93-0.97,
and the power figures; the last line the stress keys (``decisions_stress.KEYS``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decisions_pruning  # noqa: E402
import decisions_stress  # noqa: E402
import decisions_verdict  # noqa: E402

LAST_LINE = (
    ("false_prune_equal_k3_n40", "pruning"),
    ("false_prune_equal_k5_n40", "pruning"),
    ("power_prune_worse_2sd", "pruning"),
    ("false_better_verdict_n5", "verdict"),
    ("power_better_0.03", "verdict"),
    ("ci_coverage_diff", "verdict"),
    ("stress_false_prune_max", "pruning"),
    ("default_prune_better_2sd_max", "pruning"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps-pruning", type=int, default=1000)
    ap.add_argument("--reps-verdict", type=int, default=2000)
    ap.add_argument("--reps-stress", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.perf_counter()
    pruning = decisions_pruning.simulate_pruning(args.reps_pruning, args.seed)
    print("## Pruning\n")
    print(decisions_pruning.table(pruning))
    print(" ".join(f"{k}={pruning[k]:.4f}" for k in decisions_pruning.KEYS))
    verdict = decisions_verdict.simulate_verdicts(args.reps_verdict, args.seed)
    print("\n## Confirm verdict\n")
    print(decisions_verdict.table(verdict))
    print(" ".join(f"{k}={verdict[k]:.4f}" for k in decisions_verdict.KEYS))
    stress = decisions_stress.simulate_stress(args.reps_stress, args.seed)
    print("\n## Stress: models the rules were not calibrated on\n")
    print(decisions_stress.table(stress))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    results = {"pruning": pruning, "verdict": verdict}
    print(" ".join(f"{k}={results[half][k]:.4f}" for k, half in LAST_LINE))
    print(decisions_stress.key_line(stress))  # the last line: the stress keys


if __name__ == "__main__":
    main()
