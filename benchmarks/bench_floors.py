"""Floors and what they cost: raw pixels and the untrained tiny-vit tower on synthetic hands
and on the 11k sample, with the settings of the generalisation benchmark (tiny-vit space, all
aspects, random split, ``split_seed`` 0, 3 query/gallery splits; one validation split and 3
folds) and with the tiny-vit space as shipped (dorsal right).

    python benchmarks/bench_floors.py            # both datasets
    python benchmarks/bench_floors.py --repeat 3 # time each floor computation 3 times

Floors are inference only. The time is split into decoding (``prepare_data``: the first call
decodes and caches the images, as the study's first trial would anyway) and the floors
themselves on the prepared data (the extra cost a study pays once). Writes ``floors.json``
under ``--out``; the last line is ``sample_pixels_val=<v> sample_pixels_test=<t>
synthetic_pixels_val=<v> synthetic_pixels_test=<t> floor_seconds_max=<s>``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "11k-mini-100px"
SYNTHETIC = dict(ids=120, per_id=3, size=64, seed=0)  # as bench_generalisation.py


def settings(data_root: str, cache: str) -> dict:
    """name -> base config of each measured setting."""
    from hpo.records.space import load_space

    space = load_space("tiny-vit")
    general = dict(
        data_root=data_root,
        cache_dir=cache,
        aspects=["all"],
        split="random",
        split_seed=0,
        num_splits=3,
    )
    return {
        "all aspects, 1 split": space.with_base(**general, val_folds=1).config({}),
        "all aspects, 3 folds": space.with_base(**general, val_folds=3).config({}),
        "dorsal right (space as shipped)": space.with_base(
            data_root=data_root, cache_dir=cache
        ).config({}),
    }


def measure(cfg, repeat: int) -> dict:
    from handreid.engine import prepare_data
    from handreid.floors import compute_floors, fold_configs

    pool: dict = {}
    start = time.perf_counter()
    for c in fold_configs(cfg):
        pool[c.val_fold] = prepare_data(c)
    decode = time.perf_counter() - start
    data = pool[0]
    times, floors = [], None
    for _ in range(repeat):
        floors = compute_floors(cfg, lambda c: pool[c.val_fold], device="cpu")
        times.append(floors.seconds)
    return {
        "pixels": list(floors.pixels),
        "backbone": list(floors.backbone),
        "backbone_label": floors.backbone_label,
        "key": floors.key,
        "identities": data.splits.stats["identities"],
        "images": {
            "val": sum(len(p.val.ids) for p in pool.values()),
            "test": len(data.test.ids),
        },
        "prepare_seconds": round(decode, 2),
        "floor_seconds": [round(t, 2) for t in times],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="synthetic,sample")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # the sample lacks most listed images

    import torch

    from hpo.search.study import synthetic_data

    roots = {}
    for name in args.datasets.split(","):
        if name == "synthetic":
            roots[name] = str(synthetic_data(REPO / "studies", **SYNTHETIC))
        elif name == "sample" and (SAMPLE / "HandInfo.csv").is_file():
            roots[name] = str(SAMPLE)
    cache = tempfile.mkdtemp(prefix="bench-floors-")  # cold decode, so its cost is seen
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "runs": {},
    }
    print(
        f"{'dataset':<10} {'setting':<32} {'pixels val/test':>16} {'untrained val/test':>19} "
        f"{'val+test imgs':>13} {'decode s':>8} {'floors s':>8}"
    )
    for data_name, root in roots.items():
        for setting, cfg in settings(root, cache).items():
            r = measure(cfg, args.repeat)
            results["runs"][f"{data_name}: {setting}"] = r
            pair = lambda v: f"{v[0]:.4f}/{v[1]:.4f}"  # noqa: E731
            print(
                f"{data_name:<10} {setting:<32} {pair(r['pixels']):>16} "
                f"{pair(r['backbone']):>19} {r['images']['val'] + r['images']['test']:>13} "
                f"{r['prepare_seconds']:>8.1f} {statistics.median(r['floor_seconds']):>8.1f}",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "floors.json").write_text(json.dumps(results, indent=2) + "\n")
    runs = results["runs"]

    def pick(data: str, i: int) -> str:
        r = runs.get(f"{data}: all aspects, 1 split")
        return f"{r['pixels'][i]:.4f}" if r else "nan"

    worst = max((max(r["floor_seconds"]) for r in runs.values()), default=float("nan"))
    print(
        f"sample_pixels_val={pick('sample', 0)} sample_pixels_test={pick('sample', 1)} "
        f"synthetic_pixels_val={pick('synthetic', 0)} synthetic_pixels_test={pick('synthetic', 1)} "
        f"floor_seconds_max={worst:.1f}"
    )


if __name__ == "__main__":
    main()
