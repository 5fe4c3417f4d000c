"""What ``hpo confirm`` and ``hpo final`` share: their worker options, the checks that come
before Optuna and torch load, and opening the study their runs belong to."""

from __future__ import annotations

import argparse
from typing import Any

from handreid.errors import UserError
from hpo.commands._argv import replaced
from hpo.commands._common import watch_parent, worker_args
from hpo.commands._run_checks import refuse_sqlite_workers
from hpo.fleet import slurm


def add_fleet_options(p: argparse.ArgumentParser, what: str) -> None:
    """--workers, --gpus, --device, --heartbeat, --quiet, Slurm's options and the hidden
    worker ones; ``what``: the workers' name in --slurm's help ("confirm workers")."""
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
    slurm.add_arguments(p, what)
    worker_args(p)


def check_fleet_args(args: argparse.Namespace) -> None:
    """The worker options that need nothing loaded: refused in a blink."""
    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: must be at least 1")
    refuse_sqlite_workers(args.storage, args.workers)
    from handreid.devices import check_device_name

    check_device_name(args.device)


def open_fleet(args: argparse.Namespace) -> tuple[Any, Any, list[str], Any]:
    """(storage, study, GPUs, device) for a command whose runs workers share: Optuna quiet,
    a worker watching its parent and handling Slurm's signals, --slurm's options checked."""
    import optuna

    from handreid.engine import resolve_device
    from hpo.fleet.workers import parse_gpus
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
    return storage, study, gpus, device


def run_fleet(
    args: argparse.Namespace,
    companion,
    *,
    job,
    done: int,
    todo: int,
    gpus: list[str],
    label,
    line,
    what: str,
    child,
    recover,
    objective,
    work,
    hint: str,
    count=None,
) -> tuple[int, bool]:
    """Do the queued runs of ``companion``: as the Slurm ``job`` (watched with --wait), with
    --workers local processes (``child(lines)``: their argv), or here, with
    ``work(companion, objective(progress), on_run)`` (Ctrl-C and SIGTERM end it with their exit
    code). Returns (exit code, go on): go on is False when the command should stop at once
    (Slurm without --wait, which prints ``hint``, or an interrupted watch)."""
    from optuna.trial import TrialState

    from handreid.errors import interrupt_code
    from hpo.commands._common import progress_mode, worker_prefix
    from hpo.common.lines import fit
    from hpo.fleet.progress import Progress
    from hpo.fleet.workers import child_lines, run_workers

    def complete(trials) -> int:
        return sum(t.state == TrialState.COMPLETE for t in trials)

    complete = count or complete  # which finished runs count towards ``done + todo``

    mode = progress_mode(args)
    progress = Progress(
        done + todo,
        mode=mode,
        initial=done,
        slots=args.workers,
        label=label,
        line=line,
        count=complete,
        best=False,
        prefix=worker_prefix(args),
        desc=what if args.workers == 1 else f"{what} ({args.workers} workers)",
    )
    if job is not None:
        code = slurm.follow(
            args,
            job,
            companion,
            done + todo,
            mode,
            count=lambda c: complete(c.get_trials()),
            recover=recover,
            progress=dict(label=label, line=line, count=complete, best=False),
        )
        if not args.wait or code == 130:
            if not args.wait:
                print(fit(hint))
            return code, False
        return code, True
    if args.workers > 1:
        code = run_workers(companion, child(child_lines(mode)), args.workers, gpus, done + todo,
                           progress)  # fmt: skip
        return code, True
    run = objective(progress)
    with progress:
        try:
            work(companion, progress.started(run), progress.on_trial)
        except KeyboardInterrupt as exc:
            return interrupt_code(exc), True
    return 0, True
