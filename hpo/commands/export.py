"""``hpo export``: write a trial's complete trainer config as YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpo.commands._common import add_command, storage_arg, study_arg


def add_parser(sub) -> None:
    p = add_command(sub, "export", "write a trial's complete trainer config as YAML")
    study_arg(p)
    storage_arg(p)
    p.add_argument(
        "--trial", type=int, help="trial number (default: the confirmed winner, else the best)"
    )
    p.add_argument("--out", help="output YAML (default studies/<study>/best.yaml)")
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="also copy the trial's checkpoint next to the YAML (best.yaml -> best.pt)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpo.export import export_trial
    from hpo.paths import study_dir
    from hpo.study import load_study

    study = load_study(args.storage, args.study)
    out = Path(args.out) if args.out else study_dir(study.study_name) / "best.yaml"
    path, trial = export_trial(study, out, args.trial, storage=args.storage)
    from hpo.confirm import verdict
    from hpo.export import value_text

    print(f"wrote {path} (trial {trial.number}, val mAP {value_text(trial)})")
    if args.checkpoint:
        from hpo.checkpoints import export_checkpoint

        print(export_checkpoint(study, trial, path)[1])
    summary = study.user_attrs.get("confirm")
    if summary and summary.get("winner") == trial.number:
        print(verdict(summary))
    return 0
