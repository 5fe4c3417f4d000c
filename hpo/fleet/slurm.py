"""A study's workers as a Slurm job array: the batch script, submitting it, following it, and
the signals that end a task's trial (asking the scheduler which tasks are gone is
``hpo.fleet.scheduler``).

``hpo run --slurm N`` (and ``hpo confirm --slurm N``) write ``studies/<study>/slurm/<job>.sbatch``,
a job array of N tasks, each one ordinary ``hpo run --worker`` process on the study's shared
storage, and submit it with ``sbatch``. Slurm places the tasks and gives each its GPU
(``CUDA_VISIBLE_DEVICES``); each trial records the task that ran it (user attributes
``slurm_job``, ``slurm_array_job``, ``slurm_task``, ``node``), so any process that looks at the
study can ask ``squeue`` whether that task still runs (``dead_tasks``), and fail and retry the
trials of those that do not. A task warned by Slurm before its time limit (``--signal``) or
cancelled ends its trial (failed, queued again) and exits (``SlurmStop``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from handreid.errors import Terminated, UserError
from hpo.common.attrs import attrs_of
from hpo.fleet.scheduler import (
    REASONS,
    in_slurm,
    task_name,
    trial_attrs,
)

WARNING_SECONDS = 120  # the early signal before the time limit: time to end a trial cleanly


def _seconds(text: str) -> int | None:
    """Slurm's ``[days-][hh:]mm:ss`` as seconds; None for UNLIMITED and the like."""
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if (
        not all(p.isdigit() for p in parts)
        or not 1 <= len(parts) <= 3
        or (days and not days.isdigit())
    ):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def own_reason(default: str) -> str:
    """Why Slurm is ending this task, from ``scontrol show job``. While a job is being ended it
    shows only COMPLETING, so a task stopped at its time limit is told from a cancelled (or
    pre-empted) one by its run time."""
    job = os.environ.get("SLURM_JOB_ID")
    why = None
    try:
        done = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job or ""],
            capture_output=True,
            text=True,
            timeout=10,
        )
        # an array's last task has the array's id, which names every task: take its own line
        line = next((x for x in done.stdout.splitlines() if f"JobId={job} " in x + " "), "")
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
    except (OSError, subprocess.TimeoutExpired):
        fields = {}
    state = fields.get("JobState", "")
    if state in REASONS:
        why = REASONS[state]
    elif state == "COMPLETING":
        limit, ran = _seconds(fields.get("TimeLimit", "")), _seconds(fields.get("RunTime", ""))
        why = "time limit" if limit is not None and ran is not None and ran >= limit - 2 else None
        why = why or "cancelled"
    return f"Slurm task {task_name(trial_attrs())}: {why or default}"


# ---- a task that Slurm stops ---------------------------------------------------------------
class SlurmStop(Terminated):
    """Slurm's warning before the time limit (SIGUSR1) or its SIGTERM (cancel, time limit,
    pre-emption): the trial ends as interrupted, is queued again, and the worker exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def reason(self) -> str:
        if self.signum == signal.SIGUSR1:
            return f"Slurm task {task_name(trial_attrs())}: time limit near"
        return own_reason("stopped by Slurm (SIGTERM)")


def install_handlers() -> None:
    """In a Slurm task: the early warning and SIGTERM end the trial through ``SlurmStop``."""
    if not in_slurm():
        return

    def stop(signum, frame):
        raise SlurmStop(signum)

    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)


def retry_stopped(study, trial, stop: SlurmStop) -> str:
    """Record why ``trial`` (still RUNNING) was stopped and queue its parameters again, as for
    a dead worker's trial (at most ``MAX_RETRIES`` times along one chain); returns the reason.
    Optuna marks the trial FAIL as the interrupt leaves the objective."""
    from hpo.fleet.recovery import _params, _retries, _retry_attrs
    from hpo.records.storage import MAX_RETRIES

    reason = f"interrupted: {stop.reason()}"
    study._storage.set_trial_user_attr(trial._trial_id, "error", reason)
    trials = study.get_trials(deepcopy=False)
    if any(attrs_of(t).get("retry_of") == trial.number for t in trials):
        return reason
    if _retries(trial, trials) < MAX_RETRIES:
        study.enqueue_trial(_params(trial), user_attrs=_retry_attrs(trial))
    return reason


# ---- the batch script ----------------------------------------------------------------------
def default_storage(study_name: str) -> str:
    """With --slurm: a journal file in the study's folder (which must be on a shared filesystem)."""
    from hpo.common.paths import study_dir

    return str(study_dir(study_name) / "journal.log")


def check_storage(storage: str, command: str) -> None:
    """A storage every node can share: SQLite is refused with ``command``, the one to use."""
    if storage.startswith("sqlite"):
        raise UserError(
            "--slurm: an SQLite database cannot be shared by tasks on several nodes; use a "
            f"journal file on a shared filesystem: {command} (or --storage with a PostgreSQL URL)"
        )


def local_storage_warning(storage: str) -> str | None:
    """A journal under /tmp is usually each node's own: the tasks would not share the study."""
    if "://" in storage:
        return None
    path = Path(storage).resolve()
    if path.parts[:2] == ("/", "tmp") or path.parts[:3] == ("/", "var", "tmp"):
        return (
            f"warning: --storage {storage} is under {path.parent}, usually a folder of each "
            "node's own: tasks on other nodes would not see the study"
        )
    return None


def check_options(n: int | None, gpus: str | None, gpus_per_task: int) -> None:
    if n is None:
        return
    if n < 1:
        raise UserError(f"--slurm={n}: must be at least 1 (the number of array tasks)")
    if gpus:
        raise UserError(
            f"--gpus={gpus} cannot be used with --slurm: Slurm gives each task its GPU "
            "(--slurm-gpus, or --gres in --slurm-opts)"
        )
    if gpus_per_task < 0:
        raise UserError(f"--slurm-gpus={gpus_per_task}: must be 0 (CPU only) or more")


def sbatch_lines(opts: str | None) -> list[str]:
    """``--slurm-opts "-p gpu --time 4:00:00 --account=lab"`` as ``#SBATCH`` lines."""
    try:
        words = shlex.split(opts or "")
    except ValueError as exc:
        raise UserError(f"--slurm-opts: {exc}") from None
    lines: list[list[str]] = []
    for word in words:
        if word.startswith("-") or not lines:
            if not word.startswith("-"):
                raise UserError(f"--slurm-opts: {word!r} is not an sbatch option")
            lines.append([word])
        else:
            lines[-1].append(word)
    return ["#SBATCH " + shlex.join(line) for line in lines]


def limit_seconds(text: str) -> int | None:
    """sbatch's ``--time`` as seconds: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS;
    None for no limit (0, INFINITE, UNLIMITED) and for forms sbatch itself refuses."""
    days, dash, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts) or (dash and not days.isdigit()):
        return None
    numbers = [int(p) for p in parts]
    if dash:  # D-HH[:MM[:SS]]
        if len(numbers) > 3:
            return None
        numbers += [0] * (3 - len(numbers))
        seconds = int(days) * 86400 + numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    elif len(numbers) == 1:  # a bare number is minutes
        seconds = numbers[0] * 60
    elif len(numbers) == 2:  # MM:SS
        seconds = numbers[0] * 60 + numbers[1]
    elif len(numbers) == 3:
        seconds = numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    else:
        return None
    return seconds or None  # --time=0 is no limit


def _option(words: list[str], long: str, short: str | None = None) -> str | None:
    """The value of the last ``long``/``short`` option among sbatch ``words`` (the last one
    given wins, as in sbatch)."""
    value = None
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else None
        if word.startswith(long + "="):
            value = word[len(long) + 1 :]
        elif word == long or (short and word == short):
            value = nxt
        elif short and word.startswith(short) and not word.startswith("--"):
            value = word[len(short) :]
    return value


def check_warning(opts: str | None) -> None:
    """Refuse a job whose warning before the time limit (``--signal``, default
    ``B:USR1@WARNING_SECONDS``) is not shorter than its ``--time``: every task would be warned
    as it starts and end at once. Refused rather than shortened: a bare ``--time=1`` is one
    minute, often meant as an hour, and the warning is the time a trial gets to end cleanly,
    which only the user can trade against the work a task does."""
    words = shlex.split(opts or "")
    time_text = _option(words, "--time", "-t")
    if time_text is None:
        return  # the partition's default limit: not known before the job starts
    signal_text = _option(words, "--signal")
    limit = limit_seconds(time_text)
    lead: int | None = WARNING_SECONDS
    if signal_text is not None:
        when = signal_text.rpartition("@")[2] if "@" in signal_text else "60"  # sbatch's default
        lead = int(when) if when.isdigit() else None
    if limit is None or lead is None or lead < limit:
        return
    given = (
        f"--signal={signal_text} in --slurm-opts"
        if signal_text is not None
        else f"hpo's default --signal=B:USR1@{WARNING_SECONDS}"
    )
    raise UserError(
        f"--slurm-opts: --time={time_text} is a time limit of {limit} s, but Slurm warns each "
        f"task {lead} s before it ({given}), so every task would stop as it starts; give a "
        f"longer --time (a bare number is minutes; --time=1:00:00 is an hour) or a shorter "
        f"warning, e.g. --signal=B:USR1@{max(limit // 2, 1)} in --slurm-opts"
    )


@dataclass
class Job:
    """What one submission runs: ``argv`` (after ``python -m hpo.cli``) in N array tasks."""

    study: str
    argv: list[str]
    tasks: int
    gpus: int = 1
    opts: str | None = None
    what: str = "worker"
    script_path: Path | None = None

    def script(self, folder: Path) -> str:
        cwd = Path.cwd().resolve()
        words = [sys.executable, "-m", "hpo.cli", *self.argv]
        parts: list[list[str]] = []
        for word in words:  # one option per line
            if word.startswith("--") or not parts:
                parts.append([word])
            else:
                parts[-1].append(word)
        command = " \\\n    ".join(shlex.join(part) for part in parts)
        lines = [
            "#!/bin/bash",
            f"# Study {self.study!r}: {self.tasks} Slurm array task(s), each one {self.what}",
            "# on the study's shared storage. Written by hpo; edit it and submit it again with",
            "# `sbatch <this file>`: tasks that join later, requeued or resubmitted, share the",
            "# study's work. Task T of job J logs to J_T.log in this folder.",
            f"#SBATCH --job-name=hpo-{self.study}"[:80],
            f"#SBATCH --array=0-{self.tasks - 1}",
            f"#SBATCH --output={(cwd / folder).as_posix()}/%A_%a.log",
            f"#SBATCH --chdir={cwd.as_posix()}",
            "#SBATCH --ntasks=1",
            f"#SBATCH --signal=B:USR1@{WARNING_SECONDS}",
        ]
        if self.gpus:
            lines.append(f"#SBATCH --gres=gpu:{self.gpus}")
        lines += sbatch_lines(self.opts)
        lines += [
            "",
            "export HPO_WORKER_INDEX=$SLURM_ARRAY_TASK_ID  # the status line this task fills",
            "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
            "export PYTHONUNBUFFERED=1",
            "# exec: Slurm's signals (USR1 before the time limit, TERM on scancel) reach hpo",
            f"exec {command}",
            "",
        ]
        return "\n".join(lines)


def write_script(job: Job) -> Path:
    """``studies/<study>/slurm/<stamp>.sbatch`` (renamed to ``<job id>.sbatch`` once submitted)."""
    from hpo.common.paths import study_dir

    folder = study_dir(job.study) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}.sbatch"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{stamp}-{n}.sbatch"
    path.write_text(job.script(folder))
    path.chmod(0o755)
    return path


def _sbatch() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError(
            "--slurm: sbatch not found on PATH; run this on a Slurm login node (or use "
            "--slurm-dry-run to write the batch script only)"
        )
    return sbatch


def _refusal(done: subprocess.CompletedProcess) -> str:
    text = " ".join((done.stderr or done.stdout or "").split())
    return text.removeprefix("sbatch: error: ") or f"exit status {done.returncode}"


def _test_only(script: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [_sbatch(), "--test-only"], input=script, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"--slurm: sbatch could not be run: {exc}") from None


# what sbatch says of GPUs no node has; "node configuration" is also what it says of too much
# memory or too many CPUs
_MAYBE_GPUS = ("gres", "gpu", "generic resource", "node configuration")


def check_submit(job: Job, folder: Path) -> None:
    """``sbatch --test-only`` on the job's script: its options and resources are checked,
    nothing is queued or written. A refusal suggests ``--slurm-gpus 0`` only when the job's
    GPUs are why: the same job without them passes."""
    done = _test_only(job.script(folder))
    if done.returncode == 0:
        return
    hint = ""
    if job.gpus and any(word in _refusal(done).lower() for word in _MAYBE_GPUS):
        try:
            without = _test_only(replace(job, gpus=0).script(folder))
        except UserError:
            without = None
        if without is not None and without.returncode == 0:
            hint = (
                f" (it passes without --gres=gpu:{job.gpus}: --slurm-gpus 0 for nodes without "
                "GPUs, or a GPU partition with -p in --slurm-opts)"
            )
    raise UserError(f"sbatch refused the job: {_refusal(done)}{hint}; nothing was submitted")


def submit(script: Path) -> tuple[str, Path]:
    """Submit ``script``; returns the job id and the script's new name ``<job id>.sbatch``."""
    done = subprocess.run(
        [_sbatch(), "--parsable", str(script)], capture_output=True, text=True, timeout=120
    )
    job = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not job.isdigit():
        raise UserError(f"sbatch refused the job: {_refusal(done)}; nothing was submitted")
    named = script.with_name(f"{job}.sbatch")
    script.rename(named)
    return job, named


def submitted_lines(job: str, script: Path, watch: str) -> list[str]:
    folder = script.parent
    return [
        f"submitted Slurm job {job} ({script}); task logs {folder}/{job}_<task>.log",
        f"watch it:  squeue -j {job}   or   {watch}",
        f"cancel it: scancel {job}",
    ]


def job_running(job: str) -> bool | None:
    """Whether any task of array job ``job`` is pending or running (None: Slurm not answering)."""
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(
            ["squeue", "--noheader", "--array", f"--jobs={job}", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return False if "invalid job id" in done.stderr.lower() else None
    return bool(done.stdout.strip())


def watch(
    study,
    job: str,
    total: int,
    progress,
    *,
    count: Callable[[Any], int],
    recover: Callable[[], Any],
    poll: float = 2.0,
) -> int:
    """Follow the study until ``count(study)`` reaches ``total``: the bar and a status line per
    running task (live), or a line per finished trial. Dead tasks' trials are failed and
    retried on the way. 0 when the total is reached; 1 when the job ended short of it; 130
    after Ctrl-C, which stops the watching only."""
    from hpo.fleet.progress import shown_trial

    progress.seen(study)
    seen = set(progress._seen)
    try:
        with progress:
            while True:
                recover()
                progress.poll(study)
                if progress.mode != "live":
                    for t in study.get_trials(deepcopy=False):
                        if t.state.is_finished() and t.number not in seen:
                            seen.add(t.number)
                            if shown_trial(t) and progress.mode != "none":
                                print(progress.line(t), flush=True)
                if count(study) >= total:
                    return 0
                if job_running(job) is False:
                    recover()
                    if count(study) >= total:
                        return 0
                    print(
                        f"Slurm job {job} ended with {count(study)} of {total} done; "
                        "see its task logs",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(poll)
    except KeyboardInterrupt:
        print(
            f"stopped watching; Slurm job {job} keeps running (cancel it with: scancel {job})",
            file=sys.stderr,
        )
        return 130


# ---- the commands' side (hpo run / hpo confirm) --------------------------------------------
def add_arguments(p, what: str) -> None:
    p.add_argument(
        "--slurm",
        type=int,
        metavar="N",
        help=f"submit N {what} as a Slurm job array (studies/<study>/slurm/<job>.sbatch) on "
        "storage every node shares (default: the journal file studies/<study>/journal.log, "
        "which must be on a shared filesystem) and return; with --wait, follow them",
    )
    p.add_argument(
        "--slurm-opts",
        metavar="OPTS",
        help="sbatch options for every task, given with '=': "
        '--slurm-opts="-p gpu --time=4:00:00 --account=lab" (written into the batch script, '
        "where they override its defaults)",
    )
    p.add_argument(
        "--slurm-gpus",
        type=int,
        default=1,
        metavar="G",
        help="GPUs per task (--gres=gpu:G, default 1); 0 for CPU-only nodes",
    )
    p.add_argument(
        "--slurm-dry-run",
        action="store_true",
        help="write the batch script and print the sbatch line; submit nothing",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="with --slurm: follow the job's trials until the total is reached (Ctrl-C stops "
        "watching only)",
    )


def check_args(args, command: Callable[[str, str], str]) -> None:
    """--slurm's options, before anything is read or written; sets the default storage."""
    if args.slurm is None:
        for flag, given in (
            ("--wait", args.wait),
            ("--slurm-dry-run", args.slurm_dry_run),
            ("--slurm-opts", args.slurm_opts),
        ):
            if given:
                raise UserError(f"{flag} goes with --slurm N")
        return
    check_options(args.slurm, args.gpus, args.slurm_gpus)
    if args.workers != 1:
        raise UserError(
            f"--workers={args.workers} cannot be used with --slurm: each Slurm task is one "
            "worker; ask for more tasks"
        )
    sbatch_lines(args.slurm_opts)
    check_warning(args.slurm_opts)
    backbone = getattr(args, "backbone", None)
    name = args.study or (f"handreid-{backbone}" if backbone else None)
    given = any(a == "--storage" or a.startswith("--storage=") for a in args.argv)
    if name is None:
        if not given:
            raise UserError("--slurm: name the study with --study (or its storage with --storage)")
        name = "<study>"
    default = default_storage(name)
    if not given or args.storage is None:
        args.storage = default
    if backbone:
        instead = command("--storage", default)
    else:  # hpo confirm works on the study where it is
        instead = f"--storage {default}, where `hpo run --slurm` keeps the study"
    check_storage(args.storage, instead)
    if not args.slurm_dry_run:  # the options and resources, before any data is read
        from hpo.common.paths import study_dir

        check_submit(
            Job(name, ["--help"], args.slurm, args.slurm_gpus, args.slurm_opts),
            study_dir(name) / "slurm",
        )


def prepare(args, study: str, argv: list[str], what: str) -> Job | None:
    """Write the batch script and have sbatch check it (nothing queued); None after printing
    the sbatch line with --slurm-dry-run."""
    job = Job(study, argv, args.slurm, args.slurm_gpus, args.slurm_opts, what)
    if args.slurm_dry_run:
        script = write_script(job)
        print(f"wrote {script}; submit it with: sbatch --parsable {script}")
        return None
    job.script_path = write_script(job)
    return job


def follow(args, job: Job, study, total: int, mode: str, **watch_args) -> int:
    """Submit the checked script; with --wait, watch the study (``watch``)."""
    from hpo.fleet.progress import Progress

    storage = args.storage
    if (warning := local_storage_warning(storage)) is not None:
        print(warning, file=sys.stderr)
    job_id, script = submit(job.script_path)
    show = f"hpo show --study {shlex.quote(job.study)} --storage {shlex.quote(storage)}"
    print("\n".join(submitted_lines(job_id, script, show)), flush=True)
    if not args.wait:
        return 0
    count = watch_args.pop("count")
    progress = Progress(
        total,
        mode=mode,
        initial=count(study),
        slots=job.tasks,
        desc=f"trials ({job.tasks} Slurm tasks)",
        **watch_args.pop("progress", {}),
    )
    recover = watch_args.pop("recover", None)
    if recover is None:
        from hpo.fleet.recovery import recover_stale

        def recover():
            recover_stale(study, progress.note)

    return watch(study, job_id, total, progress, count=count, recover=recover, **watch_args)
