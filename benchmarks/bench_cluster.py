"""A study on the local Slurm: submit-to-first-trial time, Slurm tasks vs local workers, and no
orphaned RUNNING trials after a cancelled task and a task at its time limit.

Runs a small CPU study (``hpo run --backbone tiny-vit``, no pruning, no kept checkpoints, one
query/gallery split, on a synthetic set of 24 ids x 8 images at 32 px trained at 32x32, so that
the whole run fits in minutes on a shared 2-core machine) with the same trial budget as a Slurm job array of 1, 2, 3 tasks (``--slurm N --slurm-gpus 0 --wait``)
and with ``--workers`` 1, 2, 3, each on a fresh journal file, all in one run; the synthetic set
and its decode cache are built first. Then it cancels one task of a 2-task job in the middle of
a trial, and lets a 1-task job reach its one-minute time limit (warned 30 s before), and counts
the trials left RUNNING in every study. Needs a Slurm that answers (``.ci/slurm start``).
Last line: ``slurm_submit_to_first_trial_s= slurm_vs_workers_throughput_ratio_3=
orphaned_running_trials=``.

    nice python benchmarks/bench_cluster.py [--trials 12] [--epochs 1] [--tasks 1 2 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo.fleet.slurm import job_running
from hpo.records.storage import open_storage

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def hpo(*args: str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"hpo {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def study(cwd: Path, name: str) -> optuna.Study:
    storage = open_storage(str(cwd / "studies" / name / "journal.log"), create=False)
    return optuna.load_study(study_name=name, storage=storage)


def job_of(stdout: str) -> str:
    return re.search(r"submitted Slurm job (\d+)", stdout).group(1)


def wait_gone(job: str, timeout: float = 400) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and job_running(job) is not False:
        time.sleep(1)
    subprocess.run(["scancel", job], check=False)


def submit_to_first_trial(cwd: Path, common: list[str], name: str) -> float:
    """Seconds from sbatch's answer to the first trial's start (the trial's own record)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "run", *common, "--trials", "1", "--study", name,
         "--storage", f"studies/{name}/journal.log", "--slurm", "1", "--slurm-gpus", "0"],
        cwd=cwd, env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    submitted, job = None, None
    for line in proc.stdout:
        if line.startswith("submitted Slurm job"):
            submitted, job = datetime.datetime.now(), job_of(line)
    proc.wait()
    if job is None:
        sys.exit("the submit-to-first-trial job was not submitted")
    wait_gone(job)
    first = min(t.datetime_start for t in study(cwd, name).get_trials() if t.datetime_start)
    return (first - submitted).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        sys.exit("no Slurm answers here (start one with: bash .ci/slurm start; export SLURM_CONF)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        cwd = Path(tmp)
        from handreid.data.synthetic import write_synthetic

        data = write_synthetic(cwd / "data", ids=24, per_id=8, size=32, seed=0)
        common = ["--backbone", "tiny-vit", "--data", str(data), "--dataset", "11k",
                  "--epochs", str(args.epochs), "--pruner", "none", "--quiet",
                  "--keep-checkpoints", "0", "--set", "image_size=[32,32]",
                  "--set", "num_splits=1"]  # fmt: skip
        hpo("run", *common, "--trials", "1", "--study", "warmup", cwd=cwd)  # data + cache
        first = submit_to_first_trial(cwd, common, "first")
        print(f"submit_to_first_trial seconds={first:.1f}", flush=True)
        rates: dict[tuple[str, int], float] = {}
        for n in args.tasks:
            for kind, extra in (
                ("workers", ["--workers", str(n)]),
                ("slurm", ["--slurm", str(n), "--slurm-gpus", "0", "--wait"]),
            ):
                name = f"{kind}{n}"
                seconds, _ = hpo(
                    "run", *common, "--trials", str(args.trials), "--study", name,
                    "--storage", f"studies/{name}/journal.log", *extra, cwd=cwd,
                )  # fmt: skip
                rates[kind, n] = args.trials / seconds * 3600
                print(
                    f"{kind}={n} trials={args.trials} epochs={args.epochs} seconds={seconds:.1f} "
                    f"trials_per_hour={rates[kind, n]:.0f}",
                    flush=True,
                )
        # a task cancelled mid-trial, and a task at its time limit
        _, out = hpo(
            "run", *common, "--trials", "3", "--epochs", "4", "--study", "cancel",
            "--slurm", "2", "--slurm-gpus", "0", cwd=cwd,
        )  # fmt: skip
        job = job_of(out)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            running = [
                t
                for t in study(cwd, "cancel").get_trials(states=(TrialState.RUNNING,))
                if isinstance(t.user_attrs.get("progress"), dict)
            ]
            if running:
                subprocess.run(["scancel", f"{job}_{running[0].user_attrs['slurm_task']}"])
                break
            time.sleep(0.5)
        _, out = hpo(
            "run", *common, "--trials", "2", "--epochs", "200", "--study", "limit",
            "--slurm", "1", "--slurm-gpus", "0", "--slurm-opts=--time=1 --signal=B:USR1@30",
            cwd=cwd,
        )  # fmt: skip
        limit = job_of(out)
        wait_gone(job)
        wait_gone(limit)
        orphans = 0
        for name in ("first", "cancel", "limit", *(f"slurm{n}" for n in args.tasks)):
            trials = study(cwd, name).get_trials()
            orphans += sum(t.state == TrialState.RUNNING for t in trials)
            for t in trials:
                if t.state == TrialState.FAIL and name in ("cancel", "limit"):
                    print(f"{name}: trial {t.number} FAIL: {t.user_attrs.get('error')}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    n = max(args.tasks)
    ratio = rates["slurm", n] / rates["workers", n]
    print(
        f"slurm_submit_to_first_trial_s={first:.1f} slurm_vs_workers_throughput_ratio_{n}="
        f"{ratio:.2f} orphaned_running_trials={orphans}"
    )


if __name__ == "__main__":
    main()
