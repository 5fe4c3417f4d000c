"""Power of the verdict on confirm identities against the number of training-side identities.

``decisions_stress.py`` sizes a study at one aspect of 11k Hands (72 training-side identities,
22 of them confirm identities at share 0.3), where a config 0.05 mAP better is called better
in about 17 % of studies. This measures the same verdict (the real
``hpo.decide.verdict.new_identities`` through ``decisions_stress.confirm_once``, its base
generator) on studies of 1, 2 and 4 aspects' worth of identities (each aspect of a subject is
an identity; every aspect repeats the dorsal-right image counts), confirm share 0.3, 40
trials, top 5 + baseline, 3 seeds: how many confirm identities a researcher needs for power
0.5 at +0.05, and that the false "better" rate stays at or under 0.05 as the study grows.

Usage: ``python benchmarks/decisions_power.py [--reps 200] [--seed 0]``; the last line is
``power_gain05_ids72= power_gain05_ids144= power_gain05_ids288= false_better_ids288=``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import decisions_stress as ds  # noqa: E402

ONE_ASPECT = ds.IMAGES_PER_ID
SIZES = (1, 2, 4)  # aspects' worth of identities


def sized(aspects: int) -> int:
    """Set the generator's identity set to ``aspects`` x the dorsal-right counts."""
    ds.IMAGES_PER_ID = ONE_ASPECT * aspects
    ds.TRAIN_SIDE_IDS = len(ds.IMAGES_PER_ID)
    ds.NAMES = [f"id{i}" for i in range(ds.TRAIN_SIDE_IDS)]
    return ds.TRAIN_SIDE_IDS


def measure(reps: int, seed: int) -> dict:
    out = {}
    for aspects in SIZES:
        ids = sized(aspects)
        rng = np.random.default_rng(seed + aspects)
        for name, gain in (("gain05", 0.05), ("gain03", 0.03), ("equal", 0.0)):
            got = [
                ds.confirm_once(rng, ds.BASE, 40, ds.SHARE, gain, 0.0, False) for _ in range(reps)
            ]
            key = "better_true" if gain else "better"
            out[(ids, name)] = (
                ds._rate([g["new"][key] for g in got]),
                float(np.nanmedian([g["new"]["half_width"] for g in got])),
            )
    sized(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.time()
    r = measure(args.reps, args.seed)
    print(
        f"Verdict on confirm identities, base generator, 40 trials, top {ds.TOP} + baseline, "
        f"{ds.SEEDS} seeds, confirm share {ds.SHARE}; {args.reps} studies per cell "
        "(rate ± Monte Carlo SE; half-width: median of the interval's half-width)"
    )
    print("| training-side ids | confirm ids | power at +0.05 | power at +0.03 | false better "
          "(equal) | half-width |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for aspects in SIZES:
        ids = len(ONE_ASPECT) * aspects

        def cell(name: str, ids: int = ids) -> str:
            (rate, se), _ = r[(ids, name)]
            return f"{rate:.3f} ± {se:.3f}"

        print(
            f"| {ids} | {round(ds.SHARE * ids)} | {cell('gain05')} | {cell('gain03')} "
            f"| {cell('equal')} | {r[(ids, 'gain05')][1]:.3f} |"
        )
    print(f"({time.time() - start:.0f} s)")
    keys = {f"power_gain05_ids{len(ONE_ASPECT) * a}": r[(len(ONE_ASPECT) * a, "gain05")][0][0]
            for a in SIZES}  # fmt: skip
    keys[f"false_better_ids{len(ONE_ASPECT) * SIZES[-1]}"] = r[
        (len(ONE_ASPECT) * SIZES[-1], "equal")
    ][0][0]
    print(" ".join(f"{k}={v:.4f}" for k, v in keys.items()))


if __name__ == "__main__":
    main()
