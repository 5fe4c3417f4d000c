"""Studies on Slurm: the batch script, reading squeue, failing and retrying dead tasks' trials,
and (where a Slurm controller answers, as in CI) real job arrays of tiny-vit workers on CPU."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.fleet import scheduler, slurm
from hpo.fleet.recovery import recover_stale
from hpo.records.storage import MAX_RETRIES, open_storage
from hpo.search.study import FINISHED, run_until


def fake_bin(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    """Puts a fake ``squeue`` first on PATH: it prints ``out`` (records its arguments) and
    exits with ``code``, writing ``err`` to stderr."""
    folder = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(scheduler, "_cache", {"at": -1e9, "jobs": frozenset(), "states": None})

    def make(out: str = "", code: int = 0, err: str = "") -> Path:
        args = tmp_path / "squeue.args"
        fake_bin(
            folder,
            "squeue",
            f'echo "$@" > {args}\nprintf "%s" "{out}"\nprintf "%s" "{err}" >&2\nexit {code}\n',
        )
        scheduler._cache["at"] = -1e9
        return args

    return make


def trial(number: int, job: str | None, task: str = "0", node: str = "n1"):
    attrs = {"slurm_job": job, "slurm_array_job": "10", "slurm_task": task, "node": node}
    return SimpleNamespace(number=number, user_attrs=attrs if job else {})


def test_dead_tasks_reads_each_job_state_from_squeue(squeue, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "99")  # this process's own task is never dead
    args = squeue("11|CANCELLED\n12|RUNNING\n13|TIMEOUT\n14|NODE_FAIL\n99|RUNNING\n")
    trials = [
        trial(1, "11", "1"),
        trial(2, "12", "2"),
        trial(3, "13", "3"),
        trial(4, "14", "4", "gpu7"),
        trial(5, "15", "5"),
        trial(6, "99", "9"),
        trial(7, None),
    ]
    dead = scheduler.dead_tasks(trials)
    assert dead == {
        1: "Slurm task 10_1 on node n1: cancelled",
        3: "Slurm task 10_3 on node n1: time limit",
        4: "Slurm task 10_4 on node gpu7: node failure",
        5: "Slurm task 10_5 on node n1: no longer known to Slurm",  # accounting off: forgotten
    }
    assert "--jobs=11,12,13,14,15" in args.read_text()
    assert "--states=all" in args.read_text()


def test_dead_tasks_invalid_job_id_is_gone_but_no_answer_is_unknown(squeue):
    squeue(code=1, err="slurm_load_jobs error: Invalid job id specified")
    assert scheduler.dead_tasks([trial(1, "11")]) == {
        1: "Slurm task 10_0 on node n1: " + scheduler.GONE
    }
    squeue(code=1, err="slurm_load_jobs error: Unable to contact slurm controller")
    assert scheduler.dead_tasks([trial(1, "11")]) == {}


def test_no_squeue_means_nothing_is_dead(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(scheduler, "_cache", {"at": -1e9, "jobs": frozenset(), "states": None})
    assert scheduler.dead_tasks([trial(1, "11")]) == {}


def test_trial_attrs_name_the_task(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME"):
        monkeypatch.delenv(key, raising=False)
    assert scheduler.trial_attrs() == {}
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "15")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu03")
    attrs = scheduler.trial_attrs()
    assert attrs == {"slurm_job": "17", "slurm_array_job": "15", "slurm_task": "2", "node": "gpu03"}
    assert scheduler.task_name(attrs) == "15_2 on node gpu03"


def _journal_study(tmp_path, name="s"):
    storage = open_storage(str(tmp_path / "journal.log"))
    return optuna.create_study(study_name=name, storage=storage, direction="maximize")


def _running_in_task(study, job: str, x: float, retry_of: int | None = None):
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    attrs = {"slurm_job": job, "slurm_array_job": job, "slurm_task": "0", "node": "n1"}
    if retry_of is not None:
        attrs["retry_of"] = retry_of
    for key, value in attrs.items():
        t.set_user_attr(key, value)
    return t


def test_a_dead_tasks_trial_is_failed_with_its_reason_and_retried(squeue, tmp_path):
    study = _journal_study(tmp_path)
    _running_in_task(study, "21", 0.5)
    squeue("21|TIMEOUT\n")
    lines = []
    assert recover_stale(study, lines.append) == [0]
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    assert first.user_attrs["error"] == "Slurm task 21_0 on node n1: time limit"
    assert lines == [
        "trial 0: Slurm task 21_0 on node n1: time limit; marked FAIL and queued again with the "
        "same parameters"
    ]
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0
    assert retry.system_attrs["fixed_params"] == first.params
    assert recover_stale(study) == []  # once only


def test_a_trial_that_kills_its_task_every_time_is_not_retried_forever(squeue, tmp_path):
    study = _journal_study(tmp_path)
    for i in range(MAX_RETRIES + 1):  # the original and its retries, each on a dead task
        _running_in_task(study, str(30 + i), 0.5, retry_of=i - 1 if i else None)
    squeue("")  # all forgotten by the controller
    lines = []
    recover_stale(study, lines.append)
    states = [t.state for t in study.trials]
    # each failed, and each queued again but the one at the end of the chain
    assert states == [TrialState.FAIL] * (MAX_RETRIES + 1) + [TrialState.WAITING] * MAX_RETRIES
    assert f"not queued again after {MAX_RETRIES} retries" in lines[-1]


def test_slurm_early_warning_ends_the_trial_as_interrupted_and_requeues_it(
    squeue, tmp_path, monkeypatch
):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    squeue("41|RUNNING\n")
    study = _journal_study(tmp_path)

    def objective(t):
        t.suggest_float("x", 0, 1)
        raise slurm.SlurmStop(signal.SIGUSR1)

    with pytest.raises(KeyboardInterrupt):
        run_until(study, objective, 1)
    stopped = study.trials[0]
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["error"] == "interrupted: Slurm task 40_1 on node n2: time limit near"
    assert attrs_of(stopped)["slurm_job"] == "41" and stopped.user_attrs["node"] == "n2"
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0
    assert retry.system_attrs["fixed_params"] == stopped.params


@pytest.mark.parametrize(
    "job, why",
    [
        ("JobState=COMPLETING RunTime=00:00:05 TimeLimit=UNLIMITED", "cancelled"),
        ("JobState=COMPLETING RunTime=00:01:00 TimeLimit=00:01:00", "time limit"),
        ("JobState=COMPLETING RunTime=1-00:00:00 TimeLimit=2-00:00:00", "cancelled"),
        ("JobState=NODE_FAIL RunTime=00:00:05 TimeLimit=UNLIMITED", "node failure"),
    ],
)
def test_sigterm_names_why_slurm_ends_the_task(squeue, tmp_path, monkeypatch, job, why):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    fake_bin(tmp_path / "bin", "scontrol", f'echo "JobId=41 JobName=hpo-s {job} Reason=None"\n')
    assert slurm.SlurmStop(signal.SIGTERM).reason() == f"Slurm task 41 on node n2: {why}"


def test_the_batch_script_is_a_job_array_of_workers_with_the_users_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = slurm.Job(
        "st", ["run", "--worker", "--study", "st"], 3, 1, "-p gpu --time 4:00:00 -A 'my lab'"
    )
    text = job.script(Path("studies/st/slurm"))
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --array=0-2" in sbatch
    assert f"#SBATCH --output={tmp_path}/studies/st/slurm/%A_%a.log" in sbatch
    assert f"#SBATCH --chdir={tmp_path}" in sbatch
    assert "#SBATCH --gres=gpu:1" in sbatch
    assert f"#SBATCH --signal=B:USR1@{slurm.WARNING_SECONDS}" in sbatch
    # the user's options come last, so they override the defaults above them
    assert sbatch[-3:] == ["#SBATCH -p gpu", "#SBATCH --time 4:00:00", "#SBATCH -A 'my lab'"]
    assert re.search(
        r"^exec .*python\S* -m hpo.cli run \\\n    --worker \\\n    --study st$", text, re.M
    )
    cpu = slurm.Job("st", ["run"], 1, 0).script(Path("studies/st/slurm"))
    assert "--gres" not in cpu and "#SBATCH --array=0-0" in cpu


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1", 60),  # a bare number is minutes
        ("90", 5400),
        ("1:30", 90),  # MM:SS
        ("2:00:00", 7200),  # HH:MM:SS
        ("1-2", 93600),  # D-HH
        ("1-2:30", 95400),  # D-HH:MM
        ("1-2:30:15", 95415),  # D-HH:MM:SS
        ("0", None),  # no limit
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("1:2:3:4", None),  # sbatch refuses these itself
        ("-5", None),
        ("an hour", None),
    ],
)
def test_time_limits_are_read_in_every_form_sbatch_takes(text, seconds):
    assert slurm.limit_seconds(text) == seconds


@pytest.mark.parametrize(
    "opts, limit, lead, given",
    [
        ("--time=1", 60, 120, "hpo's default --signal=B:USR1@120"),
        ("-p gpu -t 2", 120, 120, "hpo's default"),
        ("-t1", 60, 120, "hpo's default"),
        ("--time 0:30 --signal=B:USR1@60", 30, 60, "--signal=B:USR1@60 in --slurm-opts"),
        ("--signal=B:USR1@600 --time=5", 300, 600, "--signal=B:USR1@600 in --slurm-opts"),
        ("--time=1 --signal=USR1", 60, 60, "--signal=USR1 in --slurm-opts"),  # sbatch's 60 s
        ("--time=4:00:00 --time=1", 60, 120, "hpo's default"),  # the last one wins
    ],
)
def test_a_warning_that_does_not_fit_in_the_time_limit_is_refused(opts, limit, lead, given):
    """The case found: --time=1 with the default warning 120 s before the limit; each task was
    warned as it started and quit within seconds, without a word."""
    with pytest.raises(slurm.UserError) as exc:
        slurm.check_warning(opts)
    message = str(exc.value)
    assert f"a time limit of {limit} s, but Slurm warns each task {lead} s before it" in message
    assert given in message and "give a longer --time" in message
    assert f"--signal=B:USR1@{max(limit // 2, 1)} in --slurm-opts" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "opts",
    [
        None,
        "-p gpu",  # the partition's default limit is not known here
        "--time=4:00:00",
        "--time=3",
        "--time=2 --signal=B:USR1@70",
        "--time 1 --signal=B:USR1@30",
        "--time=UNLIMITED",
        "--time-min=1",
    ],
)
def test_a_warning_that_fits_in_the_time_limit_passes(opts):
    slurm.check_warning(opts)


NO_NODE = "Batch job submission failed: Requested node configuration is not available"


@pytest.mark.parametrize(
    "refuses_when, gpus, message, hint, tries",
    [
        ("*--gres*", 1, NO_NODE, True, 2),  # no GPU nodes: the same job without GPUs passes
        ("*", 1, NO_NODE, False, 2),  # too much memory: the same words, GPUs are not why
        ("*", 0, "Invalid generic resource (gres) specification", False, 1),  # already 0 GPUs
        ("*", 1, "invalid partition specified: nope", False, 1),  # not about GPUs at all
    ],
    ids=["gpus", "memory", "gpus-already-0", "partition"],
)
def test_sbatch_refusals_suggest_slurm_gpus_0_only_when_gpus_are_why(
    tmp_path, monkeypatch, refuses_when, gpus, message, hint, tries
):
    calls = tmp_path / "calls"
    # shell builtins only: the script reads the job script sbatch is given on stdin
    script = (
        f'echo call >> {calls}\nwhile read -r line; do case "$line" in {refuses_when}) '
        f"echo 'sbatch: error: {message}' >&2; exit 1;; esac; done\nexit 0\n"
    )
    fake_bin(tmp_path / "bin", "sbatch", script)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.chdir(tmp_path)
    job = slurm.Job("st", ["--help"], 2, gpus, "--mem=10T" if not hint else None)
    with pytest.raises(slurm.UserError) as exc:
        slurm.check_submit(job, Path("studies/st/slurm"))
    text = str(exc.value)
    assert text.startswith(f"sbatch refused the job: {message}")
    assert ("--slurm-gpus 0" in text) is hint, text
    assert text.endswith("; nothing was submitted")
    if hint:
        assert "it passes without --gres=gpu:1" in text
    assert calls.read_text() == "call\n" * tries
    assert not (tmp_path / "studies").exists(), "nothing written"


def test_a_journal_under_tmp_gets_a_warning():
    assert "usually a folder of each node's own" in slurm.local_storage_warning("/tmp/x/j.log")
    assert slurm.local_storage_warning("postgresql://u@db/hpo") is None
    assert slurm.local_storage_warning("/home/u/studies/j.log") is None


def test_dry_run_writes_the_script_and_submits_nothing(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "none"))  # no sbatch needed for a dry run
    proc = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "run", "--backbone", "tiny-vit", "--data",
         str(synthetic_root), "--study", "dry", "--slurm", "2", "--slurm-dry-run", "--epochs", "1"],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (script,) = (tmp_path / "studies" / "dry" / "slurm").glob("*.sbatch")
    assert f"sbatch --parsable {script.relative_to(tmp_path)}" in proc.stdout
    assert "--storage studies/dry/journal.log" in script.read_text()
    assert not (tmp_path / "studies" / "dry" / "journal.log").exists(), "no study before submit"


# ---- a real Slurm ---------------------------------------------------------------------------
def _slurm_or_skip() -> None:
    """Skip without a Slurm that answers; CI sets HANDREID_REQUIRE_SLURM, where that fails."""
    why = None
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        why = "Slurm's sinfo/sbatch are not installed"
    else:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
        if done.returncode != 0 or not re.search(r"idle|mix|alloc", done.stdout):
            why = f"no Slurm controller with a free node answers ({done.stderr.strip()[:200]})"
    if why and os.environ.get("HANDREID_REQUIRE_SLURM"):
        pytest.fail(why)
    if why:
        pytest.skip(why)


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def _hpo(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_args(data: Path, study: str, trials: int, epochs: int, tasks: int, *extra: str):
    return (
        "run", "--backbone", "tiny-vit", "--data", str(data), "--study", study,
        "--trials", str(trials), "--epochs", str(epochs), "--pruner", "none",
        "--set", "num_splits=2", "--slurm", str(tasks), "--slurm-gpus", "0", *extra,
    )  # fmt: skip


def _job_id(stdout: str) -> str:
    return re.search(r"submitted Slurm job (\d+)", stdout).group(1)


def _load(cwd: Path, study: str) -> optuna.Study:
    storage = open_storage(str(cwd / "studies" / study / "journal.log"), create=False)
    return optuna.load_study(study_name=study, storage=storage)


def _wait_job_gone(job: str, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if slurm.job_running(job) is False:
            return
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise AssertionError(f"Slurm job {job} still runs after {timeout} s")


@pytest.fixture(scope="module")
def slurm_study(synthetic_root, tmp_path_factory):
    """``--slurm 3 --wait`` to 6 trials: the study, its folder and the command's output."""
    _slurm_or_skip()
    cwd = tmp_path_factory.mktemp("slurm")
    proc = _hpo(cwd, *_run_args(synthetic_root, "arr", 6, 1, 3, "--wait"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return cwd, _load(cwd, "arr"), proc


@pytest.mark.integration
def test_slurm_array_runs_the_study_to_its_exact_total(slurm_study):
    cwd, study, proc = slurm_study
    job = _job_id(proc.stdout)
    trials = study.get_trials()
    done = [t for t in trials if t.state in FINISHED]
    assert len(done) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == 6, "every trial has its own parameters"
    assert all(t.user_attrs["slurm_array_job"] == job for t in done)
    assert all(attrs_of(t)["slurm_task"] in ("0", "1", "2") and t.user_attrs["node"] for t in done)
    folder = cwd / "studies" / "arr" / "slurm"
    assert sorted(p.name for p in folder.glob("*.log")) == [f"{job}_{i}.log" for i in range(3)]
    assert (folder / f"{job}.sbatch").is_file()
    assert f"scancel {job}" in proc.stdout
    assert "6 complete" in proc.stdout


@pytest.mark.integration
def test_slurm_confirm_runs_on_two_tasks(slurm_study):
    cwd, study, _ = slurm_study
    storage = str(cwd / "studies" / "arr" / "journal.log")
    proc = _hpo(
        cwd, "confirm", "--study", "arr", "--storage", storage, "--top", "3", "--seeds", "3",
        "--slurm", "2", "--slurm-gpus", "0", "--wait",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    job = _job_id(proc.stdout)
    from hpo.decide.confirm import companion_name, current

    summary = current(_load(cwd, "arr"))  # the confirmation summary is stored on the study
    assert summary and summary["seeds"]
    runs = optuna.load_study(
        study_name=companion_name("arr"), storage=open_storage(storage, create=False)
    ).get_trials()
    complete = [t for t in runs if t.state == TrialState.COMPLETE]
    flat = " ".join(proc.stdout.split())  # lines wrap at the terminal's width
    planned = int(re.search(r"on fresh seeds .*?: (\d+) runs", flat).group(1))
    assert len(complete) == planned >= 9  # the top 3 and the baseline, three seeds each
    assert {t.user_attrs["slurm_array_job"] for t in complete} == {job}
    assert sorted(p.name for p in (cwd / "studies" / "arr" / "slurm").glob(f"{job}_*.log")) == [
        f"{job}_0.log",
        f"{job}_1.log",
    ]


@pytest.mark.integration
def test_slurm_final_runs_on_two_tasks(slurm_study):
    from hpo.decide import final as fr
    from hpo.decide.confirm import current

    cwd, study, _ = slurm_study
    storage = str(cwd / "studies" / "arr" / "journal.log")
    if current(_load(cwd, "arr")) is None:  # run alone, without the confirm test before it
        confirm = _hpo(cwd, "confirm", "--study", "arr", "--storage", storage, "--top", "3")
        assert confirm.returncode == 0, confirm.stderr[-3000:]
    proc = _hpo(
        cwd, "final", "--study", "arr", "--storage", storage, "--seeds", "2",
        "--slurm", "2", "--slurm-gpus", "0", "--wait",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    job = _job_id(proc.stdout)
    table = fr.current(_load(cwd, "arr"))
    assert table["complete"] and "final table (test identities" in proc.stdout
    runs = fr.load_runs(_load(cwd, "arr")).get_trials(states=(TrialState.COMPLETE,))
    planned = 2 * len(table["aspects"][0]["rows"])
    assert len(runs) == planned and {t.user_attrs["slurm_array_job"] for t in runs} == {job}
    for row in table["aspects"][0]["rows"]:
        assert all((cwd / p).is_file() for p in row["checkpoints"])


@pytest.mark.integration
def test_scancel_of_a_task_mid_trial_fails_its_trial_with_the_reason_and_retries_it(
    synthetic_root, tmp_path
):
    _slurm_or_skip()
    proc = _hpo(tmp_path, *_run_args(synthetic_root, "cancel", 3, 4, 2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = _job_id(proc.stdout)
    storage = open_storage(str(tmp_path / "studies" / "cancel" / "journal.log"), create=False)
    try:
        victim = None
        end = time.monotonic() + 240
        while victim is None and time.monotonic() < end:
            study = optuna.load_study(study_name="cancel", storage=storage)
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                progress = attrs_of(t).get("progress")
                if isinstance(progress, dict) and progress.get("epoch", 0) >= 1:
                    victim = t  # mid-trial: one epoch of four done
                    break
            time.sleep(0.5)
        assert victim is not None, "no trial reached its first epoch"
        task = f"{job}_{attrs_of(victim)['slurm_task']}"
        subprocess.run(["scancel", task], check=True)
        _wait_job_gone(job)
    finally:
        subprocess.run(["scancel", job])
    study = optuna.load_study(study_name="cancel", storage=storage)
    trials = study.get_trials()
    failed = study.trials[victim.number]
    assert failed.state == TrialState.FAIL
    assert (
        failed.user_attrs["error"]
        == f"interrupted: Slurm task {task} on node {victim.user_attrs['node']}: cancelled"
    )
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.params == victim.params
    assert retry.state == TrialState.COMPLETE, "the other task ran the retry"
    assert sum(t.state in FINISHED for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.integration
def test_a_task_at_its_time_limit_leaves_nothing_running(synthetic_root, tmp_path):
    _slurm_or_skip()
    # two minutes, warned 70 s before (Slurm may warn up to a minute early): the warning comes
    # once a long trial trains, even on a busy machine
    opts = "--time=2 --signal=B:USR1@70"
    # no early stopping: on a quiet machine a trial would otherwise end well before the warning
    extra = (f"--slurm-opts={opts}", "--set", "early_stop_patience=0")
    proc = _hpo(tmp_path, *_run_args(synthetic_root, "limit", 2, 200, 1, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = _job_id(proc.stdout)
    try:
        _wait_job_gone(job, timeout=200)
    finally:
        subprocess.run(["scancel", job])
    study = _load(tmp_path, "limit")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped, "the trial was ended before the time limit"
    assert "time limit" in stopped[0].user_attrs["error"]
    assert [t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING] == [
        stopped[0].number
    ]


@pytest.mark.integration
def test_a_real_sbatch_refusal_names_slurm_gpus_0_only_when_gpus_are_why(tmp_path, monkeypatch):
    """What a real sbatch says of GPUs no node has and of too much memory (--test-only: nothing
    is queued)."""
    _slurm_or_skip()
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
    if set(gres.split()) != {"(null)"}:
        pytest.skip(f"this cluster has GPUs ({gres.strip()[:100]})")
    monkeypatch.chdir(tmp_path)
    folder = Path("studies/st/slurm")
    with pytest.raises(slurm.UserError) as exc:
        slurm.check_submit(slurm.Job("st", ["--help"], 2, 1), folder)
    assert "(it passes without --gres=gpu:1: --slurm-gpus 0 for nodes" in str(exc.value)
    for gpus in (1, 0):
        with pytest.raises(slurm.UserError) as exc:
            slurm.check_submit(slurm.Job("st", ["--help"], 2, gpus, "--mem=100000000"), folder)
        assert "--slurm-gpus" not in str(exc.value), str(exc.value)
    slurm.check_submit(slurm.Job("st", ["--help"], 2, 0, "--time=1-2:30"), folder)


def _watch(study, monkeypatch, capsys, squeue_out: str, squeue):
    from hpo.fleet.progress import Progress

    squeue(squeue_out)

    polls = []
    real_sleep = time.sleep

    def interrupted(seconds):
        # Ctrl-C at watch's third wait: a squeue call that fails once (watch polls again, as
        # it does on a busy cluster) must not read as the user's interrupt. The patch is on
        # the time module, so subprocess's own short waits for squeue to exit (many on a
        # loaded machine) come here too: those are not watch's polls.
        if seconds < 1:
            return real_sleep(seconds)
        polls.append(seconds)
        if len(polls) >= 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(slurm.time, "sleep", interrupted)
    progress = Progress(2, mode="trials")
    code = slurm.watch(study, "12", 2, progress, count=lambda s: 0, recover=lambda: None)
    return code, capsys.readouterr().err


def test_ctrl_c_stops_watching_only_and_says_how_to_cancel(squeue, tmp_path, monkeypatch, capsys):
    code, err = _watch(_journal_study(tmp_path), monkeypatch, capsys, "RUNNING\n", squeue)
    assert code == 130
    assert "stopped watching; Slurm job 12 keeps running (cancel it with: scancel 12)" in err


def test_watching_a_job_that_ended_short_of_the_total_says_so(
    squeue, tmp_path, monkeypatch, capsys
):
    code, err = _watch(_journal_study(tmp_path), monkeypatch, capsys, "", squeue)
    assert code == 1
    assert "Slurm job 12 ended with 0 of 2 done; see its task logs" in err
