from __future__ import annotations

import optuna
import pytest
import yaml

from handreid.config import TrainConfig
from hpo.records.space import SPACES_DIR, SpaceError, builtin_spaces, load_space, parse_space

BASE = {"model": "tiny-vit", "pretrained": "none", "image_size": [64, 64], "batch_size": 16}


def space(**entries):
    return {"base": dict(BASE), "space": entries}


@pytest.mark.parametrize("backbone", ["rn50", "vitb16", "tiny-vit", "tiny-rn"])
def test_shipped_spaces_validate_and_cover_the_tuned_keys(backbone):
    s = load_space(backbone)
    required = {
        "lr_clip_visual",
        "lr_modules",
        "max_norm",
        "bnneck_dim",
        "classifier",
        "arcface_scale",
        "arcface_margin",
        "supcon_temperature",
        "prompt_template",
    }
    assert required <= set(s.names)
    assert s.baselines, "every shipped space starts from the hand-tuned settings"
    for b in s.baselines:
        cfg = s.config({k: v for k, v in b.items() if k != "name"})
        assert isinstance(cfg, TrainConfig)
    lr = {p.name: p for p in s.params}["lr_modules"]
    assert lr.log


def test_backbones_get_different_learning_rate_ranges():
    rn, vit = load_space("rn50"), load_space("vitb16")
    rn_lr = {p.name: p for p in rn.params}["lr_clip_visual"]
    vit_lr = {p.name: p for p in vit.params}["lr_clip_visual"]
    assert rn_lr.high > vit_lr.high and rn_lr.low > vit_lr.low
    assert rn.baselines[0]["lr_clip_visual"] == 1e-4 and vit.baselines[0]["lr_clip_visual"] == 1e-6


def test_templates_come_from_the_manual_sweep():
    templates = {p.name: p for p in load_space("vitb16").params}["prompt_template"].choices
    assert "A photo of a {} {aspect} hand." in templates
    assert "A detailed photo of {}'s {aspect} hand for identification." in templates
    assert any("surveillance" in t for t in templates)


def test_all_errors_are_reported_together():
    data = space(
        lr_modlues={"type": "float", "low": 1e-4, "high": 1e-2},
        max_norm={"type": "float", "low": 5.0, "high": 1.0},
        lr_clip_visual={"type": "float", "low": 0.0, "high": 1e-3, "log": True},
        bnneck_dim={"type": "categorical", "choices": [64, 0]},
        arcface_scale={"type": "float", "low": 10, "high": 64, "when": {"classifier": "arcface"}},
        label_smoothing={"type": "gaussian"},
    )
    with pytest.raises(SpaceError) as err:
        parse_space(data, source="bad.yaml")
    msg = str(err.value)
    assert msg.startswith("bad.yaml: ")
    assert "\n" not in msg
    for part in [
        "space.lr_modlues: not a trainer key; did you mean 'lr_modules'?",
        "space.max_norm: low=5.0 must be below high=1.0",
        "space.lr_clip_visual: a log scale needs low > 0",
        "space.bnneck_dim: choice 0 is invalid",
        "space.arcface_scale: when refers to 'classifier', which must be a categorical defined earlier",
        "space.label_smoothing: type 'gaussian' is not one of",
    ]:
        assert part in msg


def test_range_bounds_are_checked_by_the_trainer_rules():
    with pytest.raises(
        SpaceError,
        match=r"space.arcface_margin: bound 2.0 is invalid \(arcface_margin=2.0 is out of range",
    ):
        parse_space(space(arcface_margin={"type": "float", "low": 0.1, "high": 2.0}))
    with pytest.raises(SpaceError, match="step and log cannot be combined"):
        parse_space(
            space(max_norm={"type": "float", "low": 0.1, "high": 2.0, "log": True, "step": 0.1})
        )
    with pytest.raises(SpaceError, match="int needs numeric low and high"):
        parse_space(space(bnneck_dim={"type": "int", "low": 1.5, "high": 8}))


def test_when_value_must_be_possible_and_baselines_inside():
    data = space(
        classifier={"type": "categorical", "choices": ["linear", "arcface"]},
        arcface_scale={"type": "float", "low": 10, "high": 64, "when": {"classifier": "cosface"}},
    )
    with pytest.raises(SpaceError, match="when classifier='cosface' can never hold"):
        parse_space(data)
    data = space(
        classifier={"type": "categorical", "choices": ["linear", "arcface"]},
        arcface_scale={"type": "float", "low": 10, "high": 64, "when": {"classifier": "arcface"}},
    )
    data["baselines"] = [
        {"classifier": "arcface", "arcface_scale": 100.0},
        {"classifier": "linear", "arcface_scale": 30.0},
        {"epochs": 3},
    ]
    with pytest.raises(SpaceError) as err:
        parse_space(data)
    assert "baselines[0]: arcface_scale=100.0 lies outside the space" in str(err.value)
    assert "baselines[1]: 'arcface_scale' is set but its condition" in str(err.value)
    assert "baselines[2]: 'epochs' is not a searched key" in str(err.value)


def test_base_errors_and_unknown_sections():
    with pytest.raises(SpaceError, match="unknown key 'epoch'; did you mean 'epochs'"):
        parse_space(
            {"base": {"epoch": 3}, "space": {"max_norm": {"type": "float", "low": 0.1, "high": 1}}}
        )
    with pytest.raises(SpaceError, match="unknown section 'spaces'"):
        parse_space({"base": {}, "spaces": {}})


def test_conditional_suggestions_and_base_values():
    data = space(
        classifier={"type": "categorical", "choices": ["linear", "arcface"]},
        arcface_scale={"type": "float", "low": 10, "high": 64, "when": {"classifier": "arcface"}},
    )
    s = parse_space(data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = s.suggest(trial)
        seen.add(params["classifier"])
        assert ("arcface_scale" in params) == (params["classifier"] == "arcface")
        cfg = s.config(params)
        if params["classifier"] == "linear":
            assert cfg.arcface_scale == TrainConfig().arcface_scale
        study.tell(trial, 0.0)
    assert seen == {"linear", "arcface"}


def test_unknown_backbone_lists_spaces(tmp_path):
    with pytest.raises(
        SpaceError,
        match=r"unknown backbone 'rn5'; choose one of \['rn50', 'tiny-rn', 'tiny-vit', 'vitb16'\]",
    ):
        load_space("rn5")
    with pytest.raises(SpaceError, match="search space file not found"):
        load_space(tmp_path / "none.yaml")
    assert (SPACES_DIR / "rn50.yaml").is_file()


def test_shipped_spaces_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing next to the working directory helps
    assert builtin_spaces() == ["rn50", "tiny-rn", "tiny-vit", "vitb16"]
    s = load_space("tiny-vit")
    assert s.source.endswith("hpo/search_spaces/tiny-vit.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump(space(max_norm={"type": "float", "low": 0.1, "high": 1.0})))
    assert load_space(own).names == ("max_norm",)  # --space FILE still takes any path


def test_with_base_refuses_fixing_a_searched_key():
    s = load_space("tiny-vit")
    assert s.with_base(epochs=2).config({}).epochs == 2
    with pytest.raises(SpaceError, match="'max_norm' is searched"):
        s.with_base(max_norm=1.0)
