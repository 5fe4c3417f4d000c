"""Horizontal flip and hand aspects: does mirroring training images help or hurt?

A mirrored right hand looks like a left hand. With several aspects, the left and right hands
of one person are different identities, so a flip turns a training image of one identity into
a look-alike of another. This script trains the tiny-vit space's baseline with
``flip_prob`` 0.5 and 0 (same seeds, same split) and reports validation and test mAP and the
*mirror confusion*: the share of test queries whose rank-1 gallery image is the same person's
other hand (same subject, other side), the error a flip would teach.

    python benchmarks/bench_flip.py                  # synthetic hands and the 11k sample, 3 seeds
    python benchmarks/bench_flip.py --seeds 1 --epochs 2   # a quick look

The last line is ``flip_gain_test=<synthetic> <sample>``: test mAP with flip 0.5 minus flip 0
(mean over seeds), per dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "11k-mini-100px"
SYNTHETIC = dict(ids=120, per_id=3, size=64, seed=0)


def mirror_confusion(model, data, cfg, device) -> float:
    """Share of test queries whose top gallery match is the same subject's other-side hand."""
    import torch

    from handreid.engine import extract_features
    from handreid.evaluation import cosine_similarity

    records = data.splits.test.records
    feats = extract_features(model, data.test.images, data.test.aspects, cfg, device)
    sim = cosine_similarity(feats, feats)
    hits = total = 0
    for q, g in data.test.splits:
        top = torch.as_tensor(g)[sim[torch.as_tensor(q)][:, torch.as_tensor(g)].argmax(1)]
        for qi, gi in zip(q.tolist(), top.tolist(), strict=True):
            a, b = records[qi], records[gi]
            side = lambda r: r.aspect.split()[-1]  # noqa: E731
            total += 1
            hits += a.subject == b.subject and side(a) != side(b)
    return hits / max(total, 1)


def run(data_root: str, flip: float, seed: int, epochs: int) -> dict:
    import torch

    from handreid.engine import fit, prepare_data, test_report
    from hpo.records.space import load_space

    space = load_space("tiny-vit")
    baseline = {k: v for k, v in space.baselines[0].items() if k != "name"}
    cfg = space.with_base(
        data_root=data_root,
        aspects=["all"],
        split="random",
        epochs=epochs,
        early_stop_patience=0,
        flip_prob=flip,
        seed=seed,
    ).config(baseline)
    data = prepare_data(cfg)
    result = fit(cfg, data=data, device="cpu")
    test = test_report(result.model, data, cfg, "cpu")
    return {
        "flip": flip,
        "seed": seed,
        "val_mAP": result.best_map,
        "test_mAP": test["mAP"],
        "mirror_confusion": mirror_confusion(result.model, data, cfg, torch.device("cpu")),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flip.json"))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("handreid").setLevel(logging.WARNING)
    from hpo.search.study import synthetic_data

    datasets = {"synthetic": str(synthetic_data(REPO / "studies", **SYNTHETIC))}
    if (SAMPLE / "HandInfo.csv").is_file():
        datasets["sample"] = str(SAMPLE)
    rows, start = [], time.time()
    for name, root in datasets.items():
        for seed in range(args.seeds):
            for flip in (0.5, 0.0):
                row = {"dataset": name, **run(root, flip, seed, args.epochs)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=1))
    print(
        f"\n| dataset | flip_prob | val mAP | test mAP | mirror confusion | ({time.time() - start:.0f} s)"
    )
    print("|---|---:|---:|---:|---:|")
    gains = []
    for name in datasets:
        for flip in (0.5, 0.0):
            sel = [r for r in rows if r["dataset"] == name and r["flip"] == flip]
            val, test, conf = (
                statistics.fmean(r[k] for r in sel)
                for k in ("val_mAP", "test_mAP", "mirror_confusion")
            )
            print(f"| {name} | {flip} | {val:.4f} | {test:.4f} | {conf:.3f} |")
        on = [r["test_mAP"] for r in rows if r["dataset"] == name and r["flip"] == 0.5]
        off = [r["test_mAP"] for r in rows if r["dataset"] == name and r["flip"] == 0.0]
        gains.append(statistics.fmean(a - b for a, b in zip(on, off, strict=True)))
    print("flip_gain_test=" + " ".join(f"{g:+.4f}" for g in gains))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
