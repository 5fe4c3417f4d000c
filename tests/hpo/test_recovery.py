"""A killed or interrupted run: its trial is retried at once on the next start, Ctrl-C is our
one line, and no trial is left RUNNING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.study import _optimize
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.fleet.recovery import (
    _local_pid_dead,
    recover_stale,
    release_own_trials,
    requeue_baseline,
    worker_id,
    worker_process,
)
from hpo.search.study import OPTUNA_TRIAL_LOGGER, run_until
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
            if "worker" in attrs_of(t) and (t.intermediate_values or not with_epoch):
                return study, t
        return None

    return check


@pytest.mark.integration
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
    before = []  # the study line, then the retry line
    line = again.stdout.readline()
    while line and "no longer running" not in line:
        before.append(line)
        line = again.stdout.readline()
    seconds = time.monotonic() - start
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    pid = attrs_of(victim)["worker"].rpartition(":")[2]
    assert f"trial {victim.number}: its worker" in line and f":{pid} is no longer running" in line
    # at once: by the dead PID, before the re-run trains anything (no heartbeat grace period)
    assert not [b for b in before if "epoch" in b or b.startswith("trial ")], before
    print(f"retry announced {seconds:.1f} s after the re-run started")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["retry_of"] == victim.number
    assert trials[1].params == victim.params
    assert "died" in trials[0].user_attrs["error"]


def interrupt_when(proc: subprocess.Popen, ready, what: str, sig=signal.SIGINT):
    """Ctrl-C (or ``sig``) ``proc`` once ``ready()`` returns a value (which is returned);
    killed if it never does."""
    try:
        found = wait_for(ready, 300, what)
        proc.send_signal(sig)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return found


@pytest.mark.integration
def test_ctrl_c_during_a_trial_is_exit_130_with_our_line_only(synthetic_root, tmp_path):
    proc = subprocess.Popen(
        run_cmd(synthetic_root, 3, 4),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    study, victim = interrupt_when(proc, running_trial(tmp_path, True), "a trial in its 2nd epoch")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert next(t for t in trials if t.number == victim.number).state == TrialState.FAIL


@pytest.mark.integration
def test_sigterm_during_a_trial_is_exit_143_and_leaves_no_running_trial(synthetic_root, tmp_path):
    proc = subprocess.Popen(
        run_cmd(synthetic_root, 3, 4),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    study, victim = interrupt_when(
        proc, running_trial(tmp_path, True), "a trial in its 2nd epoch", signal.SIGTERM
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM, as the shell reports a terminated job
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terminated: "), err
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


# ---- baselines survive failures and interrupts ------------------------------------------------


def _baseline_study():
    from tests.hpo.test_objective import make_study

    return make_study()


def _waiting(study):
    return [t for t in study.get_trials() if t.state == TrialState.WAITING]


def test_a_baseline_that_crashes_is_queued_again_with_its_label_until_the_cap():
    from hpo.records.storage import MAX_RETRIES
    from hpo.search.objective import Objective
    from tests.hpo.test_objective import StubPool, fake_fit

    study, space = _baseline_study()
    lines = []
    always = fake_fit(fail_on=lambda cfg: cfg.lr_modules == 1e-3)  # the baseline's value
    objective = Objective(space, device="cpu", data=StubPool(), fit_fn=always)
    run_until(study, objective, 3, max_failures=10, report=lines.append)
    trials = study.get_trials()
    baseline = [t for t in trials if t.user_attrs.get("baseline") == "hand-tuned"]
    assert [t.state for t in baseline] == [TrialState.FAIL] * (1 + MAX_RETRIES)
    assert [t.user_attrs.get("retry_of") for t in baseline] == [None, 0, 1, 2]
    assert all(t.params == baseline[0].params for t in baseline)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # the study went on
    assert "queued again" in lines[0] and f"not queued after {MAX_RETRIES} retries" in lines[-1]

    study, space = _baseline_study()
    crashes = iter([True])  # the first try crashes (OOM, a bad node), the retry runs

    once = fake_fit(fail_on=lambda cfg: cfg.lr_modules == 1e-3 and next(crashes, False))
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=once), 2)
    first, retry = study.get_trials()[:2]
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["baseline"] == "hand-tuned" and retry.user_attrs["retry_of"] == 0
    assert retry.params == first.params


def test_an_interrupted_baseline_is_queued_once_and_evaluated_by_the_next_run():
    from hpo.search.objective import Objective
    from tests.hpo.test_objective import StubPool, fake_fit

    study, space = _baseline_study()

    def interrupted(cfg, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=interrupted), 2)
    assert release_own_trials(study, "interrupted") == []  # Optuna failed it already
    (queued,) = _waiting(study)
    assert queued.user_attrs == {"baseline": "hand-tuned", "retry_of": 0}
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit()), 2)
    again = study.get_trials()[1]
    assert again.state == TrialState.COMPLETE and again.user_attrs["baseline"] == "hand-tuned"
    assert again.params == study.get_trials()[0].params


def test_released_and_dead_workers_baselines_keep_their_label_and_sampled_trials_do_not_return():
    study, _ = _baseline_study()
    baseline = study.ask()  # takes the queued baseline
    sampled = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for t in (baseline, sampled):
        t.set_user_attr("worker", worker_id())
    assert sorted(release_own_trials(study, "interrupted")) == [0, 1]
    assert release_own_trials(study, "interrupted") == []
    (queued,) = _waiting(study)
    assert queued.user_attrs == {"baseline": "hand-tuned", "retry_of": 0}
    assert queued.system_attrs["fixed_params"] == {"lr_modules": 1e-3, "max_norm": 1.0}
    assert requeue_baseline(study, study.get_trials()[0]) is False  # once per failure

    # the retry's worker dies before it drew its parameters: queued again, label kept
    retry = study.ask()
    assert retry.user_attrs["retry_of"] == 0
    gone = subprocess.Popen(["true"])
    gone.wait()
    machine = worker_process().rsplit("/", 2)[0]
    retry.set_user_attr("worker_process", f"{machine}/{gone.pid}/1")
    assert recover_stale(study) == [retry.number]
    (queued,) = _waiting(study)
    assert queued.user_attrs == {"baseline": "hand-tuned", "retry_of": retry.number}
    assert queued.system_attrs["fixed_params"] == {"lr_modules": 1e-3, "max_norm": 1.0}


@pytest.mark.integration
def test_ctrl_c_during_the_baseline_then_the_same_command_evaluates_it(synthetic_root, tmp_path):
    command = run_cmd(synthetic_root, 2, 1)
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    study, victim = interrupt_when(proc, running_trial(tmp_path, False), "the baseline trial")
    assert victim.number == 0 and victim.user_attrs["baseline"] == "default"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    again = subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("baseline")]
    assert len(done) == 1 and done[0].user_attrs["baseline"] == "default"
    from hpo.records.space import load_space

    baseline = {k: v for k, v in load_space("tiny-vit").baselines[0].items() if k != "name"}
    assert done[0].user_attrs["retry_of"] == 0 and done[0].params == baseline


def test_a_heartbeat_retry_keeps_the_baseline_label_but_not_the_dead_trys_artifacts(tmp_path):
    from optuna.artifacts import get_all_artifact_meta, upload_artifact

    from hpo.records.artifacts import open_artifact_store
    from hpo.records.storage import _Retry

    study, _ = _baseline_study()
    trial = study.ask()
    trial.set_user_attr("worker", "elsewhere:1")
    (tmp_path / "history.json").write_text("{}")
    store = open_artifact_store(tmp_path / "artifacts")
    upload_artifact(
        artifact_store=store, file_path=str(tmp_path / "history.json"), study_or_trial=trial
    )
    study.tell(trial, state=TrialState.FAIL)
    _Retry(max_retry=3)(study, study.get_trials()[0])
    (queued,) = _waiting(study)
    assert queued.user_attrs == {"baseline": "hand-tuned"}
    assert queued.system_attrs["failed_trial"] == 0
    assert get_all_artifact_meta(queued, storage=study._storage) == []


@pytest.mark.parametrize(
    "signum, reason",
    [(signal.SIGINT, "interrupted (SIGINT)"), (signal.SIGTERM, "interrupted (SIGTERM)")],
)
def test_an_interrupted_trial_says_which_signal_ended_it(signum, reason):
    """Optuna fails an interrupted trial with no word of its own; ours records the signal
    (SIGTERM as ``hpo.cli`` handles it) and ``hpo trials`` prints it."""
    from hpo.cli import _sigterm
    from hpo.common.lines import trial_line

    old = signal.signal(signal.SIGTERM, _sigterm)
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        return 1.0

    try:
        with pytest.raises(KeyboardInterrupt):
            run_until(study, objective, 1)
    finally:
        signal.signal(signal.SIGTERM, old)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"] == reason
    assert f"error: {reason}" in trial_line(trial)


class _InterruptingSampler(optuna.samplers.RandomSampler):
    """Sends ``signum`` to this process while Optuna's ask makes the trial (after the trial
    exists, before the objective runs): the window where an interrupt used to leave a RUNNING
    trial that no worker had marked."""

    def __init__(self, signum: int) -> None:
        super().__init__(seed=0)
        self.signum = signum

    def before_trial(self, study, trial):
        os.kill(os.getpid(), self.signum)
        time.sleep(0.2)  # an unheld signal raises here, inside ask
        super().before_trial(study, trial)


@pytest.mark.parametrize(
    "signum, reason",
    [(signal.SIGINT, "interrupted (SIGINT)"), (signal.SIGTERM, "interrupted (SIGTERM)")],
)
@pytest.mark.parametrize("loop", ["run", "confirm"])
def test_an_interrupt_inside_optunas_ask_ends_a_trial_that_names_its_worker(signum, reason, loop):
    from hpo.cli import _sigterm
    from hpo.decide import confirm

    old = signal.signal(signal.SIGTERM, _sigterm)
    study = optuna.create_study(direction="maximize", sampler=_InterruptingSampler(signum))
    ran = []

    def objective(trial):
        ran.append(trial.number)
        return 1.0

    try:
        with pytest.raises(KeyboardInterrupt):
            if loop == "run":
                run_until(study, objective, 1)
            else:
                study.enqueue_trial({}, user_attrs={"candidate": 0, "confirm_seed": 1})
                confirm.work(study, objective)
        assert signal.getsignal(signal.SIGTERM) is _sigterm  # the handlers are back
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, old)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and ran == []  # ended before it trained
    assert trial.user_attrs["error"] == reason
    assert attrs_of(trial)["worker"] == worker_id()


def test_a_dead_worker_trial_says_so(tmp_path):
    """A RUNNING trial whose worker process is gone is failed with the reason ``dead worker``."""
    study = optuna.create_study(direction="maximize")
    proc = subprocess.Popen(["true"])
    proc.wait()
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{proc.pid}")
    assert recover_stale(study) == [trial.number]
    failed = study.trials[trial.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["error"].startswith("dead worker")


def test_a_trial_no_worker_marked_is_failed_once_the_workers_are_gone():
    """A worker interrupted inside Optuna's ask leaves a RUNNING trial with no owner: the
    parent fails it (and queues a baseline again) once its workers have exited."""
    from datetime import datetime, timedelta

    from hpo.fleet.recovery import release_unclaimed

    study = optuna.create_study(direction="maximize")
    old = study.ask()  # started before the workers: not theirs to judge
    since = datetime.now() + timedelta(microseconds=1)
    while datetime.now() <= since:
        pass
    study.enqueue_trial({}, user_attrs={"baseline": "default"})
    orphan = study.ask()  # the queued baseline, popped by a worker that then died
    owned = study.ask()
    owned.set_user_attr("worker", "elsewhere:1")  # a live worker's trial
    assert release_unclaimed(study, since, "interrupted (SIGINT)", grace=0) == [orphan.number]
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert trials[orphan.number].user_attrs["error"] == "interrupted (SIGINT)"
    assert trials[old.number].state == trials[owned.number].state == TrialState.RUNNING
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.user_attrs == {"baseline": "default", "retry_of": orphan.number}
