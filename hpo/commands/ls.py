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
    from hpo.views.listing import printable

    storage = open_storage(args.storage, create=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"no studies in {shown(args.storage)}")
    from hpo.records.companion import SUFFIX, is_companion
    from hpo.views.headline import short

    names = {s.study_name for s in summaries}
    # a companion study (``<study>.confirm``) is listed right under its parent
    order = sorted(
        summaries,
        key=lambda s: (s.study_name.removesuffix(SUFFIX), is_companion(s.study_name)),
    )
    rows = []
    for s in order:
        best = f"{s.best_trial.value:.4f}" if s.best_trial is not None else "-"
        child = is_companion(s.study_name) and s.study_name.removesuffix(SUFFIX) in names
        if child:
            decided = "its confirm runs"
        else:
            decided = short(optuna.load_study(study_name=s.study_name, storage=storage))
        name = ("  " if child else "") + printable(s.study_name)
        rows.append((name, f"trials {s.n_trials:<4} best {best}  {decided}"))
    width = max(len(name) for name, _ in rows)
    for name, rest in rows:
        print(f"{name:<{width}}  {rest}")
    return 0
