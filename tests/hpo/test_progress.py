"""Progress while trials train: plain lines for logs, a live status line for terminals, and
each worker's trial for the parent of --workers, read from the storage."""

from __future__ import annotations

import io

import optuna
import pytest

from hpo.fleet.progress import PROGRESS_ATTR, Progress, output_mode, running_status
from hpo.search.objective import EpochRecord


class Tty(io.StringIO):
    """A terminal, as far as isatty() tells."""

    def isatty(self) -> bool:
        return True


def record(
    epoch: int, epochs: int = 2, where: str = "", run: int = 0, m: float = 0.4
) -> EpochRecord:
    metrics = {"mAP": m, "loss": 2.5, "seconds": 3.14}
    return EpochRecord(run, 0, 0, where, epoch, epochs, run * epochs + epoch, metrics)


def run_one_trial(progress: Progress, where: str = "", epochs: int = 2) -> optuna.Study:
    """One trial; its ``progress`` attribute as the last epoch left it is in ``study.seen``."""
    study = optuna.create_study(direction="maximize")
    study.seen = []

    def objective(trial):
        trial.suggest_float("lr_modules", 1e-4, 1e-2, log=True)
        for e in range(1, epochs + 1):
            progress.on_epoch(trial, record(e, epochs, where, m=0.4 + e / 100))
        study.seen.append(study.trials[-1].user_attrs.get(PROGRESS_ATTR))
        trial.set_user_attr("epochs_run", epochs)
        trial.set_user_attr("seconds", 6.5)
        return 0.42

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with progress:
        study.optimize(progress.started(objective), n_trials=1, callbacks=[progress.on_trial])
    return study


def test_output_mode_follows_quiet_and_the_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("COLUMNS", "120")  # a terminal of known width (the fake has no size)
    assert output_mode(False, Tty(), Tty()) == "live"
    assert output_mode(True, Tty(), Tty()) == "trials"
    assert output_mode(False, io.StringIO(), Tty()) == "epochs"  # stdout to a file or a pipe
    assert output_mode(False, Tty(), io.StringIO()) == "epochs"
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert output_mode(False, Tty(), Tty()) == "epochs"


def test_a_log_gets_one_plain_line_per_epoch_and_per_trial():
    out = io.StringIO()
    study = run_one_trial(Progress(3, mode="epochs", out=out, err=out))
    lines = out.getvalue().splitlines()
    assert lines == [
        "trial 0 · epoch 1/2 · val mAP 0.410 · loss 2.5 · 3.1 s/epoch",
        "trial 0 · epoch 2/2 · val mAP 0.420 · loss 2.5 · 3.1 s/epoch",
        lines[2],
    ]
    assert lines[2].startswith("trial 0 COMPLETE val mAP 0.420 (1 split) · 2 epochs · 6.5s")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    (progress,) = study.seen  # while the trial ran
    assert progress["epoch"] == 2 and progress["mAP"] == 0.42 and progress["seconds"] == 3.14
    # once it ended, one short word (the dashboard prints attributes on one unbroken line)
    assert study.trials[0].user_attrs[PROGRESS_ATTR] == "ended"


def test_quiet_keeps_only_the_trial_lines_and_a_worker_prefixes_them():
    out = io.StringIO()
    run_one_trial(Progress(3, mode="trials", out=out, err=out, prefix="[w1] "))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[w1] trial 0 COMPLETE val mAP 0.420")


def test_a_silent_worker_still_records_its_progress_for_the_parent(monkeypatch):
    monkeypatch.setenv("HPO_WORKER_INDEX", "1")
    out = io.StringIO()
    study = run_one_trial(Progress(3, mode="none", out=out, err=out))
    assert out.getvalue() == ""
    assert study.seen[0]["worker"] == 1


def test_a_terminal_shows_the_running_trial_in_a_status_line(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    tty = Tty()
    progress = Progress(3, mode="live", out=tty, err=tty)
    study = optuna.create_study(direction="maximize")
    with progress:
        trial = study.ask()
        progress.on_epoch(trial, record(4, 8, "fold 2/3, ", run=1, m=0.41234))
        screen = tty.getvalue()
        assert "trial 0 · fold 2/3 · epoch 4/8 · val mAP 0.412 · loss 2.5 · 3.1 s/epoch" in screen
        assert "trials:   0%" in screen  # the bar of finished trials above it
        study.tell(trial, 0.5)
        progress.on_trial(study, study.trials[0])
    screen = tty.getvalue()
    assert "trial 0 COMPLETE val mAP 0.500" in screen
    assert "trials:  33%" in screen and "best=0.500" in screen


def test_the_parent_shows_each_workers_trial_from_the_storage():
    study = optuna.create_study(direction="maximize")
    first, second, third = study.ask(), study.ask(), study.ask()
    first.set_user_attr(
        PROGRESS_ATTR, {"where": "fold 1/3", "epoch": 2, "epochs": 8, "mAP": 0.3, "worker": 1}
    )
    second.set_user_attr(PROGRESS_ATTR, {"where": "", "epoch": 5, "epochs": 8, "mAP": 0.5})
    study.tell(third, 0.1)
    texts = running_status(study.get_trials(), 3)
    assert texts[1] == "trial 0 · fold 1/3 · epoch 2/8 · val mAP 0.300"  # its worker's slot
    assert texts[0] == "trial 1 · epoch 5/8 · val mAP 0.500"
    assert texts[2] == "idle"
    starting = study.ask()  # worker 0 took a new trial; trial 1's worker is unknown
    starting.set_user_attr(PROGRESS_ATTR, {"worker": 0})
    texts = running_status(study.get_trials(), 3)
    assert texts[0].startswith("trial 3 · first epoch (") and texts[0].endswith("s)")
    assert texts[2] == "trial 1 · epoch 5/8 · val mAP 0.500"


def test_the_parent_of_live_workers_announces_each_finished_trial_once(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.2)  # before this run: not announced again
    tty = Tty()
    progress = Progress(4, mode="live", slots=2, out=tty, err=tty)
    progress.seen(study)
    with progress:
        running = study.ask()
        running.set_user_attr(PROGRESS_ATTR, {"epoch": 1, "epochs": 2, "mAP": 0.25, "worker": 0})
        progress.poll(study)
        assert "w0 trial 1 · epoch 1/2 · val mAP 0.250" in tty.getvalue()
        study.tell(running, 0.3)
        progress.poll(study)
        progress.poll(study)
    screen = tty.getvalue()
    assert screen.count("trial 1 COMPLETE val mAP 0.300") == 1
    assert "trial 0 COMPLETE" not in screen


def test_modes_are_checked():
    with pytest.raises(ValueError, match="mode 'bar'"):
        Progress(1, mode="bar")


def test_a_terminal_of_0_or_unknown_columns_gets_plain_lines(monkeypatch):
    """``script`` without a size reports 0 columns: no bar (it would draw nothing), plain lines;
    and text is laid out for 80 columns."""
    import os

    from hpo.common.lines import width

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_mode(False, Tty(), Tty()) == "epochs"  # no size at all
    monkeypatch.setattr(os, "get_terminal_size", lambda *a: os.terminal_size((0, 0)))
    assert output_mode(False, Tty(), Tty()) == "epochs"
    assert width() == 80
    monkeypatch.setenv("COLUMNS", "0")
    assert output_mode(False, Tty(), Tty()) == "epochs" and width() == 80
    monkeypatch.setenv("COLUMNS", "100")
    assert output_mode(False, Tty(), Tty()) == "live" and width() == 100
