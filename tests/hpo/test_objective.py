"""Objective, pruning and the trial loop with a stand-in trainer (fast, deterministic)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from handreid.engine import FitResult
from hpo.common.attrs import attrs_of
from hpo.fleet.progress import counts
from hpo.records.space import parse_space
from hpo.search.objective import Objective
from hpo.search.study import create_or_resume, run_until

SPACE = {
    "base": {
        "model": "tiny-vit",
        "pretrained": "none",
        "image_size": [64, 64],
        "batch_size": 16,
        "epochs": 5,
    },
    "space": {
        "lr_modules": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "max_norm": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
    },
    "baselines": [{"name": "hand-tuned", "lr_modules": 1e-3, "max_norm": 1.0}],
}


class StubPool:
    def get(self, cfg):
        return None


def fake_fit(curve=None, fail_on=None):
    """A trainer stand-in: val mAP per epoch depends on the config, callbacks run as in fit()."""

    def fit(cfg, *, callbacks=(), device=None, data=None):
        if fail_on is not None and fail_on(cfg):
            raise RuntimeError("injected failure")
        history, best, best_epoch = [], {}, -1
        for epoch in range(cfg.epochs):
            m = (
                curve(cfg, epoch)
                if curve
                else 1.0 - abs(math.log10(cfg.lr_modules) + 3) / 10 - 0.01 * (4 - epoch)
            )
            if not math.isfinite(m):
                return FitResult(history, best_epoch, best, "diverged", 0.1, 0, object(), None)
            metrics = {"mAP": m, "rank1": m, "rank5": m, "rank10": m, "loss": 1.0}
            history.append(metrics)
            if best_epoch < 0 or m > best["mAP"]:
                best, best_epoch = (
                    {k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP")},
                    epoch,
                )
            for cb in callbacks:
                cb(epoch, metrics)
        return FitResult(history, best_epoch, best, "completed", 0.1, 0, object(), None)

    return fit


class PruneAtStep(optuna.pruners.BasePruner):
    """Deterministic: prune every trial except the first when it reports step ``step``."""

    def __init__(self, step):
        self.step = step

    def prune(self, study, trial):
        return trial.number > 0 and trial.last_step == self.step


def make_study(pruner=None, seed=0):
    space = parse_space(SPACE)
    storage = optuna.storages.InMemoryStorage()
    study = create_or_resume(
        storage,
        "s",
        space,
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=pruner or optuna.pruners.NopPruner(),
        context={"command": "test"},
    )
    return study, space


def test_baseline_first_and_user_attrs():
    study, space = make_study()
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit()), 3)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].params == {"lr_modules": 1e-3, "max_norm": 1.0}
    assert trials[0].user_attrs["baseline"] == "hand-tuned"
    attrs = attrs_of(trials[0])
    from hpo.records.artifacts import config_attrs

    assert "config" not in attrs  # a long attribute made the dashboard's trial page overflow
    assert (
        attrs["config_sha256"]
        == config_attrs(space.config(trials[0].params)).attrs["config_sha256"]
    )
    assert attrs["epochs_run"] == 5 and attrs["best_epoch"] == 5
    assert attrs["mAP"] == pytest.approx(trials[0].value) == pytest.approx(1.0)
    assert {"rank1", "rank5", "rank10", "seconds", "peak_memory_mb", "status"} <= set(attrs)
    assert trials[0].intermediate_values == {
        e + 1: pytest.approx(1.0 - 0.01 * (4 - e)) for e in range(5)
    }


def test_deterministic_pruner_ends_trials_at_the_right_epoch():
    study, space = make_study(pruner=PruneAtStep(2))
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit()), 4)
    trials = study.get_trials()
    assert trials[0].state == TrialState.COMPLETE
    for t in trials[1:]:
        assert t.state == TrialState.PRUNED
        assert max(t.intermediate_values) == 2
        assert attrs_of(t)["epochs_run"] == 2 and attrs_of(t)["status"] == "pruned"


def test_failure_is_recorded_and_the_study_goes_on():
    study, space = make_study()
    fit = fake_fit(fail_on=lambda cfg: cfg.lr_modules > 0.006)
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fit), 5)
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    c = counts(study)
    assert c["complete"] + c["pruned"] == 5, "failed trials do not count toward the total"
    assert failed, "the random sampler with seed 0 draws some lr_modules > 0.006"
    assert all(t.user_attrs["error"] == "RuntimeError: injected failure" for t in failed)


def test_nan_loss_prunes():
    study, space = make_study()
    curve = lambda cfg, epoch: float("nan") if epoch == 1 else 0.5  # noqa: E731
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit(curve)), 1)
    t = study.get_trials()[0]
    assert t.state == TrialState.PRUNED and attrs_of(t)["status"] == "diverged"


def test_sampler_seed_makes_suggestions_repeat():
    runs = []
    for _ in range(2):
        study, space = make_study(seed=7)
        run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit()), 4)
        runs.append([t.params for t in study.get_trials()])
    assert runs[0] == runs[1]
    study, space = make_study(seed=8)
    run_until(study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit()), 4)
    assert [t.params for t in study.get_trials()] != runs[0]


def test_total_counts_finished_trials_and_resume_adds_the_rest():
    study, space = make_study()
    objective = Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit())
    assert run_until(study, objective, 2) == 2
    assert run_until(study, objective, 2) == 0
    assert run_until(study, objective, 5) == 3
    assert len(study.get_trials()) == 5


def test_resume_with_a_different_space_is_refused():
    study, space = make_study()
    from handreid.errors import UserError

    other = space.with_base(epochs=3)
    with pytest.raises(UserError, match="different search space"):
        create_or_resume(study._storage, "s", other, sampler=None, pruner=None, context={})


def test_value_se_counts_repeats_of_a_fold_once():
    from hpo.search.objective import RunResult, value_se

    rng = np.random.default_rng(0)
    aps = [
        {f"f{k}-{i}": [4 * a, 4] for i, a in enumerate(rng.uniform(0.6, 1.0, size=8))}
        for k in range(3)
    ]

    def runs(repeats):
        return [
            RunResult(
                fold=k,
                seed=r,
                value=0.8,
                best_epoch=1,
                epochs_run=1,
                status="completed",
                metrics={},
                identity_ap=aps[k],
            )
            for r in range(repeats)
            for k in range(3)
        ]

    assert value_se(runs(3), folds=3) == pytest.approx(value_se(runs(1), folds=3), rel=0.02)
