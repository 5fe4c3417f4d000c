"""``hpo run``: run (or resume) a study until it holds --trials finished trials."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from handreid.errors import interrupt_code
from hpo.commands._argv import masked, replaced, worker_argv
from hpo.commands._common import (
    add_command,
    count,
    progress_mode,
    storage_arg,
    watch_parent,
    worker_args,
    worker_prefix,
)
from hpo.commands._run_checks import StorageFailures, check_run_target, data_changes
from hpo.common.paths import MAX_NAME
from hpo.fleet import slurm

if TYPE_CHECKING:  # imported lazily at run time: `hpo --help` stays fast
    import optuna

    from handreid.config import TrainConfig
    from hpo.records.space import SearchSpace


def add_parser(sub) -> None:
    from hpo.records.checkpoints import DEFAULT_KEEP
    from hpo.records.space import builtin_spaces
    from hpo.records.storage import DEFAULT_JOURNAL, DEFAULT_STORAGE
    from hpo.search.study import PRUNERS, SAMPLERS

    p = add_command(sub, "run", "run (or resume) a study until it holds --trials finished trials")
    p.add_argument(
        "--backbone",
        required=True,
        choices=builtin_spaces(),
        help="the search space shipped for this backbone (replaced by --space FILE); "
        "also names the study",
    )
    p.add_argument("--trials", type=int, default=50, help="the study's total of finished trials")
    p.add_argument(
        "--data", help="dataset folder, or 'synthetic' to generate a demo set under studies/"
    )
    p.add_argument(
        "--dataset",
        choices=["11k", "hd", "folder"],
        help="dataset layout (default: the search space's, 11k)",
    )
    p.add_argument("--aspects", nargs="+", help="aspects to use, e.g. 'dorsal right' or all")
    p.add_argument(
        "--study",
        help=f"study name (default handreid-<backbone>); at most {MAX_NAME} characters, no '/', "
        "'\\', '..' or control characters, since outputs go to studies/<name>/",
    )
    storage_arg(
        p, f"{DEFAULT_STORAGE}; with --workers 2 or more the journal file {DEFAULT_JOURNAL}"
    )
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="Optuna sampler")
    p.add_argument(
        "--pruner",
        default="median",
        choices=PRUNERS,
        help="median stops trials whose val mAP falls below the other trials' median at the same fold and epoch (and between folds, below the top third of complete trials, corrected for their selection); runs prunes only between folds; baselines never; none prunes nothing",
    )
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the search space's base)")
    p.add_argument(
        "--timeout", type=float, help="stop starting trials after this many seconds (default: none)"
    )
    p.add_argument(
        "--seed",
        type=int,
        help="mixed with host, PID and start time into this process's sampler seed, so that "
        "processes sharing a study never draw the same suggestions; every trial records the seed "
        "it was drawn with (user attribute sampler_seed), so a study is reproducible from its "
        "record, not by re-running the command: re-train a trial with `hpo export --trial N` and "
        "`handreid train`. Also the seed of --data synthetic (default 0)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--space", help="search-space YAML file (default: the one shipped for --backbone)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a trainer key (YAML-typed value); repeatable",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="one line per finished trial only: no bar, status line or epoch lines",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the study (default 1; with more, the default storage "
        "is the journal file studies/handreid.log)",
    )
    p.add_argument(
        "--gpus", help="GPU numbers to pin workers to, round-robin, e.g. 0,1 (default: none)"
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds between heartbeats on database storages; a worker on another machine "
        "silent for two intervals is dead and its trial is retried (0 disables); workers on "
        "this machine are checked by process id at once, on every storage",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=count,
        default=DEFAULT_KEEP,
        metavar="K",
        help="keep the models of the best K complete trials as trial artifacts, removing those "
        "that fall out of the top K (on a journal file the removed ones stay listed on their "
        f"trial pages); 0 keeps none (default {DEFAULT_KEEP})",
    )
    slurm.add_arguments(p, "hpo run workers")
    p.add_argument(
        "--retry-baselines",
        action="store_true",
        help="queue again the baselines whose every try failed or was interrupted (after "
        "the retry limit a baseline is not queued again; `hpo show` lists them)",
    )
    worker_args(p)
    p.set_defaults(func=run, storage=None)


def run(args: argparse.Namespace) -> int:
    import optuna

    from hpo.records.space import load_space, space_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines report progress
    watch_parent(args)
    slurm.check_args(args, lambda flag, value: replaced(args.argv, drop=flag, add=[flag, value]))
    if args.worker:
        slurm.install_handlers()  # in a Slurm task: its signals end the trial cleanly
    # arguments, storage, search space and config are checked before torch and open_clip
    # load (seconds): a refusal that needs no model comes at once
    storage_url, name, gpus = check_run_target(args)
    from handreid.devices import check_device_name

    check_device_name(args.device)
    space = load_space(space_file(args.space) if args.space else args.backbone)
    space = space.with_base(**data_changes(args, space))
    base_cfg = space.config({})

    from handreid.config import config_warnings
    from handreid.data.inspect import check_batches
    from handreid.engine import resolve_device
    from handreid.models import build_model
    from hpo.common.lines import fit
    from hpo.fleet.progress import finished
    from hpo.records.storage import open_storage, shown
    from hpo.search.objective import DataPool
    from hpo.search.study import create_or_resume, make_pruner, make_sampler, process_seed
    from hpo.views.listing import summary_lines

    device = resolve_device(args.device) if args.workers == 1 else None
    runs = base_cfg.val_folds * base_cfg.val_repeats
    pruner = make_pruner(args.pruner, base_cfg.epochs, base_cfg.warmup_epochs, runs)
    pool = DataPool()
    # a missing or broken dataset, or weights that cannot be had, fail here, before a study exists
    data = pool.get(base_cfg)
    check_batches(base_cfg, data.train_labels.tolist())
    build_model(base_cfg, data.num_classes, data.aspects)
    for message in config_warnings(base_cfg):
        warnings.warn(message, UserWarning, stacklevel=1)
    job = None
    if args.slurm is not None:
        argv = worker_argv(args, storage_url, name, base_cfg.data_root, base_cfg.dataset)
        job = slurm.prepare(args, name, [*argv, "--lines", "epochs"], "hpo run worker")
        if job is None:
            return 0
    if storage_url.startswith(("sqlite:///studies/", "studies/")):
        Path(storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url, heartbeat=args.heartbeat or None)
    context = {
        "command": "hpo " + shlex.join(masked(args.argv)),
        "backbone": args.backbone,
        "data": base_cfg.data_root,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    mode = progress_mode(args)
    with StorageFailures(storage_url) as guard:
        study = create_or_resume(storage, name, space, sampler=None, pruner=pruner, context=context)
        guard.study = study
        if args.retry_baselines and not args.worker:
            from hpo.search.baselines import queue_dropped

            for label in queue_dropped(study):
                print(f"queued baseline {label} again", flush=True)
        seed = process_seed(args.seed)
        study.sampler = make_sampler(args.sampler, seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        workers = f"{args.slurm} Slurm task(s)" if job else f"{args.workers} worker(s)"
        if not args.worker:
            print(
                fit(
                    f"study {name!r} in {shown(storage_url)}: {base_cfg.model}, "
                    f"{args.trials} trials, sampler {args.sampler} "
                    f"({f'seed {seed}' if args.workers == 1 and not job else 'a seed per worker'})"
                    f", pruner {args.pruner}, {workers}, data {base_cfg.data_root}"
                ),
                flush=True,
            )
        _floors_at_start(args, study, base_cfg, pool)
        if job is not None:
            code = slurm.follow(args, job, study, args.trials, mode, count=finished)
            if not args.wait or code == 130:
                return code
        elif args.workers > 1:
            code = _run_workers(args, study, storage_url, name, base_cfg, gpus, mode)
        else:
            code = _run_here(args, study, space, device, pool, seed, mode)
        if args.worker:
            return code
        from hpo.search.baselines import dropped_lines
        from hpo.views.model import load_view
        from hpo.views.report import (
            annotate_after_run,  # note + figures for the dashboard; never raises
        )

        view = load_view(study)  # one read of the finished study for the summary and the note
        print(fit("\n".join(summary_lines(view) + dropped_lines(list(view.trials)))))

        # Optuna's plots warn about a study without completed trials (after an early Ctrl-C);
        # the summary above already says so
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        annotate_after_run(study, view)
    if code in (130, 143):
        print(  # one line, under 80 columns: an interrupt is reported as an error is
            f"{'terminated' if code == 143 else 'interrupted'}: running trials marked FAIL; "
            "re-run the same command to resume",
            file=sys.stderr,
        )
    elif code:
        print(f"error: a worker exited with status {code}", file=sys.stderr)
    return code


def _floors_at_start(args: argparse.Namespace, study, cfg, pool) -> None:
    """The study's floors, computed once (a worker or a rerun finds them stored)."""
    from hpo.common.lines import fit
    from hpo.decide.floors import ensure_floors, floors_text
    from hpo.records.storage import failure_reason

    try:
        record, computed = ensure_floors(study, cfg, pool.get, args.device)
    except (RuntimeError, ValueError) as exc:  # out of memory, say: a report, not the study
        if failure_reason(exc):
            raise
        print(
            fit(f"warning: could not compute the floors: {str(exc).splitlines()[0][:200]}"),
            file=sys.stderr,
        )
        return
    if not args.worker:
        how = f"computed in {record.get('seconds', 0):.1f} s" if computed else "stored"
        print(fit(f"{floors_text(record)} ({how})"), flush=True)


def _run_here(
    args: argparse.Namespace,
    study: optuna.Study,
    space: SearchSpace,
    device,
    pool,
    seed: int,
    mode: str,
) -> int:
    """One worker in this process; 130 after Ctrl-C (143 after SIGTERM), with no trial left
    RUNNING."""
    from handreid.engine import fit
    from hpo.fleet.progress import Progress, finished
    from hpo.fleet.recovery import interrupt_reason, release_own_trials
    from hpo.records.artifacts import open_artifact_store
    from hpo.search.objective import Objective
    from hpo.search.study import run_until

    progress = Progress(args.trials, mode=mode, initial=finished(study), prefix=worker_prefix(args))
    objective = Objective(
        space,
        device=device,
        data=pool,
        store=open_artifact_store(),
        on_epoch=progress.on_epoch,
        fit_fn=progress.batches(fit),  # the status line moves with each batch
        prune_between_runs=args.pruner != "none",  # 'none' means no pruning of any kind
        keep_checkpoints=args.keep_checkpoints,
    )
    with progress:
        try:
            run_until(
                study,
                progress.started(objective),
                args.trials,
                timeout=args.timeout,
                on_trial=lambda s, t: (objective.after_trial(s, t), progress.on_trial(s, t)),
                suggest=space.suggest,
                attrs={"sampler_seed": seed},
                report=progress.note,
            )
        except KeyboardInterrupt as exc:
            release_own_trials(study, interrupt_reason(exc))
            return interrupt_code(exc)
    return 0


def _run_workers(
    args: argparse.Namespace,
    study: optuna.Study,
    storage_url: str,
    name: str,
    cfg: TrainConfig,
    gpus: list[str],
    mode: str,
) -> int:
    from hpo.fleet.progress import Progress, finished
    from hpo.fleet.workers import child_lines, run_workers

    child = worker_argv(args, storage_url, name, cfg.data_root, cfg.dataset)
    child += ["--lines", child_lines(mode)]
    progress = Progress(
        args.trials,
        mode=mode,
        initial=finished(study),
        slots=args.workers,
        desc=f"trials ({args.workers} workers)",
    )
    return run_workers(study, child, args.workers, gpus, args.trials, progress)
