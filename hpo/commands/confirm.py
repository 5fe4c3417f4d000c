"""``hpo confirm``: re-train the top trials and the baselines on fresh seeds; compare them
paired."""

from __future__ import annotations

import argparse
import sys

from handreid.errors import UserError, interrupt_code
from hpo.commands._argv import replaced
from hpo.commands._common import (
    add_command,
    progress_mode,
    storage_arg,
    study_arg,
    watch_parent,
    worker_args,
    worker_prefix,
)
from hpo.commands._run_checks import refuse_sqlite_workers
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
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument(
        "--gpus", help="GPU numbers to pin workers to, round-robin, e.g. 0,1 (default: none)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--heartbeat", type=int, default=30, help="heartbeat seconds on database storages"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="one line per finished run only: no bar, status line or epoch lines",
    )
    slurm.add_arguments(p, "confirm workers")
    worker_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # the arguments are checked before Optuna, torch and open_clip load (seconds); those that
    # need no storage name first
    check_plan_args(args.top, args.seeds)
    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: must be at least 1")
    refuse_sqlite_workers(args.storage, args.workers)
    from handreid.devices import check_device_name

    check_device_name(args.device)

    import optuna
    from optuna.trial import TrialState

    from handreid.engine import fit as train
    from handreid.engine import resolve_device
    from hpo.common.lines import confirm_label, fit, trial_line
    from hpo.decide import confirm as cf
    from hpo.fleet.progress import Progress
    from hpo.fleet.workers import child_lines, parse_gpus, run_workers
    from hpo.records.artifacts import open_artifact_store
    from hpo.records.checkpoints import ConfirmKeeper, keep_decided
    from hpo.records.configs import study_space
    from hpo.search.objective import DataPool, Objective
    from hpo.search.study import load_study, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    watch_parent(args)
    slurm.check_args(args, lambda flag, value: replaced(args.argv, drop=flag, add=[flag, value]))
    if args.worker:
        slurm.install_handlers()
    gpus = parse_gpus(args.gpus)
    device = resolve_device(args.device) if args.workers == 1 else None
    storage = open_storage(args.storage, create=False, heartbeat=args.heartbeat or None)
    study = load_study(args.storage, args.study)
    space = study_space(study)
    if space is None:
        raise UserError(
            f"study {study.study_name!r} stored no search space; it cannot be confirmed"
        )
    p = cf.plan(study, args.top, args.seeds)
    pool = DataPool()
    pool.get(space.config({}))  # the study's data must still be there before anything is queued
    job = None
    if args.slurm is not None:
        child = ["confirm", "--worker", "--study", study.study_name, "--storage", args.storage]
        child += ["--top", str(args.top), "--seeds", str(args.seeds), "--device", args.device]
        child += ["--heartbeat", str(args.heartbeat), "--lines", "epochs"]
        job = slurm.prepare(args, study.study_name, child, "hpo confirm worker")
        if job is None:
            return 0
    companion = cf.open_companion(study, storage)
    if not args.worker:
        cf.fail_dead_runs(companion)
        cf.queue(study, companion, p)
    code = 0
    store = open_artifact_store()  # each run's records, the models kept (hpo.records.checkpoints)
    mode = progress_mode(args)
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
    progress = Progress(
        done + todo,
        mode=mode,
        initial=done,
        slots=args.workers,
        label=confirm_label,
        line=lambda t, columns=None: trial_line(
            t, label=confirm_label(t), params=False, columns=columns
        ),
        count=lambda trials: sum(t.state == TrialState.COMPLETE for t in trials),
        best=False,
        prefix=worker_prefix(args),
        desc="confirm runs" if args.workers == 1 else f"confirm runs ({args.workers} workers)",
    )
    if job is not None:
        code = slurm.follow(
            args,
            job,
            companion,
            done + todo,
            mode,
            count=lambda c: sum(t.state == TrialState.COMPLETE for t in c.get_trials()),
            recover=lambda: (cf.fail_dead_runs(companion), cf.queue(study, companion, p)),
            progress=dict(
                label=progress.label, line=progress.line, count=progress.count, best=False
            ),
        )
        if not args.wait or code == 130:
            if not args.wait:
                print(
                    fit(
                        f"once it is done, `hpo confirm --study {study.study_name} --storage "
                        f"{args.storage}` prints the comparison"
                    )
                )
            return code
    elif args.workers > 1:
        child = ["confirm", "--worker", "--study", study.study_name, "--storage", args.storage]
        child += ["--top", str(args.top), "--seeds", str(args.seeds), "--device", args.device]
        child += ["--heartbeat", str(args.heartbeat), "--lines", child_lines(mode)]
        code = run_workers(companion, child, args.workers, gpus, done + todo, progress)
    else:
        objective = Objective(
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
        with progress:
            try:
                cf.work(companion, progress.started(objective), progress.on_trial)
            except KeyboardInterrupt as exc:
                code = interrupt_code(exc)
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
