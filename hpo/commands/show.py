"""``hpo show``: a study's counts, best and top trials, baseline and confirmation; or one
trial's epochs."""

from __future__ import annotations

import argparse

from handreid.errors import UserError
from hpo.commands._common import add_command, print_json, storage_arg, study_arg


def add_parser(sub) -> None:
    from hpo.common.lines import TOP

    p = add_command(
        sub,
        "show",
        "counts, best trial, top trials, the best trial against the baseline, the confirmation; "
        "or one trial's epochs",
    )
    study_arg(p)
    storage_arg(p)
    p.add_argument("--top", type=int, default=TOP, help="how many of the best trials to list")
    p.add_argument(
        "--trial", type=int, metavar="N", help="show trial N and its per-epoch table instead"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:  # before Optuna loads
        raise UserError(f"--top={args.top}: must be at least 1")
    from hpo.records.artifacts import existing_artifact_store
    from hpo.search.study import load_study
    from hpo.views import listing
    from hpo.views.model import load_view

    view = load_view(load_study(args.storage, args.study), existing_artifact_store())
    if args.trial is not None:
        trial = listing.find_trial(view, args.trial)
        rows = listing.epoch_rows(view, trial)
        if args.json:
            print_json({"trial": listing.trial_record(trial), "epochs": rows})
        else:
            from hpo.common.lines import trial_line

            print(trial_line(trial))
            print(listing.epoch_table(rows))
        return 0
    if args.json:
        print_json(listing.study_summary(view, top=args.top))
    else:
        print(listing.show_text(view, top=args.top))
    return 0
