"""Storages checked before any write; disk-full and database errors during a run are one line
and leave the study consistent."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpo.cli import main
from hpo.records.storage import (
    DEFAULT_JOURNAL,
    DEFAULT_STORAGE,
    StorageError,
    check_journal,
    failure_reason,
    open_storage,
    other_default,
    shown,
)


def journal_with_a_study(path: Path, name: str = "s") -> bytes:
    study = optuna.create_study(study_name=name, storage=open_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return path.read_bytes()


def test_a_torn_last_record_is_refused_with_a_repair_command_that_works(tmp_path):
    path = tmp_path / "study.log"
    whole = journal_with_a_study(path)
    path.write_bytes(whole + b'{"op_code":4,"worker_id":"ab')  # a crash mid-write
    with pytest.raises(StorageError) as exc:
        open_storage(str(path))
    message = str(exc.value)
    assert "ends in a torn record (28 bytes after the last complete line" in message
    assert path.read_bytes() == whole + b'{"op_code":4,"worker_id":"ab', "nothing written"
    assert sorted(os.listdir(tmp_path)) == ["study.log"]
    command = message.split("cut it off with: ", 1)[1]
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    assert path.read_bytes() == whole
    assert (tmp_path / "study.log.bak").read_bytes().startswith(whole)
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert len(study.trials) == 2


def journal_with_trials(path: Path, trials: int = 12) -> list[tuple]:
    """A journal of ``trials`` trials with params, epochs and attributes; what each holds."""
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for epoch in range(3):
            trial.report(x * epoch, epoch)
        trial.set_user_attr("note", f"trial {trial.number}")
        return x

    study.optimize(objective, n_trials=trials)
    return trial_facts(path)


def trial_facts(path: Path) -> list[tuple]:
    study = optuna.load_study(study_name="s", storage=open_storage(str(path), create=False))
    return [
        (t.number, t.state, t.values, t.params, t.intermediate_values, t.user_attrs)
        for t in study.trials
    ]


def with_lines(whole: bytes, inserted: dict[int, bytes], tail: bytes = b"") -> bytes:
    """``whole`` with each ``inserted`` line put at its line number (from 1, in the result)."""
    lines = whole.splitlines(keepends=True)
    for number in sorted(inserted):
        lines.insert(number - 1, inserted[number])
    return b"".join(lines) + tail


def run_advice(message: str, cwd: Path) -> None:
    subprocess.run(["sh", "-c", message.split(" with: ", 1)[1]], check=True, cwd=cwd)


@pytest.mark.parametrize(
    "inserted, last, tail, named",
    [
        ({6: b"garbage line\n"}, False, b"", "line 6 (bytes"),
        (
            {6: b"garbage\n", 9: b"{}\n", 10: b"\n", 11: b'{"op_code": 6}\n'},
            True,
            b"",
            "lines 6, 9,",
        ),
        ({6: b"x\n", 9: b"y\n"}, False, b'{"op_code":4,"worker_id":"ab', "and the torn last line"),
    ],
    ids=["one-line", "several-lines-and-the-last", "with-a-torn-tail"],
)
def test_lines_that_are_not_records_are_deleted_and_every_record_is_kept(
    tmp_path, inserted, last, tail, named
):
    """The case found: one garbage line near the start was cut off with every record after it."""
    path = tmp_path / "study.log"
    before = journal_with_trials(path)
    whole = path.read_bytes()
    records = whole.count(b"\n")
    if last:  # Optuna skips a bad last line, and would append after it
        inserted = {**inserted, records + len(inserted) + 1: b"last garbage\n"}
    damaged = with_lines(whole, inserted, tail)
    path.write_bytes(damaged)
    with pytest.raises(StorageError) as exc:
        check_journal(path, settle=0.01)
    message = str(exc.value)
    assert named in message and f"keeping all {records} records" in message, message
    assert "sed " in message and "truncate" not in message, message
    assert len(message.splitlines()) == 1
    assert path.read_bytes() == damaged and os.listdir(tmp_path) == ["study.log"]
    run_advice(message, tmp_path)
    assert path.read_bytes() == whole
    assert (tmp_path / "study.log.bak").read_bytes() == damaged
    assert trial_facts(path) == before, "the whole study is back"


def test_the_advice_quotes_a_path_with_spaces_and_quotes(tmp_path):
    folder = tmp_path / "my 'studies'"
    folder.mkdir()
    path = folder / "study $1.log"
    before = journal_with_trials(path, trials=3)
    whole = path.read_bytes()
    path.write_bytes(with_lines(whole, {4: b"garbage\n"}))
    with pytest.raises(StorageError) as exc:
        check_journal(path)
    run_advice(str(exc.value), tmp_path)
    assert path.read_bytes() == whole and trial_facts(path) == before


def test_a_damaged_record_that_later_ones_need_is_cut_off_with_what_it_drops(tmp_path):
    """A create record of a trial turned to garbage: without it, Optuna would number the
    trials after it one lower and give them each other's records, so the journal is cut."""
    path = tmp_path / "study.log"
    before = journal_with_trials(path)
    lines = path.read_bytes().splitlines(keepends=True)
    creates = [i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 4]
    cut = creates[4]  # trial 4's create record, half of it
    lines[cut] = lines[cut][:40] + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(StorageError) as exc:
        check_journal(path)
    message = str(exc.value)
    dropped = len(lines) - cut - 1
    assert f"line {cut + 1} (bytes" in message and "does not replay without it" in message
    assert f"keeping {cut} records and dropping the {dropped} after it" in message, message
    run_advice(message, tmp_path)
    assert path.read_bytes() == b"".join(lines[:cut])
    assert trial_facts(path) == before[:4]


@pytest.mark.parametrize(
    "content",
    [b"my notes\nsecond line\n", b'{"a": 1}\n', b"just one line, no newline", b"[1, 2]\n"],
)
def test_a_file_that_is_not_a_journal_is_refused_without_a_byte_written(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="is not an Optuna journal file"):
        open_storage(str(path))
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_journal_whose_first_record_is_being_written_is_waited_for(tmp_path):
    path = tmp_path / "study.log"
    path.write_bytes(b'{"op_code":0,"worker_id"')
    with pytest.raises(StorageError, match="torn record"):
        check_journal(path, settle=0.01)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory"])
def test_an_in_memory_database_is_refused(url):
    with pytest.raises(StorageError, match="in-memory database loses the study"):
        open_storage(url)


def test_passwords_are_masked_in_what_we_print():
    assert shown("postgresql://user:secret@db/handreid") == "postgresql://user:***@db/handreid"
    assert shown("studies/handreid.log") == "studies/handreid.log"


def test_a_journal_write_that_fails_half_way_cuts_its_torn_record(tmp_path, monkeypatch):
    path = tmp_path / "study.log"
    whole = journal_with_a_study(path)
    storage = open_storage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)

    def full_disk(self, logs):
        with open(path, "ab") as fh:
            fh.write(json.dumps(logs[0]).encode()[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(JournalFileBackend, "append_logs", full_disk)
    with pytest.raises(OSError):
        study.set_user_attr("note", "x" * 1000)
    monkeypatch.undo()
    assert path.read_bytes() == whole, "the torn record was cut off"
    assert not list(tmp_path.glob("*.lock")), "the lock was released"
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert len(study.trials) == 2


def storage_internal_error(reason: str) -> optuna.exceptions.StorageInternalError:
    """What Optuna's RDBStorage raises: a generic message, the database's reason as cause."""
    try:
        try:
            raise sqlalchemy.exc.OperationalError(
                "INSERT ...", {}, sqlite3.OperationalError(reason)
            )
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit."
            ) from exc
    except optuna.exceptions.StorageInternalError as exc:
        return exc


def test_failure_reasons_name_the_cause():
    assert failure_reason(storage_internal_error("database or disk is full")) == (
        "database or disk is full"
    )
    assert failure_reason(OSError(errno.ENOSPC, "No space left on device")) == (
        "No space left on device"
    )
    assert failure_reason(OSError(errno.ENOENT, "No such file")) is None
    assert failure_reason(ValueError("bad config")) is None


def test_the_other_default_storage_is_found_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("studies").mkdir()
    assert other_default(DEFAULT_STORAGE, "s") is None
    journal_with_a_study(Path(DEFAULT_JOURNAL))
    before = Path(DEFAULT_JOURNAL).read_bytes()
    assert other_default(DEFAULT_STORAGE, "s") == DEFAULT_JOURNAL
    assert other_default(DEFAULT_STORAGE, "t") is None
    assert other_default("sqlite:///elsewhere.db", "s") is None
    assert Path(DEFAULT_JOURNAL).read_bytes() == before
    assert sorted(os.listdir("studies")) == ["handreid.log"]


# ---- a storage that fails during `hpo run` -------------------------------------------------


def run_argv(data: Path, storage: str, *extra: str) -> list[str]:
    return [
        "run",
        "--backbone",
        "tiny-vit",
        "--data",
        str(data),
        "--storage",
        storage,
        "--study",
        "s",
        "--trials",
        "3",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--quiet",
        "--set",
        "num_splits=1",
        "--set",
        "warmup_epochs=0",  # with one epoch, a warm-up epoch is a (correct) warning line
        *extra,
    ]


def hpo(argv, capfd) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capfd.readouterr()
    return exc.value.code, out, err


def assert_one_error_line(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "failed with parameters" not in err, err
    # (a one-epoch run also warns that its schedule is all warm-up)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: storage ") and fragment in lines[0], err


@pytest.mark.parametrize("write", ["set_trial_state_values", "set_trial_intermediate_value"])
def test_a_full_sqlite_database_during_a_trial_is_one_line(
    write, tmp_path, synthetic_root, monkeypatch, capfd
):
    """The disk fills when Optuna records the end of the first trial, or while the trial reports
    its first epoch: one line, and the trial is failed, not left RUNNING."""
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    real = getattr(optuna.storages.RDBStorage, write)
    calls = []

    def full_once(self, trial_id, *args, **kwargs):
        finishing = write != "set_trial_state_values" or kwargs.get("state") != TrialState.RUNNING
        if finishing and not calls:
            calls.append(trial_id)
            raise storage_internal_error("database or disk is full")
        return real(self, trial_id, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, write, full_once)
    code, out, err = hpo(run_argv(synthetic_root, storage), capfd)
    # the objective re-raises storage errors with their cause: the database's own reason
    assert_one_error_line(code, err, "database or disk is full")
    study = optuna.load_study(study_name="s", storage=storage)
    trial, *queued = study.trials
    assert trial.state == TrialState.FAIL, "nothing is left RUNNING"
    # the first trial is the baseline: queued again for the re-run (the storage took it)
    assert [(t.state, t.user_attrs) for t in queued] == [
        (TrialState.WAITING, {"baseline": "default", "retry_of": 0})
    ]
    assert "storage error" in trial.user_attrs["error"] or write != "set_trial_state_values"
    # no temporary file remains (studies/ holds the artifact store hpo run opens)
    assert sorted(os.listdir(tmp_path)) == ["s.db", "studies"]
    assert os.listdir("studies") == ["artifacts"]


def test_a_full_disk_under_a_journal_during_a_trial_is_one_line(
    tmp_path, synthetic_root, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.log"
    real = JournalFileBackend.append_logs
    failed = []

    def full_once(self, logs):
        if not failed and any("intermediate_value" in log for log in logs):
            failed.append(logs)
            with open(path, "ab") as fh:
                fh.write(json.dumps(logs[0]).encode()[:20])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, logs)

    monkeypatch.setattr(JournalFileBackend, "append_logs", full_once)
    code, out, err = hpo(run_argv(synthetic_root, str(path)), capfd)
    assert failed
    assert_one_error_line(code, err, "failed: No space left on device")
    assert path.read_bytes().endswith(b"\n"), "the torn record was cut off"
    study = optuna.load_study(study_name="s", storage=open_storage(str(path), create=False))
    # the failed first trial is the baseline, queued again for the re-run
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs == {"baseline": "default", "retry_of": 0}
    assert sorted(os.listdir(tmp_path)) == ["s.log", "studies"]
    assert os.listdir("studies") == ["artifacts"]


@pytest.mark.integration  # several processes
def test_processes_opening_a_new_database_together_all_succeed(tmp_path):
    """They race to create Optuna's tables and version row (plain RDBStorage loses some)."""
    code = "import sys; from hpo.records.storage import open_storage; open_storage(sys.argv[1])"
    url = f"sqlite:///{tmp_path}/new.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors


FULL_FROM_THE_FIRST_EPOCH = """
import errno, os, sys
from optuna.storages.journal import JournalFileBackend
from hpo.cli import main

real, full = JournalFileBackend.append_logs, []


def full_from_the_first_epoch(self, logs):
    if full or any("intermediate_value" in log for log in logs):
        full.append(logs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(self, logs)


JournalFileBackend.append_logs = full_from_the_first_epoch
main(sys.argv[1:])
"""


@pytest.mark.integration  # two processes, each a short study
def test_a_disk_that_stays_full_under_a_journal_names_the_trial_left_running(
    tmp_path, synthetic_root
):
    """Nothing more can be written: the line says which trial is left RUNNING and what the
    re-run does with it, and the re-run (with room again) fails it and queues it again."""
    from tests.hpo.test_workers import env

    path = tmp_path / "s.log"
    argv = run_argv(synthetic_root, str(path))

    def hpo_process(*prefix: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *prefix, *argv],
            cwd=tmp_path,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    full = hpo_process("-c", FULL_FROM_THE_FIRST_EPOCH)
    assert full.returncode == 2, full.stderr
    assert_one_error_line(
        full.returncode, full.stderr, "trial(s) 0 could not be marked failed and show as RUNNING"
    )
    study = optuna.load_study(study_name="s", storage=open_storage(str(path), create=False))
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    rerun = hpo_process("-m", "hpo.cli")
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="s", storage=open_storage(str(path), create=False))
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[1].user_attrs.get("retry_of") == 0


def test_a_server_url_without_its_driver_says_what_to_install(monkeypatch):
    import sys as _sys

    for name in ("psycopg", "psycopg2"):
        monkeypatch.setitem(_sys.modules, name, None)  # as if not installed
    with pytest.raises(StorageError) as exc:
        open_storage("postgresql://user@127.0.0.1:9/handreid")
    assert "the PostgreSQL driver (psycopg) is not installed" in str(exc.value)
    assert "pip install 'handreid-hpo[postgres]'" in str(exc.value)
