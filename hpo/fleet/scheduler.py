"""What Slurm says about the tasks that run a study's trials.

Each trial run inside a Slurm task records that task (``trial_attrs``: user attributes
``slurm_job``, ``slurm_array_job``, ``slurm_task``, ``node``); any process that looks at the
study asks ``squeue`` whether the task still runs (``dead_tasks``), so recovery can fail and
retry the trials of tasks that are gone. Submitting and following jobs is ``hpo.fleet.slurm``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from typing import Any

from hpo.common.attrs import attrs_of

ALIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING"}


REASONS = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "time limit",
    "NODE_FAIL": "node failure",
    "PREEMPTED": "pre-empted",
    "OUT_OF_MEMORY": "out of memory",
    "BOOT_FAIL": "node boot failure",
    "DEADLINE": "deadline",
    "FAILED": "failed",
    "COMPLETED": "ended",
    "PENDING": "requeued",
    "REQUEUED": "requeued",
}


GONE = "no longer known to Slurm"


_CACHE_SECONDS = 5.0  # workers look at the study every second; squeue is asked less often


def in_slurm() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def trial_attrs() -> dict[str, str]:
    """The Slurm task this process runs in, as user attributes of its trials (none outside)."""
    env = os.environ
    if not env.get("SLURM_JOB_ID"):
        return {}
    attrs = {"slurm_job": env["SLURM_JOB_ID"]}
    if env.get("SLURM_ARRAY_JOB_ID"):
        attrs["slurm_array_job"] = env["SLURM_ARRAY_JOB_ID"]
        attrs["slurm_task"] = env.get("SLURM_ARRAY_TASK_ID", "")
    attrs["node"] = env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    return attrs


def task_name(attrs: dict[str, Any]) -> str:
    """``12_1 on node gpu03``: the task as ``squeue`` and the logs name it."""
    job = attrs.get("slurm_job", "?")
    if attrs.get("slurm_array_job"):
        job = f"{attrs['slurm_array_job']}_{attrs.get('slurm_task', '?')}"
    return f"{job} on node {attrs['node']}" if attrs.get("node") else str(job)


def job_states(jobs: Iterable[str]) -> dict[str, str] | None:
    """``{job id: state}`` from ``squeue`` for the jobs it still knows (accounting may be off:
    a job it has forgotten is absent, not an error); None when Slurm cannot be asked."""
    jobs = sorted(set(jobs))
    if not jobs:
        return {}
    if shutil.which("squeue") is None:
        return None
    cmd = [
        "squeue",
        "--noheader",
        "--all",
        "--states=all",
        "--format=%A|%T",
        f"--jobs={','.join(jobs)}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():
            return {}  # every one of them is gone
        return None  # the controller does not answer: nothing is known
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job and state:
            states[job] = state.split()[0].rstrip("+")
    return states


_cache: dict[str, Any] = {"at": -1e9, "jobs": frozenset(), "states": None}


def _states_cached(jobs: set[str]) -> dict[str, str] | None:
    now = time.monotonic()
    if _cache["jobs"] != frozenset(jobs) or now - _cache["at"] > _CACHE_SECONDS:
        _cache.update(at=now, jobs=frozenset(jobs), states=job_states(jobs))
    return _cache["states"]


def dead_tasks(trials: Iterable[Any]) -> dict[int, str]:
    """``{trial number: why}`` for the given RUNNING trials whose Slurm task no longer runs:
    ``Slurm task 12_1 on node gpu03: cancelled`` (time limit, node failure, ...). Trials of
    this very task, and all trials when Slurm cannot be asked, are left alone."""
    own = os.environ.get("SLURM_JOB_ID")
    mine = {
        t.number: attrs_of(t)
        for t in trials
        if attrs_of(t).get("slurm_job") and str(attrs_of(t)["slurm_job"]) != own
    }
    if not mine:
        return {}
    states = _states_cached({str(a["slurm_job"]) for a in mine.values()})
    if states is None:
        return {}
    dead = {}
    for number, attrs in mine.items():
        state = states.get(str(attrs["slurm_job"]))
        if state in ALIVE:
            continue
        why = REASONS.get(state, state.lower()) if state else GONE
        dead[number] = f"Slurm task {task_name(attrs)}: {why}"
    return dead
