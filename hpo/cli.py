"""``hpo run|confirm|export|show|trials|ls|report|dashboard``: tune the handreid trainer with
Optuna."""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from handreid.config import parse_overrides
from handreid.errors import UserError, cli_exit
from hpo.paths import MAX_NAME

if TYPE_CHECKING:  # imported lazily at run time: `hpo --help` stays fast
    import optuna

    from handreid.config import TrainConfig
    from hpo.space import SearchSpace

log = logging.getLogger("hpo")


def _storage_arg(p: argparse.ArgumentParser, default_text: str | None = None) -> None:
    from hpo.storage import DEFAULT_STORAGE

    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"database URL or journal file path (default {default_text or DEFAULT_STORAGE})",
    )


def _data_changes(args: argparse.Namespace, space) -> dict:
    """Fixed keys from the command line: epochs, data options and --set overrides."""
    from hpo.study import synthetic_data

    changes = parse_overrides(args.set)
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.dataset:
        changes["dataset"] = args.dataset
    if args.aspects:
        changes["aspects"] = args.aspects
    data = args.data or space.base.get("data_root")
    if not data:
        raise UserError(
            "no data: pass --data DIR (an 11k, HD or folder dataset) or --data synthetic"
        )
    if data == "synthetic":
        changes["dataset"] = "11k"
        changes["data_root"] = str(synthetic_data(seed=args.seed or 0).resolve())
    else:
        if not Path(data).exists():
            raise UserError(f"dataset folder not found: {data}")
        changes["data_root"] = str(Path(data).resolve())  # resumable and exportable from anywhere
    return changes


def _cmd_run(args: argparse.Namespace) -> int:
    import optuna

    from handreid.config import config_warnings
    from handreid.data.inspect import check_batches
    from handreid.engine import resolve_device
    from handreid.models import build_model
    from hpo.listing import summary_lines
    from hpo.objective import DataPool
    from hpo.space import load_space
    from hpo.storage import open_storage, shown
    from hpo.study import create_or_resume, make_pruner, make_sampler, process_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines report progress
    storage_url, name, gpus = _check_run_target(args)
    space = load_space(args.space or args.backbone)
    device = resolve_device(args.device) if args.workers == 1 else None
    space = space.with_base(**_data_changes(args, space))
    base_cfg = space.config({})
    runs = base_cfg.val_folds * base_cfg.val_repeats
    pruner = make_pruner(args.pruner, base_cfg.epochs, base_cfg.warmup_epochs, runs)
    pool = DataPool()
    # a missing or broken dataset, or weights that cannot be had, fail here, before a study exists
    data = pool.get(base_cfg)
    check_batches(base_cfg, data.train_labels.tolist())
    build_model(base_cfg, data.num_classes, data.aspects)
    for message in config_warnings(base_cfg):
        warnings.warn(message, UserWarning, stacklevel=1)
    if storage_url.startswith(("sqlite:///studies/", "studies/")):
        Path("studies").mkdir(exist_ok=True)
    storage = open_storage(storage_url, heartbeat=args.heartbeat or None)
    context = {
        "command": "hpo " + shlex.join(_masked(args.argv)),
        "backbone": args.backbone,
        "data": base_cfg.data_root,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    mode = _mode(args)
    with _StorageFailures(storage_url) as guard:
        study = create_or_resume(storage, name, space, sampler=None, pruner=pruner, context=context)
        guard.study = study
        seed = process_seed(args.seed)
        study.sampler = make_sampler(args.sampler, seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not args.worker:
            print(
                f"study {name!r} in {shown(storage_url)}: {base_cfg.model}, "
                f"{args.trials} trials, sampler {args.sampler} "
                f"({f'seed {seed}' if args.workers == 1 else 'a seed per worker'}), pruner "
                f"{args.pruner}, {args.workers} worker(s), data {base_cfg.data_root}",
                flush=True,
            )
        if args.workers > 1:
            code = _run_workers(args, study, storage_url, name, base_cfg, gpus, mode)
        else:
            code = _run_here(args, study, space, device, pool, seed, mode)
        if args.worker:
            return code
        print("\n".join(summary_lines(study)))
        from hpo.report import annotate_after_run  # note + figures for the dashboard; never raises

        # Optuna's plots warn about a study without completed trials (after an early Ctrl-C);
        # the summary above already says so
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        annotate_after_run(study)
    if code == 130:
        print(
            "interrupted: the running trials were stopped and marked FAIL; re-run the same command to resume",
            file=sys.stderr,
        )
    elif code:
        print(f"error: a worker exited with status {code}", file=sys.stderr)
    return code


def _mode(args: argparse.Namespace) -> str:
    """How this process shows progress (``hpo.progress``): a worker does what its parent
    asked with the hidden --lines; otherwise the terminal and --quiet decide."""
    from hpo.progress import output_mode

    if args.worker:
        return args.lines or "trials"
    return output_mode(args.quiet)


def _worker_prefix(args: argparse.Namespace) -> str:
    from hpo.progress import worker_prefix

    return worker_prefix() if args.worker else ""


def _run_here(
    args: argparse.Namespace,
    study: optuna.Study,
    space: SearchSpace,
    device,
    pool,
    seed: int,
    mode: str,
) -> int:
    """One worker in this process; 130 after Ctrl-C (or SIGTERM), with no trial left RUNNING."""
    from hpo.artifacts import open_artifact_store
    from hpo.objective import Objective
    from hpo.progress import Progress
    from hpo.recovery import release_own_trials
    from hpo.study import finished, run_until

    progress = Progress(
        args.trials, mode=mode, initial=finished(study), prefix=_worker_prefix(args)
    )
    objective = Objective(
        space,
        device=device,
        data=pool,
        store=open_artifact_store(),
        on_epoch=progress.on_epoch,
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
                on_trial=progress.on_trial,
                suggest=space.suggest,
                attrs={"sampler_seed": seed},
                report=progress.note,
            )
        except KeyboardInterrupt:
            release_own_trials(study, "interrupted")
            return 130
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
    from hpo.progress import Progress
    from hpo.study import finished
    from hpo.workers import child_lines, run_workers

    child = _worker_argv(args, storage_url, name, cfg.data_root, cfg.dataset)
    child += ["--lines", child_lines(mode)]
    progress = Progress(
        args.trials,
        mode=mode,
        initial=finished(study),
        slots=args.workers,
        desc=f"trials ({args.workers} workers)",
    )
    return run_workers(study, child, args.workers, gpus, args.trials, progress)


class _StorageFailures:
    """A failing storage or full disk during a run: our RUNNING trials are failed where the
    storage still takes writes, and the failure is one UserError line."""

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self.study: optuna.Study | None = None  # set once the study exists

    def __enter__(self) -> _StorageFailures:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        from hpo.recovery import release_own_trials
        from hpo.storage import failure_reason, shown
        from hpo.study import StorageFailure

        if not isinstance(exc, Exception):
            return False
        reason = str(exc) if isinstance(exc, StorageFailure) else failure_reason(exc)
        if reason is None:
            return False
        if self.study is not None:
            release_own_trials(self.study, f"storage error: {reason}")
        raise UserError(
            f"storage {shown(self.storage_url)} failed: {reason}; the finished trials are kept; "
            "fix the storage (free disk space) and re-run the same command to resume"
        ) from None


def _check_run_target(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """Options, study name and storage of `hpo run`, checked before any data is read and
    without writing anything: (storage, study name, GPUs)."""
    from hpo.paths import check_study_name
    from hpo.storage import check_storage
    from hpo.workers import check_gpus, parse_gpus

    _check_run_options(args)
    storage_url = _run_storage(args)
    name = check_study_name(args.study if args.study is not None else f"handreid-{args.backbone}")
    gpus = check_gpus(parse_gpus(args.gpus), args.workers)
    # studies/ is made only once the data is known to be good; until then there is nothing
    # in it to check
    if not storage_url.startswith(("sqlite:///studies/", "studies/")) or Path("studies").is_dir():
        check_storage(storage_url)
    _one_place(args, storage_url, name)
    return storage_url, name, gpus


def _check_run_options(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise UserError(f"--trials={args.trials}: must be at least 1")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError(f"--timeout={args.timeout:g}: must be a positive number of seconds")
    if args.heartbeat < 0:
        raise UserError(f"--heartbeat={args.heartbeat}: must be 0 (off) or a number of seconds")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UserError(f"--seed={args.seed}: must be between 0 and {2**32 - 1}")


def _run_storage(args: argparse.Namespace) -> str:
    from hpo.storage import DEFAULT_JOURNAL, DEFAULT_STORAGE

    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: must be at least 1")
    if args.storage is None:
        return DEFAULT_STORAGE if args.workers == 1 else DEFAULT_JOURNAL
    if args.workers > 1 and args.storage.startswith("sqlite"):
        raise UserError(
            "SQLite is not safe for several workers; use a journal file "
            f"(--storage {DEFAULT_JOURNAL}) or a PostgreSQL/MySQL URL"
        )
    return args.storage


def _one_place(args: argparse.Namespace, storage_url: str, name: str) -> None:
    """Refuse to start a second study of the same name when the other default storage (SQLite
    database vs journal file) holds it: `show` and `export` would keep reading the first one."""
    from hpo.storage import DEFAULT_STORAGE, open_storage, other_default, study_names

    elsewhere = None if args.worker else other_default(storage_url, name)
    if elsewhere is None:
        return
    here = Path(storage_url.removeprefix("sqlite:///"))
    if here.is_file() and name in study_names(open_storage(storage_url, create=False)):
        return  # it is here as well: resume it here
    if elsewhere == DEFAULT_STORAGE:
        command = _command(args.argv, drop="--workers", add=["--workers", "1"])
        raise UserError(
            f"study {name!r} is in {DEFAULT_STORAGE}, which is not safe for several "
            f"workers; resume it with one worker: {command} (or give a parallel study "
            "another --study name)"
        )
    command = _command(args.argv, drop="--storage", add=["--storage", elsewhere])
    raise UserError(
        f"study {name!r} is in {elsewhere}, not in {storage_url}; resume it there: {command}"
    )


def _command(argv: list[str], *, drop: str, add: list[str]) -> str:
    """``hpo <argv>`` with the option ``drop`` (and its value) replaced by ``add``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == drop:
            skip = True
        elif not arg.startswith(drop + "="):
            out.append(arg)
    return "hpo " + shlex.join(_masked(out + add))


def _masked(argv: list[str]) -> list[str]:
    """The command line as it may be printed or stored: database passwords masked."""
    from hpo.storage import shown

    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--storage":
            arg = shown(arg)
        elif arg.startswith("--storage="):
            arg = "--storage=" + shown(arg.removeprefix("--storage="))
        out.append(arg)
    return out


def _worker_argv(
    args: argparse.Namespace, storage: str, study: str, data: str, dataset: str
) -> list[str]:
    """The command each worker runs: the same study, already created and validated."""
    argv = [
        "run",
        "--worker",
        "--backbone",
        args.backbone,
        "--trials",
        str(args.trials),
        "--data",
        data,
        "--dataset",
        dataset,
        "--study",
        study,
        "--storage",
        storage,
        "--sampler",
        args.sampler,
        "--pruner",
        args.pruner,
        "--device",
        args.device,
        "--heartbeat",
        str(args.heartbeat),
        "--keep-checkpoints",
        str(args.keep_checkpoints),
    ]
    for flag, value in (
        ("--seed", args.seed),
        ("--space", args.space),
        ("--epochs", args.epochs),
        ("--timeout", args.timeout),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.aspects:
        argv += ["--aspects", *args.aspects]
    for item in args.set:
        argv += ["--set", item]
    return argv


def _cmd_confirm(args: argparse.Namespace) -> int:
    import optuna
    from optuna.trial import TrialState

    from handreid.engine import resolve_device
    from hpo import confirm as cf
    from hpo.export import study_space
    from hpo.lines import confirm_label, trial_line
    from hpo.objective import DataPool, Objective
    from hpo.progress import Progress
    from hpo.study import load_study, open_storage
    from hpo.workers import child_lines, parse_gpus, run_workers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: must be at least 1")
    cf.check_plan_args(args.top, args.seeds)
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
    companion = cf.open_companion(study, storage)
    if not args.worker:
        cf.fail_dead_runs(companion)
        added = cf.queue(study, companion, p)
        print(
            f"confirming trials {p.trials} of study {study.study_name!r} on fresh seeds "
            f"{p.seeds}: {len(p.pairs())} runs, {len(added)} to do "
            f"(runs are trials of study {companion.study_name!r})",
            flush=True,
        )
        for note in p.notes:
            print(f"note: {note}", flush=True)
    code = 0
    mode = _mode(args)
    runs = companion.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in runs)
    todo = sum(t.state == TrialState.WAITING for t in runs)
    progress = Progress(
        done + todo,
        mode=mode,
        initial=done,
        slots=args.workers,
        label=confirm_label,
        line=lambda t: trial_line(t, label=confirm_label(t), params=False),
        count=lambda trials: sum(t.state == TrialState.COMPLETE for t in trials),
        best=False,
        prefix=_worker_prefix(args),
        desc="confirm runs" if args.workers == 1 else f"confirm runs ({args.workers} workers)",
    )
    if args.workers > 1:
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
            on_epoch=progress.on_epoch,
        )
        with progress:
            try:
                cf.work(companion, progress.started(objective), progress.on_trial)
            except KeyboardInterrupt:
                code = 130
    if args.worker:
        return code
    summary = cf.summarize(study, companion, p, storage=args.storage)
    study.set_user_attr("confirm", summary)
    print(cf.format_summary(summary))
    if code == 130:
        print(
            "interrupted: finished runs are kept; re-run the same command to do the rest",
            file=sys.stderr,
        )
    return code


def _cmd_export(args: argparse.Namespace) -> int:
    from hpo.export import export_trial
    from hpo.paths import study_dir
    from hpo.study import load_study

    study = load_study(args.storage, args.study)
    out = Path(args.out) if args.out else study_dir(study.study_name) / "best.yaml"
    path, trial = export_trial(study, out, args.trial, storage=args.storage)
    from hpo.confirm import verdict
    from hpo.export import value_text

    print(f"wrote {path} (trial {trial.number}, val mAP {value_text(trial)})")
    if args.checkpoint:
        from hpo.checkpoints import export_checkpoint

        print(export_checkpoint(study, trial, path)[1])
    summary = study.user_attrs.get("confirm")
    if summary and summary.get("winner") == trial.number:
        print(verdict(summary))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from hpo import listing
    from hpo.study import load_study

    if args.top < 1:
        raise UserError(f"--top={args.top}: must be at least 1")
    study = load_study(args.storage, args.study)
    if args.trial is not None:
        from hpo.artifacts import existing_artifact_store

        trial = listing.find_trial(study, args.trial)
        rows = listing.epoch_rows(study, trial, existing_artifact_store())
        if args.json:
            _print_json({"trial": listing.trial_record(trial), "epochs": rows})
        else:
            from hpo.lines import trial_line

            print(trial_line(trial))
            print(listing.epoch_table(rows))
        return 0
    if args.json:
        _print_json(listing.study_summary(study, top=args.top))
    else:
        print(listing.show_text(study, top=args.top))
    return 0


def _cmd_trials(args: argparse.Namespace) -> int:
    from hpo import listing
    from hpo.lines import trial_line
    from hpo.study import load_study

    study = load_study(args.storage, args.study)
    trials = listing.select(study, args.state)
    if args.json:
        records = [listing.trial_record(t) for t in trials]
        _print_json({"study": study.study_name, "trials": records})
        return 0
    if not trials:
        which = f" in state {', '.join(args.state)}" if args.state else ""
        print(f"study {listing.printable(study.study_name)} has no trials{which}")
    for t in trials:
        print(trial_line(t))
    return 0


def _print_json(data) -> None:
    import json

    from hpo.listing import json_ready

    print(json.dumps(json_ready(data), indent=2, allow_nan=False))


def _cmd_ls(args: argparse.Namespace) -> int:
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


def _cmd_report(args: argparse.Namespace) -> int:
    from hpo.paths import study_dir
    from hpo.report import open_artifact_store, save_artifacts, write_report
    from hpo.study import load_study

    if args.top < 1:
        raise UserError(f"--top={args.top}: must be at least 1")
    study = load_study(args.storage, args.study)
    report = write_report(study, args.out, top=args.top, png=not args.no_png)
    size = report.html.stat().st_size / 1e6
    pngs = f" and {len(report.pngs)} PNGs" if report.pngs else ""
    print(f"wrote {report.html} ({size:.1f} MB){pngs}")
    for note in report.notes:
        print(f"note: {note}")
    if not args.no_artifacts:
        files = [report.html]
        best = study_dir(study.study_name) / "best.yaml"
        files += [best] if best.is_file() else []
        save_artifacts(study, open_artifact_store(args.artifacts), files)
        print(f"saved study artifacts {', '.join(f.name for f in files)} in {args.artifacts}")
    print("the study's dashboard note and figures are refreshed (view them with `hpo dashboard`)")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from hpo.dashboard import LOOPBACK, make_dashboard, serve, url

    server = make_dashboard(args.storage, args.host, args.port, args.artifacts)
    if args.host not in LOOPBACK:
        print(
            f"warning: listening on {args.host}: anyone who can reach it can read and edit the studies",
            file=sys.stderr,
        )
    print(f"optuna-dashboard on {args.storage}, artifacts in {args.artifacts}", flush=True)
    print(f"Listening on {url(server)} (Ctrl-C to stop)", flush=True)
    serve(server)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (unknown option, bad number) as our one ``error:`` line, exit 2,
    instead of a usage block; ``--help`` still prints the usage."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def _study_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", help="study name (may be left out when the storage holds one)")


def _count(text: str) -> int:
    """A whole number >= 0 (argparse turns the error into our one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from handreid.clihelp import HelpFormatter
    from hpo.artifacts import ARTIFACTS_DIR  # not via hpo.report: that pulls in scipy
    from hpo.checkpoints import DEFAULT_KEEP
    from hpo.listing import STATES, TOP
    from hpo.space import builtin_spaces
    from hpo.storage import DEFAULT_JOURNAL, DEFAULT_STORAGE
    from hpo.study import PRUNERS, SAMPLERS

    parser = _Parser(prog="hpo", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    p = command("run", "run (or resume) a study until it holds --trials finished trials")
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
    _storage_arg(
        p, f"{DEFAULT_STORAGE}; with --workers 2 or more the journal file {DEFAULT_JOURNAL}"
    )
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="Optuna sampler")
    p.add_argument(
        "--pruner",
        default="median",
        choices=PRUNERS,
        help="stops trials whose val mAP falls behind, epoch by epoch (and between folds, with a paired test); none prunes nothing",
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
        type=_count,
        default=DEFAULT_KEEP,
        metavar="K",
        help="keep the models of the best K complete trials as trial artifacts, removing those "
        "that fall out of the top K (on a journal file the removed ones stay listed on their "
        f"trial pages); 0 keeps none (default {DEFAULT_KEEP})",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lines", choices=["epochs", "trials", "none"], help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_run, storage=None)

    p = command(
        "confirm", "re-train the top trials and the baselines on fresh seeds; compare them paired"
    )
    _study_arg(p)
    _storage_arg(p)
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
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lines", choices=["epochs", "trials", "none"], help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_confirm)

    p = command("export", "write a trial's complete trainer config as YAML")
    _study_arg(p)
    _storage_arg(p)
    p.add_argument(
        "--trial", type=int, help="trial number (default: the confirmed winner, else the best)"
    )
    p.add_argument("--out", help="output YAML (default studies/<study>/best.yaml)")
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="also copy the trial's checkpoint next to the YAML (best.yaml -> best.pt)",
    )
    p.set_defaults(func=_cmd_export)

    p = command(
        "show",
        "counts, best trial, top trials, the best trial against the baseline, the confirmation; "
        "or one trial's epochs",
    )
    _study_arg(p)
    _storage_arg(p)
    p.add_argument("--top", type=int, default=TOP, help="how many of the best trials to list")
    p.add_argument(
        "--trial", type=int, metavar="N", help="show trial N and its per-epoch table instead"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_show)

    p = command("trials", "list a study's trials: state, value ± SE, time, epochs, why it ended")
    _study_arg(p)
    _storage_arg(p)
    p.add_argument(
        "--state",
        nargs="+",
        choices=STATES,
        metavar="STATE",
        help=f"only trials in these states: {', '.join(STATES)} (default: all)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_trials)

    p = command("ls", "list the studies in a storage")
    _storage_arg(p)
    p.set_defaults(func=_cmd_ls)

    p = command("report", "HTML report: figures, top trials; refreshes the note")
    _study_arg(p)
    _storage_arg(p)
    p.add_argument("--out", help="output folder (default studies/<study>/report)")
    p.add_argument("--top", type=int, default=10, help="rows in the table of best trials")
    p.add_argument("--no-png", action="store_true", help="skip the PNG export of the figures")
    artifacts_help = "artifact folder"
    p.add_argument("--artifacts", default=str(ARTIFACTS_DIR), help=artifacts_help)
    p.add_argument("--no-artifacts", action="store_true", help="do not save study artifacts")
    p.set_defaults(func=_cmd_report)

    p = command("dashboard", "serve optuna-dashboard on the storage (on 127.0.0.1)")
    _storage_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    p.add_argument("--artifacts", default=str(ARTIFACTS_DIR), help=artifacts_help)
    p.set_defaults(func=_cmd_dashboard)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # named with the command's own help, not the top-level one
        prog = f"hpo {args.command}"
        raise UserError(f"{prog}: unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
    args.argv = argv
    return args.func(args)


def _sigterm(signum, frame):  # a terminated worker ends its trial like Ctrl-C does
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)
    cli_exit(run, argv)


if __name__ == "__main__":
    main()
