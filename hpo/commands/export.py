"""``hpo export``: write a trial's complete trainer config as YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpo.commands._common import add_command, storage_arg, study_arg
from hpo.common.attrs import attrs_of


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
        help="also copy the trial's model next to the YAML (best.yaml -> best.pt): the one "
        "its confirm kept, else its study checkpoint",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --checkpoint: replace an existing model file at the YAML's name with .pt",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpo.common.paths import study_dir
    from hpo.records.artifacts import existing_artifact_store
    from hpo.search.study import load_study
    from hpo.views.export import check_export_targets, export_trial, pick_trial
    from hpo.views.model import load_view

    study = load_study(args.storage, args.study)
    out = Path(args.out) if args.out else study_dir(study.study_name) / "best.yaml"
    check_export_targets(out, args.checkpoint)
    view = load_view(study, existing_artifact_store())
    trial = pick_trial(view, args.trial)
    if args.checkpoint:  # an unreadable checkpoint entry fails before the YAML is written
        from hpo.records.checkpoints import check_checkpoint_target, checkpoint_source

        source = checkpoint_source(view.study, trial, view.store)
        check_checkpoint_target(
            out.with_suffix(".pt"), source, view.store, overwrite=args.overwrite
        )
    path, trial = export_trial(view, out, trial.number, storage=args.storage)
    from hpo.common.lines import fit, runs_text, value_text

    value = value_text(trial.value, attrs_of(trial).get("value_se"))
    print(
        fit(f"wrote {path} (trial {trial.number}, val mAP {value}, {runs_text(attrs_of(trial))})")
    )
    from hpo.views.export import floor_warning

    if warning := floor_warning(view, trial):  # the exported trial's own, not the winner's
        print(fit(f"warning: {warning}"))
    if args.checkpoint:
        from hpo.records.checkpoints import export_checkpoint

        print(fit(export_checkpoint(view.study, trial, path, view.store)[1]))
    from hpo.views.headline import headline

    if view.confirm is not None or trial.number == view.study.best_trial.number:
        print(fit(headline(view)))  # the decision this export stands on
    return 0
