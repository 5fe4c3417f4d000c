"""Progress while trials train: plain lines for logs, a live status line for terminals, and
each worker's trial for the parent of --workers, read from the storage."""

from __future__ import annotations

import io
import re
import threading
from types import SimpleNamespace

import optuna
import pytest

from hpo.common.attrs import attrs_of
from hpo.fleet import progress as progress_module
from hpo.fleet.progress import (
    PROGRESS_ATTR,
    RECORD_SECONDS,
    Progress,
    output_mode,
    running_status,
    status_text,
)
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
        study.seen.append(attrs_of(study.trials[-1]).get(PROGRESS_ATTR))
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
    assert attrs_of(study.trials[0])[PROGRESS_ATTR] == "ended"


def test_quiet_keeps_only_the_trial_lines_and_a_worker_prefixes_them(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    run_one_trial(Progress(3, mode="trials", out=out, err=out, prefix="[w1] "))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[w1] trial 0 COMPLETE val mAP 0.420 (1 split) · 2 epochs · 6.5s")
    # the trial's line is laid out for the width its prefix leaves: its parameter goes below
    assert len(lines) == 2 and lines[1].startswith("[w1]     lr_modules=")
    assert all(len(line) <= 80 for line in lines)


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
    # its worker's slot; the time since the trial started last
    assert re.fullmatch(r"trial 0 · fold 1/3 · epoch 2/8 · val mAP 0\.300 · [\d.]+s", texts[1])
    assert re.fullmatch(r"trial 1 · epoch 5/8 · val mAP 0\.500 · [\d.]+s", texts[0])
    assert texts[2] == "idle"
    starting = study.ask()  # worker 0 took a new trial; trial 1's worker is unknown
    starting.set_user_attr(PROGRESS_ATTR, {"worker": 0})
    texts = running_status(study.get_trials(), 3)
    assert re.fullmatch(r"trial 3 · starting · [\d.]+s", texts[0])
    assert texts[2].startswith("trial 1 · epoch 5/8 · val mAP 0.500 · ")


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


# ---- movement during an epoch: batches, a clock, the record a parent reads -------------------
class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_cfg(fold: int = 1, folds: int = 3, repeats: int = 1, epochs: int = 3):
    return SimpleNamespace(val_fold=fold, val_folds=folds, val_repeats=repeats, epochs=epochs)


def fake_fit(batches: int = 4, epochs: int = 1, between=None):
    """A fit() that trains ``epochs`` x ``batches`` batches, calling ``between(epoch, batch)``
    after each (where a test looks at the screen), and validates nothing."""

    def fit(cfg, *, on_batch, **kwargs):
        for epoch in range(epochs):
            for batch in range(1, batches + 1):
                on_batch(epoch, batch, batches)
                if between is not None:
                    between(epoch, batch)
        return "fitted"

    return fit


def test_the_status_line_shows_each_batch_of_the_running_epoch(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    tty, clock = Tty(), Clock()
    progress = Progress(3, mode="live", out=tty, err=tty, clock=clock, tick=3600)
    study = optuna.create_study(direction="maximize")
    seen = []

    def between(epoch, batch):
        clock.now += 1.0  # a batch a second: every one is drawn
        seen.append(tty.getvalue())

    def objective(trial):
        fit = progress.batches(fake_fit(batches=4, epochs=2, between=between))
        assert fit(run_cfg(fold=1), device="cpu") == "fitted"
        return 0.5

    with progress:
        study.optimize(progress.started(objective), n_trials=1)
    assert "trial 0 · fold 2/3 · epoch 1/3 · batch 2/4 · 1.0s" in seen[1]
    assert "trial 0 · fold 2/3 · epoch 2/3 · batch 3/4 · 6.0s" in seen[6]
    assert "trial 0 · fold 2/3 · epoch 2/3 · validating" in seen[7]  # the last batch is done
    assert "first epoch" not in tty.getvalue()


def test_the_clock_and_the_bar_move_while_nothing_else_does(monkeypatch):
    """Between batches (a slow batch, a validation) only the clock changes: ``tick`` redraws it,
    and the bar of trials with it."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    tty, clock = Tty(), Clock()
    progress = Progress(3, mode="live", out=tty, err=tty, clock=clock, tick=3600)
    study = optuna.create_study(direction="maximize")
    refreshed = []

    def objective(trial):
        progress.batches(fake_fit(batches=4))(run_cfg(folds=1))
        refreshes = progress.bar.refresh
        progress.bar.refresh = lambda *a, **k: (refreshed.append(1), refreshes(*a, **k))
        clock.now += 65
        progress.tick()
        return 0.5

    with progress:
        study.optimize(progress.started(objective), n_trials=1)
    assert "trial 0 · epoch 1/3 · validating · 1m05s" in tty.getvalue()
    assert refreshed, "the bar was redrawn: its elapsed time moves"


def test_a_live_display_ticks_by_itself_and_stops_with_it(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    tty = Tty()
    progress = Progress(3, mode="live", out=tty, err=tty, tick=0.01)
    ticks = threading.Semaphore(0)
    progress.tick = ticks.release  # the thread calls it once per interval
    with progress:
        for _ in range(3):
            assert ticks.acquire(timeout=30), "no tick"
        thread = progress._ticker
    assert thread is not None and not thread.is_alive()
    assert Progress(3, mode="epochs", out=tty, err=tty).__enter__()._ticker is None  # logs: none


def test_a_worker_records_its_batch_for_the_parent_at_most_every_few_seconds(monkeypatch):
    monkeypatch.setenv("HPO_WORKER_INDEX", "1")
    clock, records = Clock(), []
    progress = Progress(3, mode="none", out=io.StringIO(), err=io.StringIO(), clock=clock)
    study = optuna.create_study(direction="maximize")

    def between(epoch, batch):
        records.append(attrs_of(study.trials[-1]).get(PROGRESS_ATTR))
        clock.now += RECORD_SECONDS / 2

    def objective(trial):
        progress.batches(fake_fit(batches=5, between=between))(run_cfg(fold=0))
        return 0.5

    study.optimize(progress.started(objective), n_trials=1)
    assert records[0] == {"worker": 1}  # the first batch comes before a record is due
    assert records[2] == {
        "where": "fold 1/3",
        "epochs": 3,
        "training": "epoch 1/3 · batch 3/5",
        "worker": 1,
    }
    assert records[3] == records[2]  # not written again within RECORD_SECONDS
    assert records[4]["training"] == "epoch 1/3 · validating"
    texts = running_status([_running(records[2])], 1)
    assert re.fullmatch(r"trial 0 · fold 1/3 · epoch 1/3 · batch 3/5 · [\d.]+s", texts[0])


def _running(progress: dict) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.set_user_attr(PROGRESS_ATTR, progress)
    return study.trials[0]


def test_a_status_line_that_does_not_fit_leaves_out_whole_parts():
    progress = {"where": "fold 2/3", "training": "epoch 5/8 · batch 12/40", "mAP": 0.4123}
    progress |= {"loss": 2.3123, "seconds": 3.14}
    label = "confirm trial 12 seed 3"
    full = status_text(label, progress, 65.0, columns=200)
    assert full == (
        "confirm trial 12 seed 3 · fold 2/3 · epoch 5/8 · batch 12/40 · val mAP 0.412 · "
        "loss 2.31 · 3.1 s/epoch · 1m05s"
    )
    for columns, gone in (
        (100, ["loss"]),
        (90, ["loss", "s/epoch"]),
        (80, ["loss", "s/epoch", "val mAP"]),
    ):
        text = status_text(label, progress, 65.0, columns=columns)
        assert len(text) < columns and text.endswith("· 1m05s")
        assert all(word not in text for word in gone), (columns, text)
        assert set(text.split(" · ")) <= set(full.split(" · ")), "parts are whole"


def test_the_run_where_a_batch_trains_is_named_as_epoch_records_name_it():
    assert progress_module.run_where(run_cfg(fold=2, folds=3), 2) == "fold 3/3"
    assert progress_module.run_where(run_cfg(fold=0, folds=1), 0) == ""
    cfg = run_cfg(fold=1, folds=3, repeats=2)
    assert progress_module.run_where(cfg, 4) == "fold 2/3 · repeat 2/2"


def test_log_lines_fit_the_width_with_a_workers_prefix(monkeypatch):
    """A confirm run's epoch line with its fold is 84 characters: it wraps at a space, and a
    worker's prefix counts."""
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    progress = Progress(3, mode="epochs", out=out, err=out, prefix="[w1] ")
    progress.label = lambda trial: "confirm trial 12 seed 3"
    study = optuna.create_study(direction="maximize")
    progress.on_epoch(study.ask(), record(4, 8, "fold 2/3, ", run=1, m=0.41234))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 and line.startswith("[w1] ") for line in lines), lines
    assert " ".join(" ".join(line[5:] for line in lines).split()) == (
        "confirm trial 12 seed 3 · fold 2/3 · epoch 4/8 · val mAP 0.412 · loss 2.5 · 3.1 s/epoch"
    )
