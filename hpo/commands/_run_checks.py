"""What ``hpo run`` checks before it reads data or writes a study, and how it turns a failing
storage during the run into one line."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from handreid.config import parse_overrides
from handreid.errors import UserError
from hpo.commands._argv import replaced

if TYPE_CHECKING:  # imported lazily at run time: `hpo --help` stays fast
    import optuna


def check_run_target(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """Options, study name and storage of `hpo run`, checked before any data is read and
    without writing anything: (storage, study name, GPUs)."""
    from hpo.common.paths import check_study_name
    from hpo.fleet.workers import check_gpus, parse_gpus
    from hpo.records.storage import check_storage

    _check_run_options(args)
    storage_url = _run_storage(args)
    if Path("studies").exists() and not Path("studies").is_dir():
        raise UserError(
            "studies is a file here, not a folder; hpo keeps its storage, artifacts and "
            "outputs in studies/: move the file away or run from another folder"
        )
    name = check_study_name(args.study if args.study is not None else f"handreid-{args.backbone}")
    gpus = check_gpus(parse_gpus(args.gpus), args.workers)
    # studies/ is made only once the data is known to be good; until then there is nothing
    # in it to check
    folder = Path(storage_url.removeprefix("sqlite:///")).parent
    if not storage_url.startswith(("sqlite:///studies/", "studies/")) or folder.is_dir():
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
    from hpo.records.storage import DEFAULT_JOURNAL, DEFAULT_STORAGE

    if args.workers < 1:
        raise UserError(f"--workers={args.workers}: must be at least 1")
    if args.storage is None:
        return DEFAULT_STORAGE if args.workers == 1 else DEFAULT_JOURNAL
    refuse_sqlite_workers(args.storage, args.workers)
    return args.storage


def refuse_sqlite_workers(storage: str, workers: int) -> None:
    """`hpo run` and `hpo confirm`: several workers need a journal file or a server."""
    from hpo.records.storage import DEFAULT_JOURNAL

    if workers > 1 and storage.startswith("sqlite"):
        raise UserError(
            "SQLite is not safe for several workers; use a journal file "
            f"(--storage {DEFAULT_JOURNAL}) or a PostgreSQL/MySQL URL"
        )


def _one_place(args: argparse.Namespace, storage_url: str, name: str) -> None:
    """Refuse to start a second study of the same name when the other default storage (SQLite
    database vs journal file) holds it: `show` and `export` would keep reading the first one."""
    from hpo.records.storage import DEFAULT_STORAGE, open_storage, other_default, study_names

    elsewhere = None if args.worker else other_default(storage_url, name)
    if elsewhere is None:
        return
    here = Path(storage_url.removeprefix("sqlite:///"))
    if here.is_file() and name in study_names(open_storage(storage_url, create=False)):
        return  # it is here as well: resume it here
    if elsewhere == DEFAULT_STORAGE:
        command = replaced(args.argv, drop="--workers", add=["--workers", "1"])
        raise UserError(
            f"study {name!r} is in {DEFAULT_STORAGE}, which is not safe for several "
            f"workers; resume it with one worker: {command} (or give a parallel study "
            "another --study name)"
        )
    command = replaced(args.argv, drop="--storage", add=["--storage", elsewhere])
    raise UserError(
        f"study {name!r} is in {elsewhere}, not in {storage_url}; resume it there: {command}"
    )


def data_changes(args: argparse.Namespace, space) -> dict:
    """Fixed keys from the command line: epochs, data options and --set overrides."""
    from hpo.search.study import synthetic_data

    changes = parse_overrides(args.set)
    for flag, key, value in (
        ("--epochs", "epochs", args.epochs),
        ("--dataset", "dataset", args.dataset),
        ("--aspects", "aspects", args.aspects),
        ("--data", "data_root", args.data),
    ):
        if value is not None and key in changes:
            shown = " ".join(value) if isinstance(value, list) else value
            given = [i for i in args.set if i.partition("=")[0].strip() == key]
            raise UserError(
                f"{flag} {shown} and --set {given[-1] if given else key} both set {key}; "
                "give only one"
            )
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


class StorageFailures:
    """A failing storage or full disk during a run: our RUNNING trials are failed where the
    storage still takes writes, and the failure is one UserError line."""

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self.study: optuna.Study | None = None  # set once the study exists

    def __enter__(self) -> StorageFailures:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        from hpo.fleet.recovery import own_running, release_own_trials
        from hpo.records.storage import failure_reason, shown
        from hpo.search.study import StorageFailure

        if not isinstance(exc, Exception):
            return False
        reason = str(exc) if isinstance(exc, StorageFailure) else failure_reason(exc)
        if reason is None:
            return False
        left = ""
        if self.study is not None:
            release_own_trials(self.study, f"storage error: {reason}")
            stuck = own_running(self.study)
            if stuck:  # a full disk takes no write at all, not even the trial's end
                left = (
                    f"; trial(s) {', '.join(map(str, stuck))} could not be marked failed and "
                    "show as RUNNING until the re-run finds this process gone, fails them and "
                    "queues a baseline among them again"
                )
        raise UserError(
            f"storage {shown(self.storage_url)} failed: {reason}; the finished trials are kept; "
            f"fix the storage (free disk space) and re-run the same command to resume{left}"
        ) from None
