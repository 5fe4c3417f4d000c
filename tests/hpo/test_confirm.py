"""Folds and repeats in the objective, pruning between runs, and `hpo confirm` statistics,
with a stand-in trainer whose values are known."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from handreid.engine import FitResult
from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.decide import confirm as cf
from hpo.records.space import parse_space
from hpo.search.objective import Objective
from hpo.search.study import create_or_resume, run_until
from hpo.views.export import export_trial, pick_trial

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


def config_key(cfg) -> int:
    return int(round(cfg.lr_modules * 1e9)) % 2**31


def stub_fit(
    effect, noise=0.01, calls=None, interrupt_on=None, peak=None, configs=None, on_confirm=None
):
    """Val mAP at the peak epoch (the last one unless ``peak``, 0-based, is given) =
    effect(cfg) + 0.02 * fold + how this config fares on the fold's identities (shared by its
    seeds) + seed noise, each noise term with SD ``noise`` and depending on the config, so
    paired differences vary; 0.01 less per epoch away from the peak. Identity AP sums for 6
    identities per fold pool to the value; ``configs`` collects every config trained."""

    def fit(cfg, *, callbacks=(), device=None, data=None):
        if configs is not None:
            configs.append(cfg)
        if calls is not None:
            calls.append((cfg.lr_modules, cfg.val_fold, cfg.seed))
            if interrupt_on is not None and len(calls) == interrupt_on:
                raise KeyboardInterrupt
        key = config_key(cfg)
        fold = 99 if cfg.confirm_run else cfg.val_fold  # the confirm identities are their own
        identity = np.random.default_rng([fold, key, 11]).normal(0, noise)
        # on the confirm identities, ``on_confirm`` (what the config does on new hands)
        effect_here = on_confirm if cfg.confirm_run and on_confirm is not None else effect
        rng = np.random.default_rng([cfg.seed, cfg.val_fold, key, 7])
        value = effect_here(cfg) + 0.02 * cfg.val_fold + identity + rng.normal(0, noise)
        top = cfg.epochs - 1 if peak is None else peak
        history, best, best_epoch = [], {}, 0
        for epoch in range(cfg.epochs):
            m = value - 0.01 * abs(top - epoch)
            metrics = {"mAP": m, "rank1": m, "rank5": m, "rank10": m, "loss": 1.0}
            history.append(metrics)
            if not best or m > best["mAP"]:
                best = {k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP")}
                best_epoch = epoch
            for cb in callbacks:
                cb(epoch, metrics)
        spread = rng.normal(0, 0.05, size=6)
        spread -= spread.mean()
        last = history[-1]["mAP"]
        tag = "c" if cfg.confirm_run else f"f{cfg.val_fold}"
        aps = {f"{tag}-{i}": [4 * (best["mAP"] + s), 4] for i, s in enumerate(spread)}
        last_aps = {f"{tag}-{i}": [4 * (last + s), 4] for i, s in enumerate(spread)}
        return FitResult(
            history, best_epoch, best, "completed", 0.1, 0, object(), None, aps, last_aps
        )

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
    attrs = attrs_of(t)
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
    assert t.value == round(single.best_map, 6)  # stored to 6 decimals, as its runs are
    assert attrs_of(t)["fold_values"] == [round(single.best_map, 6)]
    assert sorted(t.intermediate_values) == [1, 2, 3]


def test_repeats_train_on_consecutive_seeds_of_one_split():
    base = {**SPACE, "base": {**SPACE["base"], "val_folds": 1, "val_repeats": 2, "seed": 4}}
    study, space = make_study(base)
    calls = []
    run_until(study, objective(space, stub_fit(lr_effect, calls=calls)), 1)
    assert [(fold, seed) for _, fold, seed in calls] == [(0, 4), (0, 5)]
    assert attrs_of(study.get_trials()[0])["n_repeats"] == 2


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
    assert attrs_of(worse)["pruned_at"] == "after fold 1/3"
    assert "corrected for that selection" in worse.user_attrs["prune_reason"]
    assert attrs_of(worse)["fold_values"] == pytest.approx([0.5], abs=0.05)
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
    assert attrs_of(t)["pruned_at"] == "fold 2/3, epoch 2"
    assert attrs_of(t)["epochs_run"] == 3 + 2


def test_no_pruning_during_a_later_folds_warmup():
    study, space = make_study(pruner=PruneAtStep(3 + 1))  # fold 2, epoch 1 is its warm-up
    run_until(study, objective(space, stub_fit(lambda cfg: 0.8)), 2)
    assert study.get_trials()[1].state == TrialState.COMPLETE


def confirmed(study, space, fit, top=3, seeds=2):
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
    assert p.baselines == [0] and len(p.candidates) == 3
    # a seed per (confirm seed, fold), never a study trial's (0, 1, 2)
    assert {seed for *_, seed in calls} == {1000, 1001, 1002, 2000, 2001, 2002}
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
    p = cf.plan(study, 3, 2)
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
    assert any(
        "confirmed on fresh training seeds [1, 2, 3]" in h and "(95 %, " in h for h in header
    )
    assert any("better than the baseline" in h for h in header)
    assert any("--refit --set epochs=3" in h for h in header)
    assert yaml.safe_load(text)["lr_modules"] == trial.params["lr_modules"]


def test_paired_differences_vary_with_the_config_and_the_verdict_reads_the_fold_as_unit():
    study, space = make_study(seed=1)
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 4)
    p, _, summary = confirmed(study, space, stub_fit(lr_effect), top=3, seeds=3)
    compared = [r["vs_baseline"] for r in summary["rows"] if r["vs_baseline"]]
    assert compared and all(d["se"] > 0 for d in compared)
    configs = len(summary["rows"])
    for d in compared:
        # configs x folds blocks: (configs - 1) * (folds - 1) df, not runs - 1
        assert d["df"] == (configs - 1) * 2 and d["n"] == 9
        assert d["comparisons"] == configs - 1
        assert d["ci"][0] < d["diff"] < d["ci"][1]


def test_confirm_trains_the_median_best_epoch_and_measures_that_epoch():
    study, space = make_study()
    # every run peaks at its second epoch (of 3): the trials' best epoch is 2
    run_until(study, objective(space, stub_fit(lr_effect, peak=1), prune_between_runs=False), 3)
    assert all(attrs_of(t)["best_epochs"] == [2, 2, 2] for t in study.get_trials())
    configs = []
    p, companion, summary = confirmed(study, space, stub_fit(lr_effect, peak=0, configs=configs))
    assert set(p.epochs.values()) == {2}
    assert {(c.epochs, c.early_stop_patience) for c in configs} == {(2, 0)}
    # the confirm stub peaks at epoch 1 and loses 0.01 by epoch 2: the value is epoch 2's
    for t in companion.get_trials():
        assert attrs_of(t)["train_epochs"] == 2 and attrs_of(t)["best_epochs"] == [2, 2, 2]
        iv = t.intermediate_values  # fold k reports epochs 1, 2 at steps 2k + 1, 2k + 2
        for k, value in enumerate(attrs_of(t)["fold_values"]):
            assert value == pytest.approx(iv[2 * k + 2], abs=1e-6)
            assert value == pytest.approx(iv[2 * k + 1] - 0.01, abs=1e-6)
        assert t.value == pytest.approx(np.mean(attrs_of(t)["fold_values"]), abs=1e-5)
    assert {r["epochs"] for r in summary["rows"]} == {2}
    header = export_header_lines(study)
    assert any("at epoch 2" in h for h in header)
    assert any("--refit --set epochs=2 (the epochs its confirm runs trained" in h for h in header)


def export_header_lines(study):
    from hpo.views.export import export_header

    return export_header(study, pick_trial(study), "")


def test_fixed_epochs_is_the_median_best_epoch_after_the_warmup():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect, peak=0), prune_between_runs=False), 1)
    t = study.get_trials()[0]
    assert attrs_of(t)["best_epochs"] == [1, 1, 1]
    assert cf.fixed_epochs(t, space) == 2  # warmup_epochs 1: the schedule must leave warm-up


def test_confirm_races_every_baseline_of_the_space_even_a_failed_one():
    two = {**SPACE, "baselines": [*SPACE["baselines"], {"name": "fast", "lr_modules": 1e-2}]}
    study, space = make_study(two)
    working = stub_fit(lr_effect)

    def broken_for_fast(cfg, **kw):  # the "fast" baseline fails in the study, every retry too
        if cfg.lr_modules == 1e-2:
            raise RuntimeError("out of luck")
        return working(cfg, **kw)

    with pytest.raises(UserError, match="3 trials failed in a row"):
        run_until(study, objective(space, broken_for_fast, prune_between_runs=False), 3)
    fast = [t for t in study.get_trials() if t.user_attrs.get("baseline") == "fast"]
    assert study.get_trials()[0].state == TrialState.COMPLETE
    assert not any(t.state == TrialState.COMPLETE for t in fast)
    # one more complete trial, so that the race has the 3 configs an interval needs
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr_modules": 3e-3}, distributions={"lr_modules": lr}, value=0.75
        )
    )
    calls = []
    p, _, summary = confirmed(study, space, stub_fit(lr_effect, calls=calls), top=2)
    assert p.baselines == [0, fast[-1].number]
    assert {lr for lr, *_ in calls} >= {1e-3, 1e-2}
    assert p.epochs[fast[-1].number] == 3  # no complete runs: the config's own epochs
    rows = {r["trial"]: r for r in summary["rows"]}
    row = rows[fast[-1].number]
    assert row["role"] == "baseline" and row["state"] in ("FAIL", "WAITING") and row["n"] == 6
    assert row["objective"] is None  # shown as "-" in the table
    # compared with the reference baseline, the better confirmed of the two
    assert summary["reference_baseline"] in p.baselines
    compared = [r for r in summary["rows"] if r["trial"] != summary["reference_baseline"]]
    assert all(r["vs_baseline"] is not None for r in compared)


def test_a_baseline_without_a_trial_is_named_with_the_reason():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 2)
    from hpo.records.optuna_internals import set_study_record, study_record

    stored = study_record(study, "space")  # the space is a study record
    ghost = {"name": "ghost", "lr_modules": 0.05}
    set_study_record(study, "space", {**stored, "baselines": [*stored["baselines"], ghost]})
    p = cf.plan(study, 1, 2)
    assert p.baselines == [0]
    assert p.notes == [
        "baseline 'ghost' of the search space has no trial in the study, so there is no trial "
        "to race it as; `hpo run` queues it"
    ]


def test_a_partial_confirm_decides_on_the_finished_seeds_and_says_how_to_finish(tmp_path):
    import dataclasses

    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 3)
    p = cf.plan(study, 3, 3)
    companion = cf.open_companion(study, study._storage)
    first = dataclasses.replace(p, seeds=[1])  # only seed 1 has run
    cf.queue(study, companion, first)
    cf.work(companion, objective(space, stub_fit(lr_effect), prune_between_runs=False))
    summary = cf.summarize(study, companion, p)
    study.set_user_attr("confirm", summary)
    assert not summary["complete"] and summary["complete_seeds"] == [1]
    assert len(summary["finished"]) == len(p.trials) * 3
    assert all(r["n"] == 3 for r in summary["rows"])  # 1 seed x 3 folds
    line = cf.verdict(summary)
    assert line.startswith("partial: 1 of 3 seeds finished for every config; decided on those")
    assert "`hpo confirm --study s --top 3 --seeds 3` finishes the rest" in line
    from hpo.views.listing import show_text

    assert "partial: 1 of 3 seeds" in show_text(study)
    path, _ = export_trial(study, tmp_path / "best.yaml")
    text = path.read_text()
    assert "# partial: 1 of 3 seeds" in text
    assert "confirmed on fresh training seeds [1] (partial: 1 of 3 seeds)" in text
    assert "confirmed on seeds [1] of [1, 2, 3] x 3 fold(s)" in cf.format_summary(summary)

    # one config finishes seed 2, then an interruption: still only seed 1 is decided on
    cf.queue(study, companion, dataclasses.replace(p, seeds=[2]))
    fit = stub_fit(lr_effect, calls=[], interrupt_on=4)
    with pytest.raises(KeyboardInterrupt):
        cf.work(companion, objective(space, fit, prune_between_runs=False))
    again = cf.summarize(study, companion, p)
    assert again["complete_seeds"] == [1] and len(again["finished"]) == len(p.trials) * 3 + 3
    assert [r["n"] for r in again["rows"]] == [3] * len(p.trials)


def test_no_verdict_before_every_config_finished_one_seed():
    study, space = make_study()
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 3)
    p = cf.plan(study, 3, 2)
    companion = cf.open_companion(study, study._storage)
    cf.queue(study, companion, p)
    fit = stub_fit(lr_effect, calls=[], interrupt_on=4)  # the second run's first fold
    with pytest.raises(KeyboardInterrupt):
        cf.work(companion, objective(space, fit, prune_between_runs=False))
    summary = cf.summarize(study, companion, p)
    assert summary["winner"] is None and summary["rows"] == []
    assert cf.verdict(summary) == (
        "partial: 0 of 2 seeds finished for every config; no verdict yet; "
        "`hpo confirm --study s --top 3 --seeds 2` finishes the rest: "
        "no seed has every config's runs yet, so no config is compared"
    )


def test_an_interval_for_a_value_near_one_stays_inside_zero_to_one():
    """Two seeds at 0.99 and 0.80: the t interval (df 1) would run to about 2.1 mAP."""
    est = cf.estimate(cf.Runs(values=[0.99, 0.80]), folds=3)
    assert est["ci"][1] == 1.0 and 0.0 <= est["ci"][0] < est["mean"]
    from hpo.decide.compare import BaselineComparison
    from hpo.decide.verdict import between

    frozen = optuna.trial.create_trial(value=0.9)
    wide = BaselineComparison(frozen, frozen, diff=0.6, diff_se=0.1, paired=True, units=2)
    assert wide.diff_ci()[1] == 1.0 and wide.diff_ci()[0] == pytest.approx(0.6 - 1.2706, abs=1e-3)
    d = between(np.array([[0.95, 0.1], [0.05, 0.9]]), 0, 1, runs=2)
    assert d.ci == (-1.0, 1.0)  # df 1: t 12.7 x SE far past the possible difference


def test_a_value_without_spread_has_no_standard_error_rather_than_nan():
    """One run on identities that all reach AP 1.0: no SE is stored and none is printed."""
    from handreid.config import TrainConfig
    from hpo.search.objective import RunResult, summarize
    from hpo.views.export import value_text

    cfg = TrainConfig(val_folds=1, val_repeats=1)
    run = RunResult(
        fold=0,
        seed=0,
        value=1.0,
        best_epoch=1,
        epochs_run=1,
        status="complete",
        metrics={"mAP": 1.0},
        identity_ap={"a": [2.0, 2], "b": [3.0, 3]},  # (AP sum, queries): every AP 1.0
    )
    attrs = summarize([run], cfg)
    assert "value_se" not in attrs
    frozen = optuna.trial.create_trial(value=1.0, user_attrs={"value_se": float("nan")})
    assert value_text(frozen) == "1.000"  # a study stored before: "nan" is not shown either


# ---- confirm identities -------------------------------------------------------------------

HELD = {**SPACE, "base": {**SPACE["base"], "confirm_fraction": 0.2}}


def test_confirm_measures_on_the_confirm_identities_one_run_per_seed():
    study, space = make_study(HELD)
    run_until(study, objective(space, stub_fit(lr_effect), prune_between_runs=False), 4)
    configs = []
    p, companion, summary = confirmed(study, space, stub_fit(lr_effect, configs=configs), seeds=3)
    assert p.new_ids and summary["measured_on"] == cf.CONFIRM_IDS
    # every confirm run trains on the study's identities and validates on the confirm ones
    assert configs and all(c.confirm_run and c.val_folds == 1 for c in configs)
    assert len(configs) == len(p.trials) * 3  # one run per seed, not one per fold
    assert summary["identities"] == 6 and all(r["n"] == 3 for r in summary["rows"])
    assert "on 6 confirm identities that no study trial trained or validated on" in (
        cf.format_summary(summary, columns=200)
    )
    line = cf.verdict(summary)
    assert "confirm mAP" in line and "own validation identities" not in line
    d = next(r["vs_baseline"] for r in summary["rows"] if r["vs_baseline"])
    assert d["df"] >= cf.MIN_DF and d["comparisons"] == len(p.trials) - 1


def test_a_config_better_only_on_the_study_identities_is_not_called_better():
    """On the identities the study selected on, the candidates are +0.05 better; on new
    hands they are not. Confirm on the study's own folds says "better"; on confirm
    identities it must not."""

    def study_effect(cfg):
        return 0.7 + (0.05 if cfg.lr_modules != 1e-3 else 0.0)

    verdicts = {}
    for name, space_dict in (("own", SPACE), ("new", HELD)):
        study, space = make_study(space_dict, seed=1)
        fit = stub_fit(study_effect, noise=0.005, on_confirm=lambda cfg: 0.7)
        run_until(study, objective(space, fit, prune_between_runs=False), 4)
        _, _, summary = confirmed(study, space, fit, seeds=3)
        verdicts[name] = cf.verdict(summary)
    assert "better than the baseline on the study's own validation identities" in verdicts["own"]
    assert "not distinguishable from the baseline" in verdicts["new"]
    assert "own validation identities" not in verdicts["new"]


def test_a_summary_from_before_confirm_identities_never_says_a_plain_better():
    from hpo.views.headline import headline, short

    study, space = make_study(seed=1)
    effect = lambda cfg: 0.7 + (0.05 if cfg.lr_modules != 1e-3 else 0.0)  # noqa: E731
    run_until(study, objective(space, stub_fit(effect, noise=0.005), prune_between_runs=False), 4)
    _, _, summary = confirmed(study, space, stub_fit(effect, noise=0.005), seeds=3)
    del summary["measured_on"]  # as stored before confirm identities existed
    study.set_user_attr("confirm", summary)
    from hpo.records.optuna_internals import set_study_record

    set_study_record(study, "confirm", summary)
    assert cf.verdict(summary).endswith(
        "better than the baseline on the study's own validation identities"
    )
    assert "the baseline (trial 0) on the study's own validation identities by +0.0" in headline(
        study
    )
    assert short(study).endswith("better than baseline on its own val ids")


@pytest.mark.parametrize(
    ("space_dict", "top", "seeds", "message"),
    [
        (SPACE, 1, 3, r"2 df, \(2 configs - 1\) x \(3 folds - 1\).*--top 2 \(more configs\)"),
        (HELD, 1, 3, r"2 df, \(2 configs - 1\) x \(3 runs each - 1\).*--seeds 5 gives enough"),
        (HELD, 3, 2, r"3 df, \(4 configs - 1\) x \(2 runs each - 1\).*--seeds 3 gives"),
    ],
)
def test_a_design_with_fewer_than_4_df_is_refused_naming_one_that_decides(
    space_dict, top, seeds, message
):
    study, space = make_study(space_dict)
    better = lambda cfg: 0.7 + (0.05 if cfg.lr_modules != 1e-3 else 0.0)  # noqa: E731
    run_until(study, objective(space, stub_fit(better), prune_between_runs=False), 4)
    with pytest.raises(UserError, match=message):
        cf.plan(study, top, seeds)
    assert not cf.open_companion(study, study._storage).trials  # nothing queued
