"""``hpo confirm``: re-train the top trials and the baselines on fresh seeds; compare them
paired."""

from __future__ import annotations

import argparse
import sys

from handreid.errors import UserError
from hpo.commands._common import (
    add_command,
    storage_arg,
    study_arg,
)
from hpo.commands._fleet import add_fleet_options, check_fleet_args, open_fleet, run_fleet
from hpo.common.args import check_plan_args
from hpo.fleet import slurm


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "confirm",
        "re-train the top trials and the baselines on fresh seeds; compare them paired",
    )
    study_arg(p)
    storage_arg(p)
    p.add_argument("--top", type=int, default=5, help="how many of the best trials")
    p.add_argument(
        "--seeds", type=int, default=3, help="fresh training seeds per config (at least 2)"
    )
    add_fleet_options(p, "confirm workers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # the arguments are checked before Optuna, torch and open_clip load (seconds); those that
    # need no storage name first
    check_plan_args(args.top, args.seeds)
    check_fleet_args(args)

    from optuna.trial import TrialState

    from handreid.engine import fit as train
    from hpo.common.lines import confirm_label, fit, trial_line
    from hpo.decide import confirm as cf
    from hpo.records.artifacts import open_artifact_store
    from hpo.records.checkpoints import ConfirmKeeper, keep_decided
    from hpo.records.configs import study_space
    from hpo.search.objective import DataPool, Objective

    storage, study, gpus, device = open_fleet(args)
    space = study_space(study)
    if space is None:
        raise UserError(
            f"study {study.study_name!r} stored no search space; it cannot be confirmed"
        )
    p = cf.plan(study, args.top, args.seeds)
    pool = DataPool()
    pool.get(space.config({}))  # the study's data must still be there before anything is queued
    if p.new_ids and not args.worker:  # its verdict is checked against the floors measured there
        from hpo.decide.floors import ensure_confirm_floors

        ensure_confirm_floors(study, space.config({}), pool.get, device)
    job = None
    if args.slurm is not None:
        argv = ["confirm", "--worker", "--study", study.study_name, "--storage", args.storage]
        argv += ["--top", str(args.top), "--seeds", str(args.seeds), "--device", args.device]
        argv += ["--heartbeat", str(args.heartbeat), "--lines", "epochs"]
        job = slurm.prepare(args, study.study_name, argv, "hpo confirm worker")
        if job is None:
            return 0
    companion = cf.open_companion(study, storage)
    if not args.worker:
        cf.fail_dead_runs(companion)
        cf.queue(study, companion, p)
    store = open_artifact_store()  # each run's records, the models kept (hpo.records.checkpoints)
    runs = companion.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in runs)
    todo = sum(t.state == TrialState.WAITING for t in runs)  # queued now or by an earlier start
    if not args.worker:
        print(
            fit(
                f"confirming trials {p.trials} of study {study.study_name!r} on fresh seeds "
                f"{p.seeds}: {len(p.pairs())} runs, {todo} to do "
                f"(runs are trials of study {companion.study_name!r})"
            ),
            flush=True,
        )
        for note in p.notes:
            print(fit(f"note: {note}"), flush=True)

    def child(lines: str) -> list[str]:
        argv = ["confirm", "--worker", "--study", study.study_name, "--storage", args.storage]
        argv += ["--top", str(args.top), "--seeds", str(args.seeds), "--device", args.device]
        return argv + ["--heartbeat", str(args.heartbeat), "--lines", lines]

    def objective(progress) -> Objective:
        return Objective(
            space,
            device=device,
            data=pool,
            prune_between_runs=False,
            keep_identity_ap=True,
            store=store,
            on_epoch=progress.on_epoch,
            fit_fn=progress.batches(train),  # the status line moves with each batch
            keeper=ConfirmKeeper(store),
        )

    code, go_on = run_fleet(
        args,
        companion,
        job=job,
        done=done,
        todo=todo,
        gpus=gpus,
        label=confirm_label,
        line=lambda t, columns=None: trial_line(
            t, label=confirm_label(t), params=False, columns=columns
        ),
        what="confirm runs",
        child=child,
        recover=lambda: (cf.fail_dead_runs(companion), cf.queue(study, companion, p)),
        objective=objective,
        work=cf.work,
        hint=f"once it is done, `hpo confirm --study {study.study_name} --storage "
        f"{args.storage}` prints the comparison",
    )
    if not go_on:
        return code
    if args.worker:
        return code
    summary = cf.summarize(study, companion, p, storage=args.storage)
    kept = keep_decided(companion, summary, store)
    summary["models"] = sorted([n, run] for n, run in kept.items())  # [trial, companion trial]
    cf.store(study, summary)
    print(cf.format_summary(summary))
    from hpo.decide.floors import floor_lines

    for line in floor_lines(study):
        print(fit(line))
    from hpo.views.report import annotate_after_confirm

    annotate_after_confirm(study, companion)
    if code in (130, 143):
        print(
            "interrupted: finished runs are kept; re-run the same command to do the rest",
            file=sys.stderr,
        )
    return code
