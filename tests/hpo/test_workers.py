"""Several workers on one study: journal file, PostgreSQL, crash recovery, interrupts, memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.fleet.recovery import recover_stale
from hpo.records.storage import StorageError, open_storage
from hpo.search.study import FINISHED, SurplusTrial, _Guarded, run_until

REPO = Path(__file__).resolve().parents[2]


def hpo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def run_args(
    data: Path, storage: str, study: str, trials: int, epochs: int, workers: int, *extra: str
):
    return hpo_cmd(
        "run",
        "--backbone",
        "tiny-vit",
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--data",
        str(data),
        "--storage",
        storage,
        "--study",
        study,
        "--workers",
        str(workers),
        "--quiet",
        "--pruner",
        "none",
        "--set",
        "num_splits=2",
        *extra,
    )


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_two_local_workers_on_a_journal_file(synthetic_root, tmp_path):
    storage = str(tmp_path / "study.log")
    proc = subprocess.run(
        run_args(synthetic_root, storage, "j", 6, 1, 2),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="j", storage=open_storage(storage, create=False))
    trials = study.get_trials()
    done = [t for t in trials if t.state in FINISHED]
    assert len(done) == 6
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({attrs_of(t)["worker"] for t in done}) == 2, "both workers ran trials"
    assert "2 worker(s)" in proc.stdout


@pytest.fixture(scope="module")
def pg_url():
    """A real PostgreSQL server: the one CI started, else a throwaway one this fixture runs."""
    url = os.environ.get("HANDREID_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    # pytest's temp folders are private to root; the server runs as the postgres user
    folder = Path(tempfile.mkdtemp(prefix="handreid-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script_env = {
        **os.environ,
        "HANDREID_PG_DIR": str(folder / "data"),
        "HANDREID_PG_PORT": str(port),
    }
    url = subprocess.run(
        ["bash", str(REPO / ".ci" / "postgres"), "start"],
        env=script_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run(
            ["bash", str(REPO / ".ci" / "postgres"), "stop"], env=script_env, check=False
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.integration
def test_postgres_workers_recover_a_killed_worker(synthetic_root, tmp_path, pg_url):
    name = f"pg-{os.getpid()}-{int(time.time())}"
    args = run_args(synthetic_root, pg_url, name, 6, 3, 3, "--heartbeat", "1")
    parent = subprocess.Popen(
        args, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        storage = open_storage(pg_url, create=False)
        study = wait_for(
            lambda: (
                name in [s.study_name for s in optuna.get_all_study_summaries(storage)]
                and optuna.load_study(study_name=name, storage=storage)
            ),
            120,
            "the study",
        )

        def running_mid_trial():
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                if t.intermediate_values and "worker" in attrs_of(t):
                    return t
            return None

        victim = wait_for(running_mid_trial, 300, "a trial in its second epoch")
        os.kill(int(attrs_of(victim)["worker"].rpartition(":")[2]), signal.SIGKILL)
        out, err = parent.communicate(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, err[-2000:]
    assert "killed" in err
    trials = study.get_trials()
    assert sum(t.state in FINISHED for t in trials) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    # a worker on this machine is found dead by its PID at once (retry_of); one elsewhere by
    # heartbeat (Optuna's failed_trial)
    retries = [
        t
        for t in trials
        if victim.number
        in (
            t.user_attrs.get("retry_of"),
            optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t),
        )
    ]
    assert len(retries) == 1 and retries[0].state in FINISHED, [
        (t.number, t.state.name, t.system_attrs, t.user_attrs.get("error")) for t in trials
    ]
    assert retries[0].params == victim.params


@pytest.mark.integration
def test_sigint_to_the_parent_leaves_no_running_trial(synthetic_root, tmp_path):
    storage = str(tmp_path / "study.log")
    parent = subprocess.Popen(
        run_args(synthetic_root, storage, "i", 30, 4, 2),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running():
            if not Path(storage).exists():
                return False
            try:
                study = optuna.load_study(
                    study_name="i", storage=open_storage(storage, create=False)
                )
            except (KeyError, StorageError):  # not created yet, or a worker is mid-write
                return False
            return study if study.get_trials(states=(TrialState.RUNNING,)) else False

        study = wait_for(running, 180, "a running trial")
        parent.send_signal(signal.SIGINT)
        out, err = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode != 0
    assert "interrupted" in err
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state in FINISHED for t in trials) < 30


@pytest.mark.integration
def test_workers_of_a_sigkilled_parent_stop_and_leave_no_running_trial(synthetic_root, tmp_path):
    storage = str(tmp_path / "study.log")
    parent = subprocess.Popen(
        run_args(synthetic_root, storage, "k", 30, 4, 2),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:

        def running():
            if not Path(storage).exists():
                return False
            try:
                study = optuna.load_study(
                    study_name="k", storage=open_storage(storage, create=False)
                )
            except (KeyError, StorageError):
                return False
            trials = study.get_trials(states=(TrialState.RUNNING,))
            workers = {attrs_of(t).get("worker") for t in trials} - {None}
            return study if len(workers) == 2 else False

        study = wait_for(running, 300, "both workers running a trial")
        pids += [
            int(attrs_of(t)["worker"].rpartition(":")[2])
            for t in study.get_trials(states=(TrialState.RUNNING,))
        ]
        parent.kill()  # SIGKILL: the parent cannot stop its workers
        parent.wait(timeout=30)

        def all_gone():
            return not any(Path(f"/proc/{pid}").exists() for pid in pids)

        wait_for(all_gone, 120, "the orphaned workers to stop")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    trials = optuna.load_study(study_name="k", storage=open_storage(storage)).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state in FINISHED for t in trials) < 30


def test_journal_trials_of_dead_workers_are_failed_and_requeued(tmp_path):
    study = optuna.create_study(storage=open_storage(str(tmp_path / "s.log")), study_name="r")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    orphan.set_user_attr("worker", f"{host}:{dead.pid}")
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr("worker", f"{host}:{os.getppid()}")
    assert recover_stale(study) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == orphan.number
    assert waiting[0].system_attrs["fixed_params"] == {"x": orphan.params["x"]}


def test_surplus_trials_are_refused_not_run():
    study = optuna.create_study()
    study.ask()  # another worker's trial, still running, already makes the total of 1
    calls = []
    trial = study.ask()
    with pytest.raises(SurplusTrial):
        _Guarded(lambda t: calls.append(t) or 1.0, total=1)(trial)
    assert not calls


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


@pytest.mark.integration
def test_many_trials_in_one_process_do_not_grow_memory(tiny_cfg):
    from hpo.records.space import parse_space
    from hpo.search.objective import DataPool, Objective

    base = {k: v for k, v in tiny_cfg.to_dict().items() if k not in ("lr_modules", "max_norm")}
    space = parse_space(
        {
            "base": {**base, "epochs": 1},
            "space": {
                "lr_modules": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "max_norm": {"type": "float", "low": 0.1, "high": 5.0},
            },
        }
    )
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    rss = []
    run_until(
        study,
        Objective(space, device="cpu", data=DataPool()),
        20,
        on_trial=lambda s, t: rss.append(rss_mb()),
    )
    assert len(rss) == 20 and all(t.state == TrialState.COMPLETE for t in study.get_trials())
    # model, optimiser and text caches are released after each trial; growth stays small
    assert rss[19] - rss[4] < 40, [round(r) for r in rss]
