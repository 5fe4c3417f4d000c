"""Opening study storages safely: database URLs and journal files, checked before any write."""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import random
import shlex
import sqlite3
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import (
    BaseJournalBackend,
    JournalFileBackend,
    JournalFileSymlinkLock,
)

from handreid.errors import UserError
from hpo.records.optuna_internals import ClaimingRDBStorage

DEFAULT_STORAGE = "sqlite:///studies/handreid.db"
DEFAULT_JOURNAL = "studies/handreid.log"
SLURM_ATTRS = ("slurm_job", "slurm_array_job", "slurm_task", "node")  # per run, not per params
WORKER_ATTRS = ("worker", "worker_process", "sampler_seed", "error", *SLURM_ATTRS)  # per run
MAX_RETRIES = 3  # retries of one trial whose worker died, so a trial that kills it cannot loop
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)


class StorageError(UserError):
    """A storage URL or journal path that cannot be used."""


def is_url(storage: str) -> bool:
    return "://" in storage


def shown(storage: str) -> str:
    """The storage as it may be printed or recorded: a database password is masked."""
    if not is_url(storage):
        return storage
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return storage


def _in_memory(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    return parsed.database in (None, "", ":memory:") or "mode=memory" in url


def check_storage(storage: str, *, create: bool = True) -> None:
    """Everything about ``storage`` that can be checked without writing: not in memory, its
    folder exists, a journal file is a whole journal. A one-line StorageError otherwise."""
    if not is_url(storage):
        path = Path(storage)
        if not path.exists() and not create:
            raise StorageError(f"journal file not found: {path}")
        if not path.parent.is_dir():
            raise StorageError(
                f"cannot create journal file {path}: folder {path.parent} does not exist"
            )
        if path.exists():
            check_journal(path)
        return
    if _in_memory(storage):
        raise StorageError(
            f"--storage {storage}: an in-memory database loses the study when the command "
            f"exits; use a file, e.g. {DEFAULT_STORAGE}"
        )
    if storage.startswith("sqlite:///"):
        path = Path(storage.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.exists() and not create:
            raise StorageError(
                f"no study database at {path}; run `hpo run` first or pass --storage"
            )
        if not path.parent.is_dir():
            raise StorageError(f"cannot create {storage}: folder {path.parent} does not exist")


def open_storage(storage: str, *, create: bool = True, heartbeat: int | None = None):
    """A database URL (sqlite, postgresql, mysql) or a path to a journal file.

    ``create=False`` refuses to create a new database or journal (for read-only commands).
    """
    from sqlalchemy.exc import IntegrityError

    check_storage(storage, create=create)
    if not is_url(storage):
        return _open_journal(Path(storage))
    engine_kwargs: dict[str, Any] | None = None
    if storage.startswith("sqlite:///"):
        # processes started together on one study wait for each other's short writes instead
        # of failing with "database is locked" after SQLite's default 5 s
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif storage.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 5}}
    kwargs: dict[str, Any] = {}
    if heartbeat:
        # A worker that stops beating for two intervals is dead; its trial is failed and re-queued.
        kwargs = dict(
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=_Retry(max_retry=MAX_RETRIES),
        )
    for attempt in range(5):
        try:
            return ClaimingRDBStorage(storage, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL
            text = str(exc)
            # processes opening a new database together race to create Optuna's tables and
            # version row; the loser sees "already exists" or a duplicate key, and finds them
            # made on a retry
            race = isinstance(exc, IntegrityError) or "already exists" in text
            if race and attempt < 4:
                time.sleep(0.2 + random.random())
                continue
            reason = (
                _missing_driver(storage, exc)
                or failure_reason(exc)
                or (text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
            )
            raise StorageError(f"cannot open storage {shown(storage)}: {reason[:300]}") from None
    raise AssertionError("unreachable")


def _missing_driver(storage: str, exc: BaseException) -> str | None:
    """What to install when the database's Python driver is missing (Optuna says only "Failed
    to import DB access module")."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ImportError):
        seen = seen.__cause__ or seen.__context__
    if seen is None and "Failed to import DB access module" not in str(exc):
        return None
    if storage.startswith("postgresql"):
        return (
            "the PostgreSQL driver (psycopg) is not installed; install it with: "
            "pip install 'handreid-hpo[postgres]' (or pip install 'psycopg[binary]')"
        )
    return (
        "the database's Python driver is not installed (MySQL: pip install pymysql and a "
        "mysql+pymysql:// URL)"
    )


class _Retry:
    """Optuna's retry of a heartbeat-stale trial, minus the dead worker's identity and
    artifacts: the queued copy, once another worker takes it, must not look like a trial of the
    dead worker. User attributes such as a baseline's label are kept."""

    def __init__(self, max_retry: int) -> None:
        self.inner = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from hpo.common.attrs import BOOKKEEPING, RECORD_PREFIX
        from hpo.records.optuna_internals import ARTIFACT_PREFIX

        clean = copy.copy(trial)
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in WORKER_ATTRS}
        # the dead try's artifacts (config, history, checkpoint) and bookkeeping (its worker,
        # timings, progress) stay with it, not the retry
        dead = {RECORD_PREFIX + k for k in BOOKKEEPING}
        clean.system_attrs = {
            k: v
            for k, v in trial.system_attrs.items()
            if not k.startswith(ARTIFACT_PREFIX) and k not in dead
        }
        self.inner(study, clean)


def _open_journal(path: Path) -> JournalStorage:
    try:
        return JournalStorage(_JournalFile(str(path)))
    except OSError as exc:
        raise StorageError(f"cannot open journal file {path}: {exc.strerror or exc}") from None
    except Exception:  # noqa: BLE001 - any replay failure: records that do not fit together
        raise StorageError(
            f"{path} is not an Optuna journal file, or is damaged inside; nothing was written to it"
        ) from None


def _tail(path: Path) -> tuple[int, int]:
    """(size, bytes up to and including the last newline) of the file."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return size, start + cut + 1
            end = start
        return size, 0


# keys every record of an operation needs for Optuna to replay it (optuna.storages.journal)
_RECORD_KEYS: dict[int, tuple[str, ...]] = {
    0: ("study_name", "directions"),
    1: ("study_id",),
    2: ("study_id", "user_attr"),
    3: ("study_id", "system_attr"),
    4: ("study_id",),
    5: ("trial_id", "param_name", "param_value_internal", "distribution"),
    6: ("trial_id", "state", "values"),
    7: ("trial_id", "step", "intermediate_value"),
    8: ("trial_id", "user_attr"),
    9: ("trial_id", "system_attr"),
    10: (),  # DISCARD_TRIALS: replayed as nothing
}


def _is_record(line: bytes) -> bool:
    """Whether one journal line is a record Optuna can replay (by its shape)."""
    try:
        record = json.loads(line)
    except ValueError:  # JSON or UTF-8 errors
        return False
    if not isinstance(record, dict) or not isinstance(record.get("worker_id"), str):
        return False
    op = record.get("op_code")
    if type(op) is not int or op not in _RECORD_KEYS:
        return False
    return all(key in record for key in _RECORD_KEYS[op])


def _lines(path: Path, complete: int):
    """(line number from 1, start byte, line) of each line in the file's first ``complete``
    bytes."""
    with open(path, "rb") as fh:
        offset = 0
        for number, line in enumerate(fh, start=1):
            if offset >= complete:
                return
            yield number, offset, line
            offset += len(line)


class _InMemory(BaseJournalBackend):
    """Journal records held in memory: Optuna replays a repair before anyone makes it."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.records[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise RuntimeError("a replay check writes nothing")


def _replays(records: list[dict[str, Any]]) -> bool:
    """Whether Optuna replays ``records`` and each finds the study or trial it names. Optuna
    numbers studies and trials by their create records and skips a record naming one that does
    not exist, so a lost create record shifts the ones after it without an error; the last of
    them then names one that is not there."""
    try:
        deleted = {r["study_id"] for r in records if r["op_code"] == 1}
        storage = JournalStorage(_InMemory(records))
        for study_id in {r["study_id"] for r in records if "study_id" in r} - deleted:
            storage.get_study_name_from_id(study_id)
        for trial_id in {r["trial_id"] for r in records if "trial_id" in r}:
            storage.get_trial(trial_id)
    except Exception:  # noqa: BLE001 - any replay failure: the study needs the lines removed
        return False
    return True


def _named(numbers: list[int]) -> str:
    """Line numbers as text, at most five of them named."""
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    shown = ", ".join(map(str, numbers[:5]))
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return f"lines {shown}{more} ({len(numbers)} lines)"


def _sed_deleting(numbers: list[int]) -> str:
    """sed expressions deleting ``numbers`` (ascending), runs of lines as one range."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return " ".join(f"-e {a}d" if a == b else f"-e {a},{b}d" for a, b in runs)


def _bad_lines_advice(path: Path, size: int, complete: int) -> str | None:
    """What to do about the lines of the file's first ``complete`` bytes that are not journal
    records; None when every line is one. The study is replayed in memory without them: if it
    replays, only they go (and a torn last line); else the journal is cut at the first."""
    bad: list[tuple[int, int, int]] = []  # (line number, start, end)
    lines = 0
    for number, start, line in _lines(path, complete):
        lines = number
        if not _is_record(line):
            bad.append((number, start, start + len(line)))
    if not bad:
        return None
    # parsed only now: a whole journal in memory is for the refusal, not for every open
    skip = {number for number, _, _ in bad}
    records = [json.loads(line) for n, _, line in _lines(path, complete) if n not in skip]
    q = shlex.quote(str(path))
    numbers = [number for number, _, _ in bad]
    first, start, stop = bad[0]
    after = lines - first - (len(bad) - 1)  # records after the first bad line
    what = f"{_named(numbers)} (bytes {start}-{stop})" if len(bad) == 1 else _named(numbers)
    verb = "is not an Optuna journal record" if len(bad) == 1 else "are not Optuna journal records"
    it = "it" if len(bad) == 1 else "them"
    if _replays(records):
        torn = ""
        if size > complete:  # a torn last line after them goes too
            numbers.append(lines + 1)
            torn = f" and the torn last line ({size - complete} bytes)"
        # sed from the copy into the file: the same on GNU and BSD sed, and the journal keeps
        # its inode, owner and mode (sed -i writes a new file)
        return (
            f"{path}: {what} {verb}; nothing was written; the study replays without {it}: keep "
            f"a copy and delete {it}{torn}, keeping all {len(records)} records, with: "
            f"cp {q} {q}.bak && sed {_sed_deleting(numbers)} {q}.bak > {q}"
        )
    return (
        f"{path}: {what} {verb}, and the study does not replay without {it} (a damaged "
        f"record that later ones need); nothing was written; keep a copy and cut the journal "
        f"at line {first}, keeping {len(records) - after} records and dropping the {after} "
        f"after it, with: cp {q} {q}.bak && truncate -s {start} {q}"
    )


def check_journal(path: Path, *, settle: float = 0.2, tries: int = 3) -> None:
    """Refuse (without writing) a file that is not an Optuna journal, one holding a line that
    is not a journal record (anywhere: Optuna skips a bad last line and would append after it,
    making the whole study unreadable), or one whose last record is torn (a crash or a full
    disk in the middle of a write). The message says where and how to repair: the lines that
    are not records are deleted when the study replays without them, else the journal is cut
    at the first of them.
    """
    try:
        if path.exists() and not path.is_file():
            kind = "Is a directory" if path.is_dir() else "it is a device or a pipe, not a file"
            raise StorageError(
                f"cannot open journal file {path}: {kind}; give the path of a journal file"
            )
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        if not head:
            return
        if head.startswith(b"SQLite format 3\x00"):
            raise StorageError(f"{path} is an SQLite database; pass --storage sqlite:///{path}")
        first, newline, _ = head.partition(b"\n")
        if newline:
            try:
                record = json.loads(first)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and "op_code" in record):
                raise StorageError(
                    f"{path} is not an Optuna journal file (its first line is not a journal "
                    "record); refusing to write to it"
                )
        elif not first.startswith(b"{"):
            raise StorageError(f"{path} is not an Optuna journal file; refusing to write to it")
        # another worker may be in the middle of its write: a torn tail counts only once the
        # file stops growing (for ``tries`` looks, at most 5 s)
        quiet, last, end = 0, -1, time.monotonic() + 5
        while True:
            size, complete = _tail(path)
            if size == complete:
                break
            quiet = quiet + 1 if size == last else 1
            if quiet >= tries or time.monotonic() > end:
                break
            last = size
            time.sleep(settle)
        advice = _bad_lines_advice(path, size, complete)
    except OSError as exc:
        raise StorageError(f"cannot read journal file {path}: {exc.strerror or exc}") from None
    if advice is not None:
        raise StorageError(advice)
    if size == complete:
        return
    q = shlex.quote(str(path))
    raise StorageError(
        f"{path} ends in a torn record ({size - complete} bytes after the last complete line, "
        f"left by a crash or a full disk); keep a copy and cut it off with: "
        f"cp {q} {q}.bak && truncate -s {complete} {q}"
    )


class _JournalFile(JournalFileBackend):
    """Optuna's journal file backend, plus: a write that fails half-way (disk full) cuts off the
    torn record it left, so the journal stays readable and appendable."""

    def __init__(self, file_path: str) -> None:
        self._path = Path(file_path)
        self._guard = JournalFileSymlinkLock(file_path)  # the lock Optuna uses by default
        super().__init__(file_path, lock_obj=self._guard)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError:
            self._cut_torn_tail()
            raise

    def _cut_torn_tail(self) -> None:
        try:
            self._guard.acquire()
        except OSError:
            return  # cannot lock (the disk is full): the next start reports the torn record
        try:
            size, complete = _tail(self._path)
            if complete < size:
                os.truncate(self._path, complete)
        except OSError:
            pass  # the next start reports the torn record with the command to cut it
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                self._guard.release()


def failure_reason(exc: BaseException) -> str | None:
    """One line saying why, when ``exc`` means the storage or its disk failed; else None.

    Optuna wraps database errors in StorageInternalError with a generic message; the reason
    (e.g. sqlite's "database or disk is full") is on the wrapped SQLAlchemy error. A storage
    error inside Optuna's own bookkeeping can surface as an assertion in its trial loop, with
    the storage error as its context.
    """
    from sqlalchemy.exc import SQLAlchemyError

    storage_kinds = (optuna.exceptions.StorageInternalError, SQLAlchemyError, sqlite3.Error)
    seen: set[int] = set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in _DISK_ERRNOS:
            return chain.strerror or str(chain)
        if isinstance(chain, storage_kinds):
            root: BaseException = chain
            while root.__cause__ is not None:
                root = root.__cause__
            root = getattr(root, "orig", None) or root
            text = str(root).strip().splitlines()
            return (text[0] if text else type(root).__name__).rstrip(".")[:300]
        # an exception raised while handling another is about the storage only in the case
        # above: Optuna's assertion after its end-of-trial write failed
        chain = chain.__cause__ or (
            chain.__context__ if isinstance(chain, AssertionError) else None
        )
    return None


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def other_default(storage: str, name: str) -> str | None:
    """When ``storage`` is one of the two default storages and the other one holds a study
    ``name``, that other storage; else None. Nothing is created or written."""
    other = {DEFAULT_STORAGE: DEFAULT_JOURNAL, DEFAULT_JOURNAL: DEFAULT_STORAGE}.get(storage)
    if other is None or not Path(other.removeprefix("sqlite:///")).is_file():
        return None
    try:
        return other if name in study_names(open_storage(other, create=False)) else None
    except StorageError:
        return None  # an unreadable other storage holds nothing we could resume
