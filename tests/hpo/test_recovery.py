"""A killed or interrupted run: its trial is retried at once on the next start, Ctrl-C is our
one line, and no trial is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.study import _optimize
from optuna.trial import TrialState

from hpo.recovery import _local_pid_dead, recover_stale, worker_process
from hpo.study import OPTUNA_TRIAL_LOGGER, run_until
from tests.hpo.test_workers import env, hpo_cmd, wait_for


def interrupt(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0, 1)
    raise KeyboardInterrupt


def test_optunas_traceback_for_an_interrupted_trial_is_not_printed(capfd):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    with pytest.raises(KeyboardInterrupt):
        study.optimize(interrupt, n_trials=1)
    _, err = capfd.readouterr()
    # pins the logger Optuna reports failed trials on, which run_until filters
    assert "Trial 0 failed with parameters" in err and "Traceback" in err
    assert _optimize._logger.name == OPTUNA_TRIAL_LOGGER
    with pytest.raises(KeyboardInterrupt):
        run_until(study, interrupt, 2)
    _, err = capfd.readouterr()
    assert err == ""
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_a_worker_is_dead_when_its_process_is_gone_or_its_pid_was_reused():
    machine, pid, start = worker_process().rsplit("/", 2)
    parent = os.getppid()
    parent_start = Path(f"/proc/{parent}/stat").read_text().rpartition(")")[2].split()[19]
    assert not _local_pid_dead({"worker_process": f"{machine}/{parent}/{parent_start}"})
    # the same PID, started at another time: the worker died and the PID names another process
    assert _local_pid_dead({"worker_process": f"{machine}/{parent}/{int(parent_start) + 1}"})
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert _local_pid_dead({"worker_process": f"{machine}/{gone.pid}/1", "worker": "other:1"})
    # another machine (or container) that shares our host name: its PIDs are not ours to check
    assert not _local_pid_dead({"worker_process": f"other-boot/1/{gone.pid}/1"})


def test_a_worker_that_kills_every_try_is_not_retried_forever():
    study = optuna.create_study()
    gone = subprocess.Popen(["true"])
    gone.wait()
    machine = worker_process().rsplit("/", 2)[0]
    lines = []
    for _ in range(5):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # takes a retry
        trial.set_user_attr("worker_process", f"{machine}/{gone.pid}/1")
        recover_stale(study, lines.append)
    retried = [t.user_attrs.get("retry_of") for t in study.trials]
    # three retries of trial 0, then a fresh trial (4), whose death is retried again (5)
    assert retried == [None, 0, 1, 2, None, 4]
    assert all("queued again with the same parameters" in line for line in lines[:3])
    assert "not queued again after 3 retries" in lines[3]


def run_cmd(data: Path, trials: int, epochs: int) -> list[str]:
    return hpo_cmd(
        "run",
        "--backbone",
        "tiny-vit",
        "--data",
        str(data),
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--pruner",
        "none",
        "--quiet",
        "--set",
        "num_splits=1",
    )


def running_trial(tmp_path: Path, with_epoch: bool):
    def check():
        db = tmp_path / "studies" / "handreid.db"
        if not db.exists():
            return None
        try:
            study = optuna.load_study(study_name="handreid-tiny-vit", storage=f"sqlite:///{db}")
        except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            return None  # not created yet, or its tables are being created
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if "worker" in t.user_attrs and (t.intermediate_values or not with_epoch):
                return study, t
        return None

    return check


@pytest.mark.slow
def test_a_killed_sqlite_run_is_retried_at_once_on_the_next_start(synthetic_root, tmp_path):
    command = run_cmd(synthetic_root, 1, 3)
    first = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL)
    try:
        study, victim = wait_for(running_trial(tmp_path, True), 300, "a trial in its 2nd epoch")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    start = time.monotonic()
    again = subprocess.Popen(
        command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = again.stdout.readline()  # the study line, then the retry line
    while line and "no longer running" not in line:
        line = again.stdout.readline()
    seconds = time.monotonic() - start
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    pid = victim.user_attrs["worker"].rpartition(":")[2]
    assert f"trial {victim.number}: its worker" in line and f":{pid} is no longer running" in line
    # startup (imports, data, model check) included; the heartbeat grace period would be 60 s
    assert seconds < 30, seconds
    print(f"retry announced {seconds:.1f} s after the re-run started")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["retry_of"] == victim.number
    assert trials[1].params == victim.params
    assert "died" in trials[0].user_attrs["error"]


@pytest.mark.slow
def test_ctrl_c_during_a_trial_is_exit_130_with_our_line_only(synthetic_root, tmp_path):
    proc = subprocess.Popen(
        run_cmd(synthetic_root, 3, 4),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        study, victim = wait_for(running_trial(tmp_path, True), 300, "a trial in its 2nd epoch")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert next(t for t in trials if t.number == victim.number).state == TrialState.FAIL


def test_ctrl_c_while_optuna_records_a_trial_is_still_an_interrupt(monkeypatch):
    study = optuna.create_study()

    def interrupted_tell(*args, **kwargs):
        raise KeyboardInterrupt  # Optuna's trial loop then fails on a variable it never set

    monkeypatch.setattr(_optimize, "_tell_with_warning", interrupted_tell)
    with pytest.raises(KeyboardInterrupt):
        run_until(study, lambda t: t.suggest_float("x", 0, 1), 1)
