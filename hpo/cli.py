"""``hpo run|export|show|ls``: tune the handreid trainer with Optuna."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from handreid.config import parse_overrides
from handreid.errors import UserError

log = logging.getLogger("hpo")


def _storage_arg(p: argparse.ArgumentParser) -> None:
    from hpo.study import DEFAULT_STORAGE

    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"database URL or journal file path (default {DEFAULT_STORAGE})")


def _data_changes(args: argparse.Namespace, space) -> dict:
    """Fixed keys from the command line: epochs, data options and --set overrides."""
    from hpo.study import synthetic_data

    changes = parse_overrides(args.set)
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.dataset:
        changes["dataset"] = args.dataset
    if args.aspects:
        changes["aspects"] = args.aspects
    data = args.data or space.base.get("data_root")
    if not data:
        raise UserError("no data: pass --data DIR (an 11k, HD or folder dataset) or --data synthetic")
    if data == "synthetic":
        changes["dataset"] = "11k"
        changes["data_root"] = str(synthetic_data(seed=args.seed or 0))
    else:
        if not Path(data).exists():
            raise UserError(f"dataset folder not found: {data}")
        changes["data_root"] = str(data)
    return changes


def _cmd_run(args: argparse.Namespace) -> int:
    import optuna

    from hpo.objective import DataPool, Objective
    from hpo.space import load_space
    from hpo.study import create_or_resume, make_pruner, make_sampler, open_storage, run_until

    space = load_space(args.space or args.backbone)
    sampler = make_sampler(args.sampler, args.seed)  # unknown names fail before any work
    space = space.with_base(**_data_changes(args, space))
    base_cfg = space.config({})
    pruner = make_pruner(args.pruner, base_cfg.epochs)
    pool = DataPool()
    pool.get(base_cfg)  # a missing or broken dataset fails here, before a study exists
    if args.storage.startswith("sqlite:///studies/") or args.storage.startswith("studies/"):
        Path("studies").mkdir(exist_ok=True)
    storage = open_storage(args.storage)
    name = args.study or f"handreid-{args.backbone}"
    context = {"command": "hpo " + shlex.join(args.argv), "backbone": args.backbone,
               "data": base_cfg.data_root, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    study = create_or_resume(storage, name, space, sampler=sampler, pruner=pruner, context=context)
    objective = Objective(space, device=args.device, data=pool)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"study {name!r} in {args.storage}: {base_cfg.model}, {args.trials} trials, "
          f"sampler {args.sampler}, pruner {args.pruner}, data {base_cfg.data_root}")
    interrupted = False
    with _progress(study, args.trials, quiet=args.quiet) as on_trial:
        try:
            run_until(study, objective, args.trials, timeout=args.timeout, on_trial=on_trial)
        except KeyboardInterrupt:
            interrupted = True
    print(_summary(study))
    if interrupted:
        print("interrupted: the running trial was stopped and marked FAIL; re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


class _progress:
    """tqdm bar of finished trials with the best value so far, plus one line per trial."""

    def __init__(self, study, total: int, quiet: bool = False) -> None:
        self.study, self.total, self.quiet = study, total, quiet

    def __enter__(self):
        from tqdm.auto import tqdm

        from hpo.study import finished

        self.bar = tqdm(total=self.total, initial=min(finished(self.study), self.total), desc="trials",
                        unit="trial", disable=self.quiet, dynamic_ncols=True)
        return self.on_trial

    def on_trial(self, study, trial) -> None:
        from hpo.study import finished

        value = "-" if trial.value is None else f"{trial.value:.4f}"
        extra = trial.user_attrs.get("error", "")
        line = (f"trial {trial.number} {trial.state.name} value {value} epochs "
                f"{trial.user_attrs.get('epochs_run', '?')} {trial.params} {extra}").rstrip()
        if self.quiet:
            print(line)
        else:
            self.bar.write(line)
        self.bar.n = min(finished(study), self.total)
        try:
            self.bar.set_postfix(best=f"{study.best_value:.4f}")
        except ValueError:
            pass
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        self.bar.close()


def _summary(study) -> str:
    from hpo.study import counts

    c = counts(study)
    lines = [f"study {study.study_name}: {c['complete']} complete, {c['pruned']} pruned, "
             f"{c['fail']} failed, {c['running']} running"]
    try:
        best = study.best_trial
    except ValueError:
        lines.append("no completed trial yet")
        return "\n".join(lines)
    width = max(len(k) for k in best.params) if best.params else 10
    lines.append(f"best trial {best.number}: val mAP {best.value:.4f}"
                 + (f" (rank1 {best.user_attrs['rank1']:.4f})" if "rank1" in best.user_attrs else ""))
    lines += [f"  {k:<{width}}  {v}" for k, v in best.params.items()]
    return "\n".join(lines)


def _cmd_export(args: argparse.Namespace) -> int:
    from hpo.export import export_trial
    from hpo.study import STUDIES_DIR, load_study

    study = load_study(args.storage, args.study)
    out = Path(args.out) if args.out else STUDIES_DIR / study.study_name / "best.yaml"
    path, trial = export_trial(study, out, args.trial, storage=args.storage)
    print(f"wrote {path} (trial {trial.number}, val mAP {trial.value:.4f})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from hpo.study import load_study

    study = load_study(args.storage, args.study)
    print(_summary(study))
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    top = sorted(done, key=lambda t: t.value, reverse=True)[:5]
    if top:
        print("top trials:")
        for t in top:
            params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            print(f"  #{t.number:<4} mAP {t.value:.4f}  epochs {t.user_attrs.get('epochs_run', '?'):<3} {params}")
    return 0


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _cmd_ls(args: argparse.Namespace) -> int:
    import optuna

    from hpo.study import open_storage

    storage = open_storage(args.storage, create=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"no studies in {args.storage}")
    for s in summaries:
        best = f"{s.best_trial.value:.4f}" if s.best_trial is not None else "-"
        print(f"{s.study_name:<32} trials {s.n_trials:<5} best val mAP {best}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run (or resume) a study until it holds --trials finished trials")
    p.add_argument("--backbone", required=True, help="rn50, vitb16, tiny-vit, tiny-rn (a file in search_spaces/)")
    p.add_argument("--trials", type=int, default=50, help="the study's total of finished trials")
    p.add_argument("--data", help="dataset folder, or 'synthetic' to generate a demo set under studies/")
    p.add_argument("--dataset", choices=["11k", "hd", "folder"])
    p.add_argument("--aspects", nargs="+", help="aspects to use, e.g. 'dorsal right' or all")
    p.add_argument("--study", help="study name (default handreid-<backbone>)")
    _storage_arg(p)
    p.add_argument("--sampler", default="tpe", help="tpe, random or gp")
    p.add_argument("--pruner", default="median", help="median, hyperband or none")
    p.add_argument("--epochs", type=int, help="epochs per trial (overrides the space's base)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--space", help="search-space YAML (default search_spaces/<backbone>.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix a trainer key")
    p.add_argument("--quiet", action="store_true", help="plain lines instead of a progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("export", help="write a trial's complete trainer config as YAML")
    p.add_argument("--study")
    _storage_arg(p)
    p.add_argument("--trial", type=int, help="trial number (default: the best)")
    p.add_argument("--out", help="output YAML (default studies/<study>/best.yaml)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("show", help="best trial, counts and the top 5 of a study")
    p.add_argument("--study")
    _storage_arg(p)
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("ls", help="list the studies in a storage")
    _storage_arg(p)
    p.set_defaults(func=_cmd_ls)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.command == "run" and args.trials < 1:
        raise UserError(f"--trials={args.trials}: must be at least 1")
    return args.func(args)


def _sigterm(signum, frame):  # a terminated worker ends its trial like Ctrl-C does
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        code = run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
