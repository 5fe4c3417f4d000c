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

    from hpo.records.storage import open_storage, shown
    from hpo.views.listing import studies_table

    storage = open_storage(args.storage, create=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"no studies in {shown(args.storage)}")
        return 0
    print(studies_table(storage, summaries))
    return 0
