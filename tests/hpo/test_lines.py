"""Trial and epoch lines: short numbers, durations, why a trial ended, at most ~160 columns."""

from __future__ import annotations

import datetime

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.common.lines import (
    confirm_label,
    duration,
    epoch_text,
    number,
    prune_text,
    runs_text,
    trial_line,
)

PARAMS = {
    "lr_clip_visual": 0.0003123456789012345,
    "lr_modules": 0.0031234567890123,
    "max_norm": 0.5166666666666666,
    "classifier": "arcface",
    "prompt_template": "A detailed photo of {}'s {aspect} hand for identification.",
}


def frozen(state=TrialState.COMPLETE, value=0.61234, params=None, number=12, **attrs):
    params = PARAMS if params is None else params
    start = datetime.datetime(2025, 1, 1, 12, 0, 0)
    dists = {
        k: CategoricalDistribution([v]) if isinstance(v, str) else FloatDistribution(0, 10)
        for k, v in params.items()
    }
    return FrozenTrial(
        number=number,
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=185) if state.is_finished() else None,
        params=params,
        distributions=dists,
        user_attrs=attrs.pop("user_attrs", {}) | attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_numbers_have_three_significant_figures_and_durations_read_as_time():
    assert number(0.0003123456789) == "3.12e-4"
    assert number(0.5166666666666666) == "0.517"
    assert number(16.0) == "16"
    assert number(64) == "64"
    assert number(123456.0) == "1.23e5"
    assert [duration(s) for s in (4.21, 45.4, 185, 7620)] == ["4.2s", "45s", "3m05s", "2h07m"]
    assert duration(None) == "?"


def test_a_complete_trial_is_one_line_with_value_se_folds_epochs_and_time():
    t = frozen(value_se=0.0312, n_folds=3, fold_values=[0.6, 0.62, 0.61], epochs_run=24)
    text = trial_line(t, params=False)
    assert text == "trial 12 COMPLETE val mAP 0.612 ± 0.031 (3 folds) · 24 epochs · 3m05s"


def test_parameters_move_to_indented_lines_and_no_line_is_wider_than_the_terminal():
    t = frozen(value_se=0.0312, epochs_run=8, seconds=63.2, baseline="seed-v3")
    for columns in (80, 160):
        lines = trial_line(t, columns=columns).splitlines()
        assert lines[0].startswith("trial 12 (baseline seed-v3) COMPLETE val mAP 0.612 ± 0.031")
        assert all(len(line) <= columns for line in lines), [len(line) for line in lines]
        text = "\n".join(lines)
        assert "1m03s" in text and "8 epochs" in text
        params = [line for line in lines[1:] if "=" in line]
        assert all(line.startswith("    ") for line in params)
        rest = " ".join(params)
        assert "lr_clip_visual=3.12e-4 lr_modules=3.12e-3 max_norm=0.517" in rest
        # the template whole, never cut: two templates that differ at their end read apart
        assert (
            'prompt_template="A detailed photo of {}\'s {aspect} hand for identification."' in rest
        )
        assert "…" not in text
        assert "0.0003123" not in rest and "0.516666" not in rest  # no 16-digit floats


def test_short_parameters_stay_on_the_trial_line():
    t = frozen(params={"max_norm": 0.52}, epochs_run=1, seconds=4.0)
    assert (
        trial_line(t, columns=80)
        == "trial 12 COMPLETE val mAP 0.612 (1 split) · 1 epoch · 4.0s · max_norm=0.52"
    )


def test_a_pruned_trial_says_where_at_what_value_and_why():
    t = frozen(
        TrialState.PRUNED,
        pruned_at="fold 2/3, epoch 4",
        prune_reason="pruned at fold 2/3, epoch 4 (mAP 0.4100)",
        epochs_run=12,
        seconds=70,
    )
    t.intermediate_values = {11: 0.45, 12: 0.41}
    assert trial_line(t, params=False) == (
        "trial 12 PRUNED at fold 2/3, epoch 4 (val mAP 0.410) · 12 epochs · 1m10s"
    )
    between = {
        "pruned_at": "after fold 2/3",
        "fold_values": [0.4, 0.404],
        "prune_reason": "pruned after run 2: mean val mAP 0.4020 vs 0.6000 for best trial 3 on "
        "the same runs (paired t test, one-sided p=0.012)",
    }
    assert prune_text(between, {16: 0.41}) == (
        "after fold 2/3 (mean val mAP 0.402): below trial 3 on the same runs (p=0.012)"
    )
    diverged = {"pruned_at": "epoch 2", "prune_reason": "loss diverged (not finite) in epoch 2"}
    assert prune_text(diverged, {}) == "at epoch 2: loss diverged"


def test_a_failed_trial_shows_its_error_in_one_shortened_line():
    error = "RuntimeError: shapes do not match\n" + "x" * 500
    t = frozen(TrialState.FAIL, error=error, epochs_run=0, seconds=12.5)
    line = trial_line(t, params=False, columns=160)
    assert line.startswith("trial 12 FAIL · 0 epochs · 12s · error: RuntimeError: shapes do not")
    assert "\n" not in line and len(line) <= 160 and line.endswith("…")
    lines = trial_line(t, params=False, columns=80).splitlines()  # the error on its own line
    assert lines[0] == "trial 12 FAIL · 0 epochs · 12s"
    assert lines[1].startswith("    error: RuntimeError: shapes do not") and len(lines[1]) <= 80


def test_epoch_text_names_fold_epoch_value_and_speed():
    progress = {"where": "fold 2/3", "epoch": 4, "epochs": 8, "mAP": 0.41234, "seconds": 3.14}
    assert epoch_text("trial 7", progress) == (
        "trial 7 · fold 2/3 · epoch 4/8 · val mAP 0.412 · 3.1 s/epoch"
    )
    assert epoch_text("trial 7", {"where": "", "epoch": 1, "epochs": 2, "loss": 2.3456}) == (
        "trial 7 · epoch 1/2 · loss 2.35"
    )


def test_a_run_on_the_confirm_identities_says_confirm_map():
    t = frozen(value_se=0.0312, fold_values=[0.61234], epochs_run=3, on_confirm_ids=True)
    assert trial_line(t, params=False).startswith(
        "trial 12 COMPLETE confirm mAP 0.612 ± 0.031 (1 run)"
    )
    progress = {"where": "", "epoch": 3, "epochs": 3, "mAP": 0.5, "metric": "confirm mAP"}
    assert epoch_text("confirm trial 0 seed 1", progress) == (
        "confirm trial 0 seed 1 · epoch 3/3 · confirm mAP 0.500"
    )


def test_runs_and_confirm_labels():
    assert runs_text({"n_folds": 3, "n_repeats": 2}) == "3 folds x 2 seeds"
    assert runs_text({"n_folds": 1, "fold_values": [0.5, 0.6]}) == "2 seeds"
    assert runs_text({}) == "1 split"
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("candidate", 5)
    trial.set_user_attr("confirm_seed", 2)
    assert confirm_label(trial) == "confirm trial 5 seed 2"


@pytest.mark.parametrize("encoding, sign", [("utf-8", "±"), ("ascii", "+-")])
def test_one_uncertainty_sign_in_hpo_and_handreid_lines(monkeypatch, encoding, sign):
    """``±`` where standard output can encode it, ``+-`` otherwise, in both tools' lines."""
    import io
    import sys

    from handreid.cli import _format_test
    from hpo.common.lines import pm

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding=encoding))
    assert pm() == sign
    keys = ("rank1", "rank5", "rank10", "mAP")
    line = _format_test(
        {"num_splits": 2, **{k: 0.5 for k in keys}, **{f"{k}_std": 0.01 for k in keys}}
    )
    assert line.count(f"50.00 {sign} 1.00") == 4
    assert ("±" in line) == (sign == "±")


def test_a_trials_duration_never_stands_on_a_line_of_its_own():
    t = frozen(TrialState.FAIL, error="", epochs_run=3, seconds=185.0)
    head = len("trial 12 FAIL · 3 epochs")
    lines = trial_line(t, params=False, columns=head + 3).splitlines()  # "3m05s" would not fit
    assert lines == ["trial 12 FAIL", "    3 epochs · 3m05s"]
