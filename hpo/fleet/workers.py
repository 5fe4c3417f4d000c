"""Several worker processes on one study: GPU pinning, combined progress, signal forwarding."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime

import optuna

from hpo.fleet.progress import Progress, counts
from hpo.fleet.recovery import DEAD_WORKER, recover_stale, release_unclaimed


def parse_gpus(text: str | None) -> list[str]:
    from handreid.errors import UserError

    if not text:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not all(g.isdigit() for g in gpus):
        raise UserError(f"--gpus={text!r}: expected device numbers like 0,1,2")
    return gpus


def check_gpus(gpus: Sequence[str], workers: int) -> list[str]:
    """``--gpus`` only where it can work: several workers and CUDA devices to pin them to."""
    from handreid.errors import UserError

    if not gpus:
        return list(gpus)
    given = ",".join(gpus)
    if workers < 2:
        raise UserError(
            f"--gpus={given} pins worker processes to GPUs and needs --workers 2 or more; "
            "one worker picks its GPU with --device cuda:N"
        )
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise UserError(f"--gpus={given}: no CUDA device is visible here; leave out --gpus")
    # without CUDA_VISIBLE_DEVICES the numbers we see are the ones the workers will be given
    if "CUDA_VISIBLE_DEVICES" not in os.environ and max(int(g) for g in gpus) >= count:
        raise UserError(f"--gpus={given}: this machine has CUDA devices 0..{count - 1}")
    return list(gpus)


def worker_env(index: int, gpus: Sequence[str], n_workers: int) -> dict[str, str]:
    """Round-robin GPU pinning; on CPU the workers split the cores instead of fighting over them."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["HPO_WORKER_INDEX"] = str(index)
    env[PARENT_ENV] = str(os.getpid())  # the worker stops when this process is gone
    return env


PARENT_ENV = "HPO_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def watch_parent(pdeathsig: bool = True, interval: float = 1.0) -> None:
    """In a worker: when the parent that started it dies (even by SIGKILL, which it cannot
    forward), get SIGTERM, so the worker fails its running trial and exits (143) instead of
    running on as an orphan. Linux delivers it at once (``PR_SET_PDEATHSIG``); everywhere a
    thread also checks every ``interval`` seconds that the parent is still the parent."""
    parent = os.getppid()
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the check below still notices
    expected = os.environ.get(PARENT_ENV, "")
    if expected.isdigit() and int(expected) != parent and parent == 1:
        parent = -1  # the parent died before this process watched it: stop at once
    thread = threading.Thread(
        target=_check_parent, args=(parent, interval), name="parent-check", daemon=True
    )
    thread.start()


def _check_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:  # an orphan is adopted by init or a subreaper
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)


def child_lines(mode: str) -> str:
    """What a worker prints (its hidden --lines) when its parent shows progress in ``mode``:
    a live parent draws every worker's status from the storage, so the workers stay silent;
    otherwise each prints its own plain lines to the shared stdout."""
    return {"live": "none", "epochs": "epochs", "trials": "trials"}.get(mode, "none")


def run_workers(
    study: optuna.Study,
    child_argv: list[str],
    n: int,
    gpus: Sequence[str],
    total: int,
    progress: Progress | None = None,
    poll: float = 1.0,
) -> int:
    """Start ``n`` ``hpo run`` workers on the study and wait for them.

    Ctrl-C / SIGTERM to this process is forwarded as SIGINT to every worker (each fails its
    running trial and exits); afterwards any trial a dead worker left RUNNING is failed.
    ``progress`` (live mode) is polled once a second: the bar, each worker's trial, and a line
    per finished trial. Returns 0 once the study holds ``total`` finished trials (a worker
    that died on the way is reported), 130 when interrupted, else the first worker's non-zero
    exit status.
    """
    progress = progress or Progress(total, mode="none")
    progress.seen(study)
    launched = datetime.now()  # Optuna's trial start times are naive local time
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", *child_argv],
            env=worker_env(i, gpus, n),
            start_new_session=True,
        )  # signals reach workers only through us
        for i in range(n)
    ]
    stop = {"signal": None}

    def forward(signum, frame):
        stop["signal"] = signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)  # each worker's trial records the signal it got

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress:
            while any(p.poll() is None for p in procs):
                progress.poll(study)
                time.sleep(poll)
            progress.poll(study)
    except BaseException:
        _stop(procs)  # our own failure (the storage, say) must not leave workers running
        raise
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    recover_stale(study)
    if stop["signal"] is not None:
        why = f"interrupted ({signal.Signals(stop['signal']).name})"
    else:
        why = f"{DEAD_WORKER}: its worker ended before marking the trial as its own"
    release_unclaimed(study, launched, why)
    if stop["signal"] is not None:
        return 143 if stop["signal"] == signal.SIGTERM else 130
    for i, p in enumerate(procs):
        if p.returncode and p.returncode < 0:
            name = signal.Signals(-p.returncode).name
            print(
                f"warning: worker {i} was killed ({name}); its trial was failed and retried",
                file=sys.stderr,
            )
    c = counts(study)
    if c["complete"] + c["pruned"] >= total:
        return 0  # the study is complete even if a worker died on the way
    return next((code for code in (p.returncode for p in procs) if code), 0)  # 0: --timeout


def _stop(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    """Interrupt the workers still running (each fails its trial) and wait for them."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
