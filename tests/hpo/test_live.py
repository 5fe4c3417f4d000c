"""`hpo run` and `hpo confirm` as a user sees them: a log file, a terminal, several workers,
and Ctrl-C, with real processes and tiny real training."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.records.space import load_space
from hpo.records.storage import open_storage
from hpo.search.study import create_or_resume

EPOCH = re.compile(
    r"^(\[w\d\] )?trial \d+( \(baseline \w+\))? · epoch (\d)/(\d) · val mAP \d\.\d{3} "
)
TRIAL = re.compile(r"^(\[w\d\] )?trial \d+( \(baseline \w+\))? (COMPLETE|PRUNED|FAIL)")


def hpo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", *args]


def plain_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment: tqdm not turned off, so any bar frame would show."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    return {**env, "HF_HUB_OFFLINE": "1", "HANDREID_CACHE": str(tmp_path / "cache")}


def run_to_log(tmp_path: Path, *args: str) -> tuple[int, str]:
    log = tmp_path / "log"
    with open(log, "wb") as fh:
        code = subprocess.run(
            hpo_cmd("run", "--backbone", "tiny-vit", "--data", "synthetic", *args),
            cwd=tmp_path,
            env=plain_env(tmp_path),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=900,
        ).returncode
    return code, log.read_bytes().decode()


@pytest.mark.integration
def test_a_log_file_gets_a_plain_line_per_epoch_and_per_trial(tmp_path, studies_with_demo_data):
    code, text = run_to_log(tmp_path, "--trials", "2", "--epochs", "2")
    assert code == 0, text[-3000:]
    assert "\r" not in text and "\x1b" not in text, "bar frames in the log"
    lines = text.splitlines()
    epochs = [m for m in map(EPOCH.match, lines) if m]
    trials = [line for line in lines if TRIAL.match(line)]
    assert [(m[3], m[4]) for m in epochs] == [("1", "2"), ("2", "2")] * 2, text
    assert len(trials) == 2 and trials[0].startswith("trial 0 (baseline default) COMPLETE")
    # each trial's epoch lines come before its trial line
    assert lines.index(trials[0]) > lines.index(epochs[1].string)
    assert lines.index(trials[0]) < lines.index(epochs[2].string)
    assert all(len(line) <= 160 for line in lines if EPOCH.match(line) or TRIAL.match(line))
    assert all(len(line) <= 160 for line in lines if line.startswith("    "))


@pytest.mark.integration
def test_quiet_logs_only_trial_lines(tmp_path, studies_with_demo_data):
    code, text = run_to_log(tmp_path, "--trials", "1", "--epochs", "1", "--quiet")
    assert code == 0, text[-3000:]
    lines = text.splitlines()
    assert not any(EPOCH.match(line) for line in lines)
    assert sum(bool(TRIAL.match(line)) for line in lines) == 1 and "\r" not in text


@pytest.mark.integration
def test_two_workers_log_their_epochs_with_a_worker_prefix(tmp_path, studies_with_demo_data):
    code, text = run_to_log(
        tmp_path, "--trials", "2", "--epochs", "1", "--workers", "2", "--pruner", "none"
    )
    assert code == 0, text[-3000:]
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    epochs = [m for m in map(EPOCH.match, lines) if m]
    trials = [line for line in lines if TRIAL.match(line)]
    assert {m[1] for m in epochs} == {"[w0] ", "[w1] "}, text  # both workers trained
    assert len(epochs) == 2 and len(trials) == 2


def read_pty(fd: int, proc: subprocess.Popen, timeout: float) -> str:
    chunks, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.integration
def test_a_terminal_shows_a_live_status_line_for_the_running_trial(
    tmp_path, studies_with_demo_data
):
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        hpo_cmd(
            "run", "--backbone", "tiny-vit", "--data", "synthetic", "--trials", "1", "--epochs", "2"
        ),
        cwd=tmp_path,
        env={**plain_env(tmp_path), "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    try:
        screen = read_pty(main, proc, 600)
        proc.wait(timeout=60)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, screen[-3000:]
    assert re.search(r"trial 0 \(baseline default\) · epoch 1/2 · val mAP \d\.\d{3} · loss", screen)
    # during an epoch the line shows its batches and the time the trial has run, not a
    # frozen "first epoch"
    assert re.search(r"trial 0 \(baseline default\) · epoch 1/2 · batch \d+/\d+ · [\d.]+s", screen)
    assert re.search(r"epoch 2/2 · batch \d+/\d+ · val mAP \d\.\d{3} · ", screen)
    assert "first epoch" not in screen
    assert "trials:   0%" in screen and "trials: 100%" in screen
    assert "trial 0 (baseline default) COMPLETE val mAP" in screen
    # the status line is drawn in place, not printed once per epoch as in a log
    assert not re.search(r"(^|\n)trial 0 \(baseline default\) · epoch 1/2", screen)


@pytest.mark.integration
def test_ctrl_c_during_confirm_is_exit_130_with_our_one_line(synthetic_root, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    space = load_space("tiny-vit").with_base(data_root=str(synthetic_root), epochs=6)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_or_resume(
        open_storage(url), "c", space, sampler=None, pruner=None, context={"command": "test"}
    )
    trial = study.ask()  # the baseline, as `hpo run` would have trained it
    space.suggest(trial)
    study.tell(trial, 0.5)
    proc = subprocess.Popen(
        hpo_cmd("confirm", "--study", "c", "--storage", url, "--top", "1", "--seeds", "2"),
        cwd=tmp_path,
        env=plain_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            try:
                runs = optuna.load_study(study_name="c.confirm", storage=url).get_trials()
            except KeyError:
                runs = []
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in runs):
                break
            time.sleep(0.3)
        else:
            raise AssertionError("no confirm run reached its first epoch")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted: finished runs are kept; re-run the same command to do the rest"
    ], err
    assert "Traceback" not in out
    runs = optuna.load_study(study_name="c.confirm", storage=url).get_trials()
    assert not [t for t in runs if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.FAIL for t in runs) == 1  # the interrupted run
    assert "confirm trial 0 seed 1 · epoch 1/6 · confirm mAP" in out  # its epochs were logged
