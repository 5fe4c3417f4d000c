"""``hpo ls``: list the studies in a storage."""

from __future__ import annotations

import argparse

from hpo.commands._common import add_command, storage_arg


def add_parser(sub) -> None:
    p = add_command(sub, "ls", "list the studies in a storage")
    storage_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from hpo.listing import printable
    from hpo.storage import open_storage, shown

    storage = open_storage(args.storage, create=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"no studies in {shown(args.storage)}")
    for s in summaries:
        best = f"{s.best_trial.value:.4f}" if s.best_trial is not None else "-"
        print(f"{printable(s.study_name):<32} trials {s.n_trials:<5} best val mAP {best}")
    return 0
