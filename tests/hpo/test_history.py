"""Each finished trial's epoch history as trial artifacts, matching what the pruner saw."""

from __future__ import annotations

import io
import json
import math

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from PIL import Image

from handreid.engine import FitResult
from hpo.records.artifacts import open_artifact_store
from hpo.records.curves import curves_png
from hpo.records.history import (
    CURVES_FILE,
    HISTORY_FILE,
    intermediate_history,
    load_history,
    load_history_document,
)
from hpo.records.space import parse_space
from hpo.search.objective import Objective
from hpo.search.study import create_or_resume, run_until
from tests.hpo.test_objective import SPACE, PruneAtStep, StubPool, fake_fit, make_study

BASE_KEYS = {"run", "fold", "epoch", "step", "mAP"}
OPTIONAL = {"loss", "id", "tri", "supcon", "rank1", "rank5", "rank10", "seconds"}


def rich_fit(fail_after: int | None = None):
    """fake_fit with every metric fit() reports, and optionally a crash after some epochs."""
    inner = fake_fit()

    def fit(cfg, *, callbacks=(), device=None, data=None):
        def add_terms(epoch, metrics):
            metrics = {
                **metrics,
                "id": 0.7,
                "tri": 0.2,
                "supcon": 0.1,
                "grad_norm": 3.0,
                "supcon_w": 0.5,
                "lr_clip_visual": 1e-4 * (epoch + 1),
                "lr_modules": 1e-3 * (epoch + 1),
                "seconds": 0.25,
            }
            for cb in callbacks:
                cb(epoch, metrics)
            if fail_after is not None and epoch + 1 >= fail_after:
                raise RuntimeError("injected crash")

        return inner(cfg, callbacks=[add_terms], device=device, data=data)

    return fit


def entries_match_intermediate_values(entries, trial):
    assert {e["step"]: e["mAP"] for e in entries} == trial.intermediate_values  # exactly
    assert len({e["step"] for e in entries}) == len(entries)


def test_every_finished_trial_has_a_history_matching_its_intermediate_values(tmp_path):
    study, space = make_study(pruner=PruneAtStep(3))
    store = open_artifact_store(tmp_path / "artifacts")
    objective = Objective(space, device="cpu", data=StubPool(), fit_fn=rich_fit(), store=store)
    run_until(study, objective, 3)
    objective.fit_fn = rich_fit(fail_after=2)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL]
    for t in trials:
        names = sorted(m.filename for m in get_all_artifact_meta(t, storage=study._storage))
        assert names == sorted(["config.yaml", HISTORY_FILE, CURVES_FILE]), t.number
        entries = load_history(study, t.number, store)
        entries_match_intermediate_values(entries, t)
        for e in entries:
            assert BASE_KEYS <= set(e) <= BASE_KEYS | OPTIONAL | {"lr_clip_visual", "lr_modules"}
    doc = load_history_document(study, trials[3], store)
    assert doc["status"] == "failed" and [e["epoch"] for e in doc["epochs"]] == [1, 2]
    first = load_history(study, 0, store)[0]
    assert first == {
        "run": 0,
        "fold": 0,
        "epoch": 1,
        "step": 1,
        "mAP": trials[0].intermediate_values[1],
        "loss": 1.0,
        "id": 0.7,
        "tri": 0.2,
        "supcon": 0.1,
        "lr_clip_visual": 1e-4,
        "lr_modules": 1e-3,
        "rank1": trials[0].intermediate_values[1],
        "rank5": trials[0].intermediate_values[1],
        "rank10": trials[0].intermediate_values[1],
        "seconds": 0.25,
    }
    # the pruned trials stop at the epoch the pruner saw, and that epoch is in the history
    assert [e["epoch"] for e in load_history(study, 1, store)] == [1, 2, 3]


def test_folds_name_their_runs_and_steps_continue_across_runs(tmp_path):
    base = {**SPACE["base"], "val_folds": 2, "epochs": 3}
    space = parse_space({**SPACE, "base": base})
    study = create_or_resume(
        optuna.storages.InMemoryStorage(), "s", space, sampler=None, pruner=None, context={}
    )
    store = open_artifact_store(tmp_path / "artifacts")
    objective = Objective(
        space,
        device="cpu",
        data=StubPool(),
        fit_fn=rich_fit(),
        store=store,
        prune_between_runs=False,
    )
    run_until(study, objective, 1)
    trial = study.get_trials()[0]
    doc = load_history_document(study, trial, store)
    seed = space.config(trial.params).seed
    assert doc["runs"] == [
        {"run": 0, "fold": 0, "seed": seed, "epochs": 3, "epochs_run": 3},
        {"run": 1, "fold": 1, "seed": seed + 1, "epochs": 3, "epochs_run": 3},
    ]
    assert [(e["run"], e["fold"], e["epoch"], e["step"]) for e in doc["epochs"]] == [
        (0, 0, 1, 1),
        (0, 0, 2, 2),
        (0, 0, 3, 3),
        (1, 1, 1, 4),
        (1, 1, 2, 5),
        (1, 1, 3, 6),
    ]
    entries_match_intermediate_values(doc["epochs"], trial)
    # without the artifact, the same runs, folds and epochs from the intermediate values
    plain = load_history(study, trial, None)
    assert [(e["run"], e["fold"], e["epoch"], e["step"]) for e in plain] == [
        (e["run"], e["fold"], e["epoch"], e["step"]) for e in doc["epochs"]
    ]
    assert set(plain[0]) == BASE_KEYS


def test_a_trial_that_failed_before_any_epoch_has_no_history(tmp_path):
    study, space = make_study()
    store = open_artifact_store(tmp_path / "artifacts")
    fit = fake_fit(fail_on=lambda cfg: True)
    objective = Objective(space, device="cpu", data=StubPool(), fit_fn=fit, store=store)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    trial = study.get_trials()[0]
    assert trial.state == TrialState.FAIL
    assert [m.filename for m in get_all_artifact_meta(trial, storage=study._storage)] == [
        "config.yaml"
    ]
    assert load_history(study, trial, store) == []


def test_history_json_shape_and_non_finite_numbers(tmp_path):
    study, space = make_study()
    store = open_artifact_store(tmp_path / "artifacts")

    def fit(cfg, *, callbacks=(), device=None, data=None):
        metrics = {"mAP": 0.5, "rank1": 0.5, "rank5": 0.5, "rank10": 0.5, "loss": math.inf}
        for cb in callbacks:
            cb(0, metrics)
        best = {k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP")}
        return FitResult([metrics], 0, best, "completed", 0.1, 0, object(), None)

    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fit, store=store), 1)
    meta = next(
        m
        for m in get_all_artifact_meta(study.trials[0], storage=study._storage)
        if m.filename == HISTORY_FILE
    )
    with store.open_reader(meta.artifact_id) as fh:
        doc = json.loads(fh.read())  # strict JSON: no NaN or Infinity spelled out
    assert set(doc) == {"format", "trial", "status", "runs", "epochs"}
    assert doc["format"] == 1 and doc["trial"] == 0 and doc["status"] == "completed"
    assert doc["epochs"][0]["loss"] is None


def test_intermediate_history_without_the_epochs_per_run_is_one_run():
    trial = optuna.trial.create_trial(
        value=0.5,
        params={},
        distributions={},
        intermediate_values={1: 0.2, 2: 0.4},
        user_attrs={"n_folds": 3},
    )
    assert intermediate_history(trial) == [
        {"run": 0, "fold": 0, "epoch": 1, "step": 1, "mAP": 0.2},
        {"run": 0, "fold": 0, "epoch": 2, "step": 2, "mAP": 0.4},
    ]
    assert [(e["run"], e["fold"], e["epoch"]) for e in intermediate_history(trial, 1)] == [
        (0, 0, 1),
        (1, 1, 1),
    ]


def _blends(image: Image.Image, hex_colour: str) -> int:
    """Pixels that are ``hex_colour`` partly over white (an antialiased edge): each channel the
    same fraction, 0.15 to 0.85, of the way from white to the colour."""
    target = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    found = 0
    for count, pixel in image.convert("RGB").getcolors(1 << 20):
        shares = [(255 - p) / (255 - t) for p, t in zip(pixel, target, strict=True)]
        if 0.15 < shares[0] < 0.85 and max(shares) - min(shares) < 0.04:
            found += count
    return found


def test_curves_png_draws_each_run_and_term_antialiased():
    epochs = [
        {"run": r, "epoch": e, "mAP": 0.3 + 0.05 * e + 0.02 * r, "loss": 3.0 - 0.2 * e}
        | {"id": 2.0 - 0.2 * e, "tri": 0.5, "supcon": 0.1 * e}  # a SupCon weight ramp
        for r in range(3)
        for e in range(1, 9)
    ]
    runs = [{"run": r, "fold": r, "seed": 0} for r in range(3)]
    data = curves_png("trial 7 (completed)", epochs, runs)
    image = Image.open(io.BytesIO(data))
    # 880 px: legible at the dashboard's trial page, which shows it at least 400 px wide
    assert image.format == "PNG" and image.size == (880, 640)
    assert len(data) < 150_000
    colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    for hex_colour in ("#1f77b4", "#ff7f0e", "#2ca02c"):  # one line colour per run
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours
    for hex_colour in ("#444444", "#8c564b", "#e377c2"):  # and one per loss term
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours
    # smooth lines: run 0's line fades into the white around it (a jagged line has no such
    # pixels: it is its colour or the background)
    assert _blends(image, "#1f77b4") > 200
    curves_png("trial 8 (failed)", [], runs)  # nothing validated yet: still an image


def test_load_history_by_number_needs_the_study():
    with pytest.raises(TypeError):
        load_history(optuna.storages.InMemoryStorage(), 0)


def test_an_interrupted_trial_keeps_the_epochs_it_validated(tmp_path):
    study, space = make_study()
    store = open_artifact_store(tmp_path / "artifacts")

    def fit(cfg, *, callbacks=(), device=None, data=None):
        metrics = {"mAP": 0.3, "rank1": 0.3, "rank5": 0.3, "rank10": 0.3, "loss": 2.0}
        for cb in callbacks:
            cb(0, metrics)
        raise KeyboardInterrupt  # Ctrl-C in the second epoch

    objective = Objective(space, device="cpu", data=StubPool(), fit_fn=fit, store=store)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=1)
    doc = load_history_document(study, 0, store)
    assert doc["status"] == "interrupted"
    assert [(e["epoch"], e["mAP"]) for e in doc["epochs"]] == [(1, 0.3)]


def test_show_trial_prints_the_stored_history_with_losses_and_learning_rates(
    tmp_path, monkeypatch, capsys
):
    from hpo.cli import main

    monkeypatch.chdir(tmp_path)
    space = parse_space(SPACE)
    url = "sqlite:///s.db"
    study = create_or_resume(
        url,
        "s",
        space,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        context={"command": "test"},
    )
    store = open_artifact_store("studies/artifacts")  # where hpo run keeps it
    objective = Objective(space, device="cpu", data=StubPool(), fit_fn=rich_fit(), store=store)
    run_until(study, objective, 1)
    monkeypatch.setenv("COLUMNS", "200")  # every column in one table (80: two, see test_listing)
    with pytest.raises(SystemExit) as exc:
        main(["show", "--storage", url, "--trial", "0"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("epoch"))
    assert " ".join(header.split()[:9]) == "epoch val mAP rank1 rank5 rank10 loss id tri"
    assert "lr_clip_visual" in header and header.split()[-1] == "s"
    values = study.trials[0].intermediate_values
    rows = lines[lines.index(header) + 1 : -1]
    assert [float(r.split()[1]) for r in rows] == pytest.approx(
        [values[s] for s in sorted(values)], abs=5e-4
    )
    with pytest.raises(SystemExit):
        main(["show", "--storage", url, "--trial", "0", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["epochs"] == load_history(study, 0, store)
    assert data["epochs"][0]["lr_modules"] == 1e-3

    # without the artifact folder the table still comes from the intermediate values, and
    # reading creates no folder
    monkeypatch.chdir(tmp_path / "studies")
    with pytest.raises(SystemExit) as exc:
        main(["show", "--storage", "sqlite:///../s.db", "--trial", "0", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and set(data["epochs"][0]) == BASE_KEYS
    assert not (tmp_path / "studies" / "studies").exists()
