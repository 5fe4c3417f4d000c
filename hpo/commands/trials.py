"""``hpo trials``: list a study's trials."""

from __future__ import annotations

import argparse
import sys

from hpo.commands._common import add_command, print_json, storage_arg, study_arg


def add_parser(sub) -> None:
    from hpo.common.lines import STATES

    p = add_command(
        sub, "trials", "list a study's trials: state, value ± SE, time, epochs, why it ended"
    )
    study_arg(p)
    storage_arg(p)
    p.add_argument(
        "--state",
        nargs="+",
        choices=STATES,
        metavar="STATE",
        help=f"only trials in these states: {', '.join(STATES)} (default: all)",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument(
        "--table",
        action="store_true",
        help="one row per trial, best first: number, state, val mAP, SE and the parameters "
        "that fit the terminal (the default on a terminal)",
    )
    form.add_argument(
        "--long",
        action="store_true",
        help="each trial in full: value ± SE, epochs, time, why it ended and every parameter "
        "(the default in a pipe or a file, whose readers look for these lines)",
    )
    form.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpo.common.lines import trial_line
    from hpo.search.study import load_study
    from hpo.views import listing
    from hpo.views.model import load_view

    view = load_view(load_study(args.storage, args.study))
    trials = listing.select(view, args.state)
    if args.json:
        records = [listing.trial_record(t) for t in trials]
        print_json({"study": view.name, "trials": records})
        return 0
    if not trials:
        which = f" in state {', '.join(args.state)}" if args.state else ""
        print(f"study {listing.printable(view.name)} has no trials{which}")
        return 0
    if args.table or (not args.long and sys.stdout.isatty()):
        print(listing.trials_table(trials))
        return 0
    for t in trials:
        print(trial_line(t))
    return 0
