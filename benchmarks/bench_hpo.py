"""HPO efficiency: best-so-far validation mAP against the training epochs a study has spent.

Each strategy (``sampler:pruner``) runs the same trial budget of the tiny-vit search space on
the real 11k Hands sample, on the CPU, once per seed; the seed drives both the sampler and the
trainer, so the strategies of one seed are paired. The baselines of the space are not
enqueued, so every trial comes from the sampler. An epoch "spent" is an epoch trained: a trial
reports at step epoch + 1, so its cost is its number of reported values (early stopping and
pruning both shorten it).

Per study the curve is the best value of the *completed* trials so far (what the study itself
reports as best) at the cumulative epochs after each trial. The reference of a seed is the
best value any strategy found with that seed; a run reaches 95 % when its best-so-far is at
least 0.95 x that reference. Because an untrained tiny-vit already ranks these thumbnails
well, the script also reports the stricter "95 % of the gain": untrained mAP + 0.95 x
(reference - untrained mAP).

    python benchmarks/bench_hpo.py                    # 3 seeds, 20 trials (~15 min on 2 cores)
    python benchmarks/bench_hpo.py --quick            # 1 seed, 8 trials of <= 4 epochs (~1 min)
    python benchmarks/bench_hpo.py --synthetic        # the same on synthetic hands (~20 min)
    python benchmarks/bench_hpo.py --from-json benchmarks/results/hpo_efficiency.json  # re-plot

``--synthetic`` runs the comparison on generated hands (120 subjects x 4 aspects x 3 images,
64 px; ``handreid synth``) instead: there an untrained tower ranks poorly and training decides
the value, which the 100 px sample cannot show (see docs/benchmarks.md).

Writes ``<name>.json``, ``.html`` and ``.png`` (PNG needs kaleido and Chrome/Chromium) under
``--out``; ``--name`` defaults to ``hpo_efficiency`` (``hpo_efficiency_synthetic``). The last
line is ``epochs_ratio_95=<x>``: epochs the first non-baseline strategy needed to reach 95 % of
the best, divided by the epochs random sampling without pruning needed (summed over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "11k-mini-100px"
BASELINE = "random:none"
SYNTHETIC = dict(ids=120, per_id=3, size=64, seed=0)  # --synthetic: 1,440 images


# ---- one study (runs in a worker process) --------------------------------------------------
def run_study(strategy: str, seed: int, opts: dict) -> dict:
    """One study of ``opts['trials']`` trials; returns its trials as plain data."""
    import optuna
    import torch

    from hpo.records.space import SearchSpace, load_space
    from hpo.search.objective import Objective
    from hpo.search.study import create_or_resume, make_sampler, run_until

    torch.set_num_threads(opts["threads"])
    warnings.filterwarnings("ignore")
    logging.getLogger("handreid").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_name, pruner_name = strategy.split(":")
    space = load_space(opts["space"])
    space = SearchSpace(space.base, space.params, (), space.source).with_base(
        data_root=opts["data"],
        aspects=opts["aspects"],
        epochs=opts["epochs"],
        split="random",
        seed=seed,
        split_seed=seed,  # the seed drew both before they were separate keys
        num_splits=opts["num_splits"],
    )
    study = create_or_resume(
        optuna.storages.InMemoryStorage(),
        f"{strategy}-seed{seed}",
        space,
        sampler=make_sampler(sampler_name, seed),
        pruner=build_pruner(pruner_name, opts["epochs"], space.config({}).warmup_epochs),
        context={},
    )
    objective = Objective(space, device="cpu")
    start = time.perf_counter()
    run_until(study, objective, opts["trials"])
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs": len(t.intermediate_values),
            "values": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
            "status": t.user_attrs.get("status"),
            "params": t.params,
        }
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
    ]
    return {
        "strategy": strategy,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "untrained_map": untrained_map(space, objective),
        "trials": trials,
    }


def build_pruner(spec: str, epochs: int, warmup_epochs: int):
    """``hpo run``'s pruner by name (it waits for the LR warm-up); ``median@K`` and
    ``hyperband@K`` are the same pruners with their first pruning step set to K epochs."""
    import optuna

    from hpo.search.study import make_pruner

    name, _, first = spec.partition("@")
    if not first:
        return make_pruner(name, epochs, warmup_epochs)
    k = int(first)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=k)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=k, max_resource=max(epochs, k + 1), reduction_factor=3
        )
    raise SystemExit(f"error: only median and hyperband take @K, got {spec!r}")


def untrained_map(space, objective) -> float:
    """Validation mAP of the base config's model before any training (same seed)."""
    from handreid.engine import evaluate_set, seed_everything
    from handreid.models import build_model

    cfg = space.config({})
    data = objective.data.get(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, data.aspects)
    return float(evaluate_set(model, data.val, cfg, objective.device)["mAP"])


# ---- analysis ------------------------------------------------------------------------------
def curve(run: dict) -> tuple[list[int], list[float]]:
    """Cumulative epochs after each finished trial and the best completed value so far
    (NaN until the first trial completes)."""
    spent, best, xs, ys = 0, -math.inf, [], []
    for t in sorted(run["trials"], key=lambda t: t["number"]):
        spent += t["epochs"]
        if t["state"] == "COMPLETE" and t["value"] is not None:
            best = max(best, t["value"])
        xs.append(spent)
        ys.append(best if best > -math.inf else math.nan)
    return xs, ys


def epochs_to_reach(run: dict, threshold: float) -> int | None:
    """Cumulative epochs at the first trial after which the best-so-far is >= threshold."""
    for x, y in zip(*curve(run), strict=True):
        if y >= threshold:
            return x
    return None


def best_value(run: dict) -> float:
    ys = [y for y in curve(run)[1] if not math.isnan(y)]
    return max(ys) if ys else math.nan


def analyse(runs: list[dict], fraction: float = 0.95) -> dict:
    """Per run: best, epochs spent, epochs to reach ``fraction`` of the seed's reference (and of
    its gain over the untrained model); per strategy: sums over seeds and the ratio to
    random sampling without pruning."""
    seeds = sorted({r["seed"] for r in runs})
    strategies = list(dict.fromkeys(r["strategy"] for r in runs))
    ref = {s: max(best_value(r) for r in runs if r["seed"] == s) for s in seeds}
    untrained = {s: next(r["untrained_map"] for r in runs if r["seed"] == s) for s in seeds}
    rows = []
    for r in runs:
        s = r["seed"]
        gain_threshold = untrained[s] + fraction * (ref[s] - untrained[s])
        rows.append(
            {
                "strategy": r["strategy"],
                "seed": s,
                "best": best_value(r),
                "epochs_total": curve(r)[0][-1],
                "trials": len(r["trials"]),
                "pruned": sum(t["state"] == "PRUNED" for t in r["trials"]),
                "to_95": epochs_to_reach(r, fraction * ref[s]),
                "to_95_gain": epochs_to_reach(r, gain_threshold),
                "reference": ref[s],
                "untrained": untrained[s],
                "seconds": r["seconds"],
            }
        )
    summary = {}
    for st in strategies:
        mine = [row for row in rows if row["strategy"] == st]
        summary[st] = {
            "epochs_total": sum(row["epochs_total"] for row in mine),
            "best_mean": sum(row["best"] for row in mine) / len(mine),
            # a run that never reached the threshold is charged its whole budget (a lower bound)
            "to_95": sum(_charged(row, "to_95") for row in mine),
            "to_95_gain": sum(_charged(row, "to_95_gain") for row in mine),
            "missed_95": sum(row["to_95"] is None for row in mine),
            "missed_95_gain": sum(row["to_95_gain"] is None for row in mine),
        }
    if BASELINE in summary:
        base = summary[BASELINE]
        for st in strategies:
            for key in ("to_95", "to_95_gain", "epochs_total"):
                summary[st][f"ratio_{key}"] = summary[st][key] / max(base[key], 1)
    return {"rows": rows, "summary": summary, "reference": ref, "untrained": untrained}


def _charged(row: dict, key: str) -> int:
    return row[key] if row[key] is not None else row["epochs_total"]


# ---- figure --------------------------------------------------------------------------------
COLOURS = ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def figure(runs: list[dict], result: dict, title: str):
    """Best-so-far val mAP (left) and the same as a fraction of the seed's best (right)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("best-so-far val mAP", "fraction of the best value found (same seed)"),
    )
    strategies = list(result["summary"])
    dashes = ("solid", "dash", "dot", "dashdot")
    for i, st in enumerate(strategies):
        colour = COLOURS[i % len(COLOURS)]
        for r in (r for r in runs if r["strategy"] == st):
            xs, ys = curve(r)
            xs, ys = [0, *xs], [math.nan, *ys]
            ref = result["reference"][r["seed"]]
            line = dict(color=colour, shape="hv", dash=dashes[r["seed"] % len(dashes)])
            name = f"{st} seed {r['seed']}"
            fig.add_trace(
                go.Scatter(x=xs, y=ys, mode="lines", line=line, name=name, legendgroup=name),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[y / ref for y in ys],
                    mode="lines",
                    line=line,
                    name=name,
                    legendgroup=name,
                    showlegend=False,
                ),
                row=1,
                col=2,
            )
    fig.add_hline(
        y=0.95,
        line=dict(color="black", width=1, dash="dot"),
        row=1,
        col=2,
        annotation_text="95 %",
        annotation_position="bottom right",
    )
    fig.update_xaxes(title_text="cumulative training epochs")
    fig.update_yaxes(title_text="val mAP", row=1, col=1)
    fig.update_yaxes(title_text="best-so-far / best of the seed", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", width=1200, height=520)
    return fig


def save_figure(fig, out: Path, name: str = "hpo_efficiency") -> str:
    """HTML always; PNG when kaleido and a browser work. Returns a note for the log."""
    fig.write_html(out / f"{name}.html", include_plotlyjs="cdn")
    if not os.environ.get("BROWSER_PATH"):
        for candidate in (
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ):
            if Path(candidate).is_file():
                os.environ["BROWSER_PATH"] = candidate
                break
    try:
        fig.write_image(out / f"{name}.png", width=1200, height=520, scale=1.5)
    except Exception as exc:  # noqa: BLE001 - kaleido/browser failures come in many types
        return f"PNG not written ({type(exc).__name__}: {str(exc)[:160]}); the HTML has the figure"
    return f"wrote {out / f'{name}.html'} and {out / f'{name}.png'}"


# ---- driver --------------------------------------------------------------------------------
def table(result: dict) -> str:
    lines = ["strategy         seed  trials pruned epochs  best    to 95%  to 95% gain  seconds"]
    for row in result["rows"]:
        lines.append(
            f"{row['strategy']:<16} {row['seed']:>4} {row['trials']:>7} {row['pruned']:>6} "
            f"{row['epochs_total']:>6}  {row['best']:.4f} {_fmt(row['to_95']):>7} "
            f"{_fmt(row['to_95_gain']):>12} {row['seconds']:>8.0f}"
        )
    lines.append("")
    lines.append("strategy         epochs  mean best  to 95% (ratio)   to 95% gain (ratio)  missed")
    for st, s in result["summary"].items():
        lines.append(
            f"{st:<16} {s['epochs_total']:>6}  {s['best_mean']:.4f}    "
            f"{s['to_95']:>4} ({s.get('ratio_to_95', math.nan):.2f})      "
            f"{s['to_95_gain']:>4} ({s.get('ratio_to_95_gain', math.nan):.2f})          "
            f"{s['missed_95']}/{s['missed_95_gain']}"
        )
    return "\n".join(lines)


def _fmt(value: int | None) -> str:
    return "-" if value is None else str(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default=str(SAMPLE), help="11k Hands folder (default: the shared sample)"
    )
    p.add_argument("--space", default="tiny-vit", help="search space (name or YAML file)")
    p.add_argument(
        "--strategies",
        nargs="+",
        default=[BASELINE, "tpe:median"],
        help="sampler:pruner pairs; median@K / hyperband@K may first prune after epoch K "
        "(plain names: as `hpo run` builds them); random:none is the reference",
    )
    p.add_argument(
        "--headline", help="strategy of the last line (default: the first after random:none)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial at most")
    p.add_argument("--aspects", nargs="+", default=["all"])
    p.add_argument("--num-splits", type=int, default=5, help="val query/gallery splits")
    p.add_argument("--workers", type=int, default=2, help="studies run in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--quick", action="store_true", help="1 seed, 8 trials of at most 4 epochs")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="generated hands (120 subjects, 3 images per aspect, 64 px) instead of --data",
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", help="result file names (default: hpo_efficiency[_synthetic])")
    p.add_argument("--from-json", help="analyse and plot saved runs instead of running")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.epochs = args.seeds[:1], 8, 4
    if args.name is None and args.from_json:
        args.name = Path(args.from_json).stem
    elif args.name is None:
        args.name = "hpo_efficiency_synthetic" if args.synthetic else "hpo_efficiency"
    return args


def run_all(args: argparse.Namespace) -> list[dict]:
    if args.synthetic:
        from hpo.search.study import synthetic_data

        args.data = str(synthetic_data(REPO / "studies", **SYNTHETIC))
    if not (Path(args.data) / "HandInfo.csv").is_file():
        raise SystemExit(f"error: no 11k Hands data at {args.data} (pass --data DIR)")
    opts = dict(
        space=args.space,
        data=str(args.data),
        aspects=args.aspects,
        epochs=args.epochs,
        trials=args.trials,
        num_splits=args.num_splits,
        threads=args.threads,
    )
    jobs = [(st, seed) for seed in args.seeds for st in args.strategies]
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked thread pools
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_study, st, seed, opts) for st, seed in jobs]
        runs = []
        for (st, seed), fut in zip(jobs, futures, strict=True):
            runs.append(fut.result())
            print(
                f"done {st} seed {seed}: best {best_value(runs[-1]):.4f}, "
                f"{curve(runs[-1])[0][-1]} epochs, {runs[-1]['seconds']:.0f} s",
                flush=True,
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs, meta = saved["runs"], saved["meta"]
    else:
        start = time.perf_counter()
        runs = run_all(args)
        meta = {k: v for k, v in vars(args).items() if k not in ("out", "from_json", "name")}
        meta["wall_seconds"] = round(time.perf_counter() - start, 1)
        meta["date"] = time.strftime("%Y-%m-%d %H:%M")
        (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    result = analyse(runs)
    print(table(result))
    where = "synthetic hands" if meta.get("synthetic") else "the 11k sample"
    title = (
        f"tiny-vit on {where} ({' '.join(meta['aspects'])}): {meta['trials']} trials "
        f"of <= {meta['epochs']} epochs, seeds {meta['seeds']}"
    )
    print(save_figure(figure(runs, result, title), out, args.name))
    others = [st for st in result["summary"] if st != BASELINE]
    headline = args.headline or (others[0] if others else None)
    ratio = result["summary"][headline].get("ratio_to_95", math.nan) if headline else math.nan
    print(f"headline strategy: {headline}")
    print(f"epochs_ratio_95={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
