"""A study's floors: computed once per split, reused by workers and reruns, and shown (with
the warning when the winner does not clear them) by show, show --json, the note, the report's
value figures, the export header and confirm."""

from __future__ import annotations

import json

import optuna
import pytest

import handreid.floors
from hpo.decide import floors as hf

PIXEL_FLOOR = {
    "key": "abc123def456",
    "pixels": [0.827, 0.82],
    "backbone": [0.7301, 0.7222],
    "backbone_label": "untrained tiny-vit",
    "seconds": 1.5,
}


def study_with(
    values: list[tuple[float, float | None]], floors: dict | None = PIXEL_FLOOR
) -> optuna.Study:
    """An in-memory study with complete trials of (value, value_se) and the floors record."""
    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i, (value, se) in enumerate(values):
        attrs = {"value_se": se, "n_folds": 1, "fold_values": [value]} if se is not None else {}
        if i == 0:
            attrs["baseline"] = "default"
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 1e-3 * (i + 1)},
                distributions=dist,
                value=value,
                user_attrs=attrs,
                intermediate_values={1: value},
            )
        )
    if floors is not None:
        study.set_user_attr(hf.ATTR, floors)
    return study


def confirm_summary(winner: int, ci: list[float], mean: float) -> dict:
    row = {
        "trial": winner,
        "role": "candidate",
        "baseline": "",
        "objective": mean,
        "objective_se": 0.02,
        "mean": mean,
        "se": 0.01,
        "ci": ci,
        "n": 3,
        "vs_baseline": None,
        "vs_incumbent": None,
        "best_epochs": [2, 2, 2],
    }
    return {
        "seeds": [1, 2, 3],
        "candidates": [winner],
        "baselines": [],
        "incumbent": winner,
        "reference_baseline": None,
        "winner": winner,
        "rows": [row],
        "complete": True,
        "folds": 1,
        "level": 0.95,
        "updated": "2026-12-03 06:00:00",
    }


# ---- computed once per split ----------------------------------------------------------------
@pytest.fixture
def calls(monkeypatch) -> list:
    """One entry per evaluation the floors run (``handreid.floors.evaluate_features``)."""
    seen: list = []
    real = handreid.floors.evaluate_features

    def counting(*args, **kwargs):
        seen.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(handreid.floors, "evaluate_features", counting)
    return seen


def test_floors_are_computed_once_and_reused_by_a_worker_or_rerun(tiny_cfg, tmp_path, calls):
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    record, computed = hf.ensure_floors(study, tiny_cfg, handreid.floors.prepare_data, "cpu")
    assert computed and len(calls) == 4, "val and test, pixels and backbone"
    assert study.user_attrs[hf.ATTR] == record
    assert len(json.dumps(record)) < 200

    worker = optuna.load_study(study_name="s", storage=storage)  # another process, a rerun
    again, computed = hf.ensure_floors(worker, tiny_cfg, handreid.floors.prepare_data, "cpu")
    assert not computed and again == record and len(calls) == 4, "nothing evaluated again"

    # another split is another key: computed anew and stored in place of the old record
    other, computed = hf.ensure_floors(
        worker, tiny_cfg.replace(split_seed=7), handreid.floors.prepare_data, "cpu"
    )
    assert computed and other["key"] != record["key"] and len(calls) == 8
    assert optuna.load_study(study_name="s", storage=storage).user_attrs[hf.ATTR] == other


# ---- the check ------------------------------------------------------------------------------
def test_best_value_plus_two_se_below_the_pixel_floor_is_named():
    study = study_with([(0.70, 0.02), (0.79, 0.015)])
    win = hf.winner_interval(study)
    assert win["source"] == "best trial" and win["trial"] == 1
    assert (win["lo"], win["hi"]) == pytest.approx((0.76, 0.82))
    text = hf.check(study)
    assert "below the pixel floor (0.827)" in text and "trial 1" in text
    assert "(val mAP 0.790, ± 2 SE [0.760, 0.820])" in text  # ± before an SE, [lo, hi]
    # what being below a floor means, in words
    assert text.endswith(
        "it ranks these hands no better than raw pixels do, with no training at all"
    )


def test_an_interval_that_reaches_the_floor_does_not_clear_it():
    study = study_with([(0.80, 0.02)])  # 0.76 to 0.84 spans 0.827
    text = hf.check(study)
    assert "does not clear the pixel floor (0.827)" in text and "is below" not in text
    assert "so it may rank these hands no better than raw pixels do" in text


def test_a_winner_clear_of_the_floor_gets_no_warning():
    study = study_with([(0.90, 0.02)])
    assert hf.check(study) is None
    assert hf.floor_lines(study) == [
        "floors (no training; val / test mAP): pixel floor 0.827 / 0.820, "
        "backbone floor (untrained tiny-vit) 0.730 / 0.722"
    ]


def test_the_higher_floor_is_the_one_checked():
    backbone_high = {**PIXEL_FLOOR, "pixels": [0.5, 0.5], "backbone": [0.86, 0.8]}
    study = study_with([(0.84, 0.005)], floors=backbone_high)
    text = hf.check(study)  # one name per floor, its label and value in one pair of ()
    assert "below the backbone floor (untrained tiny-vit, 0.860)" in text
    assert text.endswith("no better than the backbone does before any fine-tuning")


def test_the_confirmed_ci_replaces_the_best_value_when_a_confirm_exists():
    study = study_with([(0.95, 0.01), (0.70, 0.01)])
    assert hf.check(study) is None  # 0.93 .. 0.97 clears 0.827
    study.set_user_attr("confirm", confirm_summary(0, [0.78, 0.81], 0.795))
    text = hf.check(study)
    assert text.startswith("the confirmed winner, trial 0 (val mAP [0.780, 0.810])")
    assert "below the pixel floor (0.827)" in text


def test_a_confirm_on_confirm_identities_is_checked_against_their_floors():
    """The confirm mAP is measured on other people than the validation folds: its floors are
    the ones measured there, named so, and the metric is called confirm mAP."""
    from hpo.records.optuna_internals import set_study_record

    study = study_with([(0.95, 0.01)])
    confirm = {"key": PIXEL_FLOOR["key"], "values": [0.70, 0.74]}  # lower than the val floors
    set_study_record(study, hf.CONFIRM_RECORD, confirm)
    summary = confirm_summary(0, [0.72, 0.80], 0.76)
    study.set_user_attr("confirm", {**summary, "measured_on": "confirm identities"})
    text = hf.check(study)
    assert text.startswith("the confirmed winner, trial 0 (confirm mAP [0.720, 0.800]),")
    assert "does not clear the backbone floor (untrained tiny-vit, 0.740) on the confirm " in text
    lines = hf.floor_lines(study)
    assert lines[1] == (
        "floors on the confirm identities (no training; confirm mAP): pixel floor 0.700, "
        "backbone floor (untrained tiny-vit) 0.740"
    )
    summary_json = hf.floors_summary(study)
    assert summary_json["higher"] == {"kind": "backbone", "val": 0.74, "on_confirm_ids": True}
    assert summary_json["pixels"]["confirm"] == 0.70
    # the same interval against the validation floors (0.827) would have been "below"
    study.set_user_attr("confirm", {**summary, "measured_on": "study identities"})
    assert "(val mAP [0.720, 0.800]), is below the pixel floor (0.827)" in hf.check(study)


def test_confirm_floors_are_added_once_and_only_with_confirm_identities(tiny_cfg, calls):
    study = optuna.create_study(direction="maximize")
    assert hf.ensure_confirm_floors(study, tiny_cfg, handreid.floors.prepare_data) is None
    study.set_user_attr(hf.ATTR, PIXEL_FLOOR)
    none = tiny_cfg.replace(confirm_fraction=0.0)
    assert hf.ensure_confirm_floors(study, none, handreid.floors.prepare_data) == PIXEL_FLOOR
    assert calls == []
    cfg = tiny_cfg.replace(confirm_fraction=0.3)
    record = hf.ensure_confirm_floors(study, cfg, handreid.floors.prepare_data, "cpu")
    pixels, backbone = record["confirm"]
    assert 0 < pixels <= 1 and 0 < backbone <= 1 and len(calls) == 4
    assert study.user_attrs[hf.ATTR] == PIXEL_FLOOR  # the user attribute stays as it was
    assert hf.stored(study) == record
    # the pixel floor there is what the pixels reach on the confirm identities, as a run sees them
    data = handreid.floors.prepare_data(cfg.replace(confirm_run=True, val_folds=1))
    feats = handreid.floors.pixel_features(data.val.images)
    assert pixels == pytest.approx(handreid.floors._map(feats, data.val, cfg), abs=1e-4)
    hf.ensure_confirm_floors(study, cfg, handreid.floors.prepare_data, "cpu")
    assert len(calls) == 4 + 1, "computed once (the check above evaluated one more)"
    # floors of another split are another key: the confirm floors of the old one do not apply
    study.set_user_attr(hf.ATTR, {**PIXEL_FLOOR, "key": "another"})
    assert "confirm" not in hf.stored(study)


def test_no_floors_no_lines():
    study = study_with([(0.5, 0.1)], floors=None)
    assert hf.floor_lines(study) == [] and hf.floors_summary(study) is None


# ---- where it shows -------------------------------------------------------------------------
def test_show_text_and_json_carry_the_floors_and_the_warning():
    from hpo.views.listing import show_text, study_summary

    study = study_with([(0.70, 0.02), (0.79, 0.015)])
    text = " ".join(show_text(study).split())  # show wraps its lines to the terminal
    assert "floors (no training; val / test mAP): pixel floor 0.827 / 0.820" in text
    assert "warning: the best trial 1" in text and "below the pixel floor (0.827)" in text
    data = json.loads(json.dumps(study_summary(study)))
    floors = data["floors"]
    assert floors["pixels"] == {"val": 0.827, "test": 0.82}
    assert floors["backbone"] == {"val": 0.7301, "test": 0.7222}
    assert floors["higher"] == {"kind": "pixels", "val": 0.827}
    assert floors["clears"] is False and "below the pixel floor (0.827)" in floors["warning"]
    clear = study_summary(study_with([(0.9, 0.01)]))["floors"]
    assert clear["clears"] is True and clear["warning"] is None


def test_export_header_says_the_winner_is_below_the_floor(tmp_path):
    from hpo.views.export import export_header

    study = study_with([(0.70, 0.02), (0.79, 0.015)])
    header = export_header(study, study.best_trial, "")
    assert any(line.startswith("floors (no training") for line in header)
    assert any("below the pixel floor (0.827)" in line for line in header)
    clear = study_with([(0.9, 0.01)])
    assert not any(
        "below" in line or "clear" in line for line in export_header(clear, clear.best_trial, "")
    )


def test_the_note_has_a_floors_section_with_the_warning():
    from hpo.views.report import study_note

    note = study_note(study_with([(0.70, 0.02), (0.79, 0.015)]))
    section = note.split("### Floors", 1)[1]
    assert "pixel floor 0.827 / 0.820" in section
    assert "below the pixel floor (0.827)" in section.split("###")[0]


def test_value_figures_draw_a_line_at_each_val_floor():
    from hpo.views.figures import study_figures

    study = study_with([(0.70, 0.02), (0.79, 0.015)])
    figs = study_figures(study, ("value_se", "intermediate", "curves", "parallel"))
    for name in ("value_se", "intermediate", "curves"):
        lines = sorted(s.y0 for s in figs.figures[name].layout.shapes)
        assert lines == pytest.approx([0.7301, 0.827]), name
        labels = [a.text for a in figs.figures[name].layout.annotations]
        assert "pixel floor 0.827" in labels, name
    assert not figs.figures["parallel"].layout.shapes
    without = study_figures(study_with([(0.70, 0.02)], floors=None), ("value_se",))
    assert not without.figures["value_se"].layout.shapes
