"""Folds and repeats in the objective, pruning between runs, and `hpo confirm` statistics,
with a stand-in trainer whose values are known."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from handreid.engine import FitResult
from hpo import confirm as cf
from hpo.export import export_trial, pick_trial
from hpo.objective import Objective
from hpo.space import parse_space
from hpo.study import create_or_resume, run_until

SPACE = {
    "base": {
        "model": "tiny-vit",
        "pretrained": "none",
        "image_size": [64, 64],
        "batch_size": 16,
        "epochs": 3,
        "warmup_epochs": 1,
        "val_folds": 3,
    },
    "space": {"lr_modules": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    "baselines": [{"name": "hand-tuned", "lr_modules": 1e-3}],
}


class StubPool:
    def get(self, cfg):
        return None


def stub_fit(effect, noise=0.01, calls=None, interrupt_on=None):
    """Best val mAP = effect(cfg) + 0.02 * fold + seed noise, reached at the last epoch;
    identity AP sums for 6 identities per fold that pool to that value."""

    def fit(cfg, *, callbacks=(), device=None, data=None):
        if calls is not None:
            calls.append((cfg.lr_modules, cfg.val_fold, cfg.seed))
            if interrupt_on is not None and len(calls) == interrupt_on:
                raise KeyboardInterrupt
        rng = np.random.default_rng([cfg.seed, cfg.val_fold, 7])
        value = effect(cfg) + 0.02 * cfg.val_fold + rng.normal(0, noise)
        history, best = [], {}
        for epoch in range(cfg.epochs):
            m = value - 0.01 * (cfg.epochs - 1 - epoch)
            metrics = {"mAP": m, "rank1": m, "rank5": m, "rank10": m, "loss": 1.0}
            history.append(metrics)
            best = {k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP")}
            for cb in callbacks:
                cb(epoch, metrics)
        spread = rng.normal(0, 0.05, size=6)
        spread -= spread.mean()
        aps = {f"f{cfg.val_fold}-{i}": [4 * (value + s), 4] for i, s in enumerate(spread)}
        return FitResult(history, cfg.epochs - 1, best, "completed", 0.1, 0, object(), None, aps)

    return fit


def lr_effect(cfg):
    return 0.8 - abs(np.log10(cfg.lr_modules) + 3) / 10


def make_study(space_dict=SPACE, pruner=None, seed=0):
    space = parse_space(space_dict)
    study = create_or_resume(
        optuna.storages.InMemoryStorage(),
        "s",
        space,
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=pruner or optuna.pruners.NopPruner(),
        context={"command": "test"},
    )
    return study, space


def objective(space, fit, **kw):
    return Objective(space, device="cpu", data=StubPool(), fit_fn=fit, **kw)


def test_three_folds_give_the_mean_their_spread_and_a_standard_error():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect, noise=0)), 1)
    t = study.get_trials()[0]
    attrs = t.user_attrs
    assert t.state == TrialState.COMPLETE and attrs["n_folds"] == 3
    assert attrs["fold_values"] == pytest.approx([0.8, 0.82, 0.84], abs=1e-6)
    assert t.value == pytest.approx(np.mean(attrs["fold_values"]))
    assert attrs["value_sd"] == pytest.approx(0.02, abs=1e-6)
    assert 0.005 < attrs["value_se"] < 0.05
    # each fold reports its epochs after the previous folds' steps
    assert sorted(t.intermediate_values) == list(range(1, 10))
    assert t.intermediate_values[4] == pytest.approx(0.82 - 0.02)


def test_one_fold_one_repeat_is_exactly_one_fit():
    base = {**SPACE, "base": {**SPACE["base"], "val_folds": 1}}
    study, space = make_study(base)
    fit = stub_fit(lr_effect)
    run_until(study, objective(space, fit), 1)
    t = study.get_trials()[0]
    single = fit(space.config(t.params))
    assert t.value == single.best_map
    assert t.user_attrs["fold_values"] == [round(single.best_map, 6)]
    assert sorted(t.intermediate_values) == [1, 2, 3]


def test_repeats_train_on_consecutive_seeds_of_one_split():
    base = {**SPACE, "base": {**SPACE["base"], "val_folds": 1, "val_repeats": 2, "seed": 4}}
    study, space = make_study(base)
    calls = []
    run_until(study, objective(space, stub_fit(lr_effect, calls=calls)), 1)
    assert [(fold, seed) for _, fold, seed in calls] == [(0, 4), (0, 5)]
    assert study.get_trials()[0].user_attrs["n_repeats"] == 2


def test_a_trial_clearly_worse_on_the_first_folds_is_pruned_between_folds():
    study, space = make_study()
    for _ in range(2):  # the noise estimate needs two complete trials besides the baseline's
        study.enqueue_trial({"lr_modules": 1e-3})
    effect = lambda cfg: 0.8 if cfg.lr_modules == 1e-3 else 0.5  # noqa: E731
    calls = []
    run_until(study, objective(space, stub_fit(effect, calls=calls)), 4)
    *good, worse = study.get_trials()[:4]
    assert all(t.state == TrialState.COMPLETE for t in good)
    assert worse.state == TrialState.PRUNED
    assert worse.user_attrs["pruned_at"] == "after fold 1/3"
    assert "corrected for that selection" in worse.user_attrs["prune_reason"]
    assert worse.user_attrs["fold_values"] == pytest.approx([0.5], abs=0.05)
    assert len(calls) == 3 * 3 + 1, "the pruned trial never trained its second fold"


def test_a_trial_as_good_as_the_best_is_not_pruned_between_folds():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lambda cfg: 0.8, noise=0.03)), 4)
    assert all(t.state == TrialState.COMPLETE for t in study.get_trials())


class PruneAtStep(optuna.pruners.BasePruner):
    def __init__(self, step):
        self.step = step

    def prune(self, study, trial):
        return trial.number > 0 and trial.last_step == self.step


def test_epoch_pruning_inside_a_later_fold_says_where():
    study, space = make_study(pruner=PruneAtStep(3 + 2))
    run_until(study, objective(space, stub_fit(lambda cfg: 0.8)), 2)
    t = study.get_trials()[1]
    assert t.state == TrialState.PRUNED
    assert t.user_attrs["pruned_at"] == "fold 2/3, epoch 2"
    assert t.user_attrs["epochs_run"] == 3 + 2


def test_no_pruning_during_a_later_folds_warmup():
    study, space = make_study(pruner=PruneAtStep(3 + 1))  # fold 2, epoch 1 is its warm-up
    run_until(study, objective(space, stub_fit(lambda cfg: 0.8)), 2)
    assert study.get_trials()[1].state == TrialState.COMPLETE


def confirmed(study, space, fit, top=2, seeds=2):
    p = cf.plan(study, top, seeds)
    companion = cf.open_companion(study, study._storage)
    cf.queue(study, companion, p)
    cf.work(companion, objective(space, fit, prune_between_runs=False, keep_identity_ap=True))
    summary = cf.summarize(study, companion, p)
    study.set_user_attr("confirm", summary)
    return p, companion, summary


def test_confirm_races_the_top_trials_and_the_baseline_on_fresh_paired_seeds():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 5)
    calls = []
    p, companion, summary = confirmed(study, space, stub_fit(lr_effect, calls=calls))
    assert p.baselines == [0] and len(p.candidates) == 2
    assert {seed for *_, seed in calls} == {1000, 2000}  # never a study trial's seed (0)
    assert len(calls) == len(p.trials) * 2 * 3
    rows = {r["trial"]: r for r in summary["rows"]}
    assert set(rows) == set(p.trials) and summary["complete"]
    for r in rows.values():
        assert r["n"] == 6 and r["ci"][0] < r["mean"] < r["ci"][1]
    # the baseline (lr 1e-3) is the true optimum of lr_effect: nothing beats it
    assert summary["reference_baseline"] == 0
    assert rows[0]["mean"] == max(r["mean"] for r in rows.values())
    assert summary["winner"] == 0
    assert "the baseline (trial 0) has the best confirmed mean" in cf.verdict(summary)
    assert "worse than the baseline" in cf.verdict(summary)
    # nothing is repeated when confirm runs again
    assert cf.queue(study, companion, p) == []


def test_a_real_improvement_is_distinguishable_and_noise_is_not():
    def effect(better):
        return lambda cfg: 0.7 + (better if cfg.lr_modules != 1e-3 else 0.0)

    for better, expected in [(0.05, "better than the baseline"), (0.0, "not distinguishable")]:
        study, space = make_study(seed=1)
        run_until(
            study,
            objective(space, stub_fit(effect(better), noise=0.005), prune_between_runs=False),
            3,
        )
        _, _, summary = confirmed(study, space, stub_fit(effect(better), noise=0.005), seeds=3)
        rows = {r["trial"]: r for r in summary["rows"]}
        if better:
            assert summary["winner"] != 0
            d = rows[summary["winner"]]["vs_baseline"]
            assert d["diff"] == pytest.approx(0.05, abs=0.01) and d["ci"][0] > 0 and d["p"] < 0.01
        assert expected in cf.verdict(summary), cf.verdict(summary)


def test_an_interrupted_confirm_resumes_without_repeating_finished_runs():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 3)
    p = cf.plan(study, 2, 2)
    companion = cf.open_companion(study, study._storage)
    cf.queue(study, companion, p)
    calls = []
    fit = stub_fit(lr_effect, calls=calls, interrupt_on=5)  # in the second run's second fold
    with pytest.raises(KeyboardInterrupt):
        cf.work(companion, objective(space, fit, prune_between_runs=False))
    states = [t.state for t in companion.get_trials()]
    assert states.count(TrialState.COMPLETE) == 1 and states.count(TrialState.FAIL) == 1
    requeued = cf.queue(study, companion, p)
    assert len(requeued) == 1
    calls.clear()
    cf.work(companion, objective(space, stub_fit(lr_effect, calls=calls), prune_between_runs=False))
    done = [t for t in companion.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == len(p.pairs()) and len(calls) == 3 * (len(p.pairs()) - 1)


def test_export_takes_the_confirmed_winner_and_says_what_it_is_worth(tmp_path):
    study, space = make_study(seed=1)
    effect = lambda cfg: 0.7 + (0.05 if cfg.lr_modules != 1e-3 else 0.0)  # noqa: E731
    run_until(study, objective(space, stub_fit(effect, noise=0.005), prune_between_runs=False), 3)
    _, _, summary = confirmed(study, space, stub_fit(effect, noise=0.005), seeds=3)
    assert pick_trial(study).number == summary["winner"]
    path, trial = export_trial(study, tmp_path / "best.yaml")
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert f"# trial {trial.number}: objective" in text and "± " in header[1]
    assert any("confirmed on fresh training seeds [1, 2, 3]" in h and "95% CI" in h for h in header)
    assert any("better than the baseline" in h for h in header)
    assert any("--refit --set epochs=3" in h for h in header)
    assert yaml.safe_load(text)["lr_modules"] == trial.params["lr_modules"]
