"""What per-trial records cost: seconds added to each trial by the epoch history (history.json
+ curves.png) and by checkpoints (test report + save + upload + removals), and artifact sizes.

Runs a small tiny-vit study on synthetic data in a temporary folder with an artifact store and
``keep_checkpoints`` K, timing the history upload and the checkpoint keeper inside each trial.

    python benchmarks/bench_records.py [--trials 8] [--epochs 2] [--keep 3] [--folds 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from handreid.data.synthetic import write_synthetic
from hpo.common.attrs import attrs_of
from hpo.records.artifacts import open_artifact_store
from hpo.records.space import load_space
from hpo.search.objective import DataPool, Objective
from hpo.search.study import create_or_resume, make_pruner, run_until


class TimedObjective(Objective):
    """The objective, timing its history upload per trial."""

    history_seconds: dict[int, float]

    def _save_history(self, trial, status):
        start = time.perf_counter()
        super()._save_history(trial, status)
        self.history_seconds[trial.number] = time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--keep", type=int, default=3)
    ap.add_argument("--folds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "data", ids=40, per_id=10, size=64, seed=0)
        space = load_space("tiny-vit").with_base(
            data_root=str(root),
            epochs=args.epochs,
            val_folds=args.folds,
            num_splits=3,
            cache_dir=str(Path(tmp) / "cache"),
        )
        cfg = space.config({})
        study = create_or_resume(
            optuna.storages.RDBStorage(f"sqlite:///{tmp}/s.db"),
            "bench",
            space,
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=make_pruner("none", cfg.epochs),
            context={},
        )
        store = open_artifact_store(Path(tmp) / "artifacts")
        objective = TimedObjective(
            space, device=args.device, data=DataPool(), store=store, keep_checkpoints=args.keep
        )
        objective.history_seconds = {}
        keeper_seconds: dict[int, float] = {}
        seen = [0.0]

        def on_trial(_study, trial):
            keeper_seconds[trial.number] = objective.keeper.seconds - seen[0]
            seen[0] = objective.keeper.seconds

        run_until(study, objective, args.trials, on_trial=on_trial)
        print("trial  state     value   trial_s  history_s  checkpoint_s")
        for t in study.get_trials():
            print(
                f"{t.number:>5}  {t.state.name:<8} {t.value or 0:.4f} "
                f"{attrs_of(t).get('seconds', 0):>8.2f} "
                f"{objective.history_seconds.get(t.number, 0):>10.3f} "
                f"{keeper_seconds.get(t.number, 0):>12.3f}"
            )
        sizes: dict[str, list[int]] = {}
        for t in study.get_trials():
            for meta in optuna.artifacts.get_all_artifact_meta(t, storage=study._storage):
                path = Path(tmp) / "artifacts" / meta.artifact_id
                if path.exists():
                    sizes.setdefault(meta.filename, []).append(path.stat().st_size)
        for name, values in sorted(sizes.items()):
            print(
                f"{name}: {len(values)} files, median {statistics.median(values) / 1024:.1f} kB, "
                f"max {max(values) / 1024:.1f} kB"
            )
        trial_s = statistics.fmean(attrs_of(t)["seconds"] for t in study.get_trials())
        hist_s = statistics.fmean(objective.history_seconds.values())
        ckpt_s = statistics.fmean(keeper_seconds.values())
        print(
            f"mean per trial: {trial_s:.2f} s in all, history {hist_s:.3f} s "
            f"({100 * hist_s / trial_s:.1f}%), checkpoints {ckpt_s:.3f} s "
            f"({100 * ckpt_s / trial_s:.1f}%)"
        )


if __name__ == "__main__":
    main()
