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
    template = {p.name: p for p in load_space("vitb16").params}["prompt_template"]
    templates = template.full_choices
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


# --- categorical choices given as {code: value} -------------------------------------------

PHOTO = "A photo of a {} {aspect} hand."
FRAME = "A captured frame showing a person's {aspect} hand during surveillance."
TEMPLATES = {"photo": PHOTO, "surveillance": FRAME}


def coded(**more):
    """A space whose prompt template is chosen by code, plus ``more`` tuned keys."""
    return space(
        prompt_template={"type": "categorical", "choices": dict(TEMPLATES)},
        max_norm={"type": "float", "low": 0.1, "high": 10.0, "log": True},
        **more,
    )


def test_a_trial_stores_the_code_and_config_gives_the_trainer_the_value():
    s = parse_space(coded())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        params = s.suggest(trial)
        study.tell(trial, 0.0)
        code = study.trials[-1].params["prompt_template"]
        assert params["prompt_template"] == code and code in TEMPLATES
        assert s.config(params).prompt_template == TEMPLATES[code]
        seen.add(code)
    assert seen == set(TEMPLATES)
    param = {p.name: p for p in s.params}["prompt_template"]
    assert param.choices == ("photo", "surveillance") and param.full_choices == (PHOTO, FRAME)
    assert param.contains("photo") and param.contains(FRAME)
    assert not param.contains("frame") and not param.contains("A photo of a {} hand.")


def test_an_exported_config_holds_the_whole_template_and_the_stored_float(tmp_path):
    from hpo.records.configs import trial_config
    from hpo.search.study import create_or_resume, make_sampler

    s = load_space("tiny-vit")
    study = create_or_resume(
        optuna.storages.InMemoryStorage(),
        "export",
        s,
        sampler=make_sampler("random", 5),
        pruner=optuna.pruners.NopPruner(),
        context={},
    )
    for _ in range(3):  # the baseline, then two drawn trials
        trial = study.ask()
        s.suggest(trial)
        study.tell(trial, 0.5)
    for frozen in study.trials:
        text = trial_config(study, frozen).to_yaml()  # what `hpo export` writes
        loaded = yaml.safe_load(text)
        code = frozen.params["prompt_template"]
        assert code in ("photo", "detailed", "surveillance")
        assert loaded["prompt_template"] == {p.name: p for p in s.params}[
            "prompt_template"
        ].value_of(code)
        assert "{aspect} hand" in loaded["prompt_template"]
        assert loaded["lr_clip_visual"] == frozen.params["lr_clip_visual"]
    drawn = study.trials[1].params["lr_clip_visual"]
    assert drawn == float(f"{drawn:.3g}")
    assert f"lr_clip_visual: {drawn}" in trial_config(study, study.trials[1]).to_yaml()


def test_a_baseline_may_name_the_value_and_is_enqueued_with_its_code():
    from hpo.search.study import create_or_resume

    data = coded()
    data["baselines"] = [
        {"name": "by-value", "prompt_template": FRAME, "max_norm": 1.0},
        {"name": "by-code", "prompt_template": "photo", "max_norm": 1.0},
    ]
    s = parse_space(data)
    assert [b["prompt_template"] for b in s.baselines] == ["surveillance", "photo"]
    study = create_or_resume(
        optuna.storages.InMemoryStorage(),
        "b",
        s,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        context={},
    )
    trial = study.ask()
    assert s.config(s.suggest(trial)).prompt_template == FRAME
    study.tell(trial, 0.5)
    assert study.trials[0].params["prompt_template"] == "surveillance"
    # the same baseline once by value and once by code is one configuration
    data["baselines"] = [
        {"prompt_template": FRAME, "max_norm": 1.0},
        {"prompt_template": "surveillance", "max_norm": 1.0},
    ]
    with pytest.raises(SpaceError, match=r"baselines\[1\]: the same settings as baselines\[0\]"):
        parse_space(data)


def test_a_study_that_stored_the_whole_value_still_maps_and_exports():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hpo.records.configs import trial_config
    from hpo.records.optuna_internals import set_study_record

    old = space(
        prompt_template={"type": "categorical", "choices": [PHOTO, FRAME]},
        max_norm={"type": "float", "low": 0.1, "high": 10.0, "log": True},
    )
    study = optuna.create_study(direction="maximize")
    set_study_record(study, "space", parse_space(old).to_dict())  # as studies stored it
    study.add_trial(
        optuna.trial.create_trial(
            params={"prompt_template": FRAME, "max_norm": 0.123456789},
            distributions={
                "prompt_template": CategoricalDistribution([PHOTO, FRAME]),
                "max_norm": FloatDistribution(0.1, 10.0, log=True),
            },
            value=0.5,
        )
    )
    cfg = trial_config(study, study.trials[0])
    assert cfg.prompt_template == FRAME and cfg.max_norm == 0.123456789
    # the space with codes reads such a stored value as it is
    new = parse_space(coded())
    assert new.config(study.trials[0].params).prompt_template == FRAME
    assert new.trainer_values({"prompt_template": FRAME}) == {"prompt_template": FRAME}


def test_codes_survive_the_stored_space_and_its_digest_keeps_their_order(tmp_path):
    import hashlib
    import json

    from hpo.records.artifacts import load_space_dict, open_artifact_store, save_space
    from hpo.records.optuna_internals import set_study_record
    from hpo.records.space import space_digest

    s = parse_space(coded())
    assert s.to_dict()["space"]["prompt_template"]["choices"] == TEMPLATES
    study = optuna.create_study()
    set_study_record(study, "space_digest", space_digest(s))
    store = open_artifact_store(tmp_path / "artifacts")
    save_space(study, store, s)  # the space.yaml artifact, checked against the digest on load
    again = parse_space(load_space_dict(study, store))
    assert space_digest(again) == space_digest(s)
    assert again.config({"prompt_template": "photo"}).prompt_template == PHOTO
    assert study.user_attrs["space_params"] == "2 tuned parameters, see space.yaml"
    # Optuna numbers choices by their place: the same codes in another order are another space
    swapped = coded()
    swapped["space"]["prompt_template"]["choices"] = dict(reversed(TEMPLATES.items()))
    assert space_digest(parse_space(swapped)) != space_digest(s)
    # a list of choices is digested as it always was
    listed = parse_space(
        space(classifier={"type": "categorical", "choices": ["linear", "arcface"]})
    )
    text = json.dumps(listed.to_dict(), sort_keys=True, default=str)
    assert space_digest(listed) == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_when_may_name_a_code_or_its_value():
    for allowed in ("surveillance", FRAME):
        data = coded(
            arcface_scale={
                "type": "float",
                "low": 10,
                "high": 64,
                "when": {"prompt_template": allowed},
            }
        )
        s = parse_space(data)
        scale = {p.name: p for p in s.params}["arcface_scale"]
        assert scale.when == {"prompt_template": ("surveillance",)}
        assert scale.active({"prompt_template": "surveillance"})
        assert not scale.active({"prompt_template": "photo"})


def test_shipped_spaces_choose_templates_by_code():
    for backbone in builtin_spaces():
        s = load_space(backbone)
        template = {p.name: p for p in s.params}["prompt_template"]
        assert template.coded and {"photo", "detailed", "surveillance"} <= set(template.choices)
        assert all(len(code) <= 16 for code in template.choices)
        assert template.value_of("photo") == PHOTO and template.value_of("surveillance") == FRAME
        for b in s.baselines:
            assert b["prompt_template"] in template.choices


@pytest.mark.parametrize(
    ("key", "choices", "error"),
    [
        ("prompt_template", {}, "choices is an empty mapping; give at least one {code: value}"),
        (
            "prompt_template",
            {1: PHOTO},
            "choice code 1 is not a name; codes are short strings such as photo",
        ),
        (
            "prompt_template",
            {"a": PHOTO, "b": PHOTO},
            f"codes 'a' and 'b' have the same value {PHOTO!r}; give each value one code",
        ),
        (
            "classifier",
            {"arc": "linear", "linear": "arcface"},
            "code 'linear' is also the value of code 'arc'; a stored 'linear' would be ambiguous",
        ),
        ("classifier", {"arc": "arcface", "cos": "cosface"}, "choice cos='cosface' is invalid"),
    ],
)
def test_each_bad_mapping_is_one_clear_error(key, choices, error):
    with pytest.raises(SpaceError) as err:
        parse_space(space(**{key: {"type": "categorical", "choices": choices}}), "s.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "; space." not in msg, msg  # one error, on one line
    assert msg.startswith(f"s.yaml: space.{key}: {error}"), msg


# --- the study's sampler: floats at 3 significant digits ----------------------------------


def significant_digits(value: float) -> int:
    return len(repr(value).split("e")[0].replace(".", "").replace("-", "").strip("0"))


def test_sampled_floats_have_3_significant_digits_and_stay_in_range():
    from optuna.distributions import FloatDistribution

    from hpo.search.study import make_sampler

    ranges = {
        "lr": FloatDistribution(1e-7, 1e-4, log=True),
        "margin": FloatDistribution(0.05, 0.5),
        # so narrow that rounding would leave it: the value is kept at a bound
        "narrow": FloatDistribution(0.0123456, 0.0123999),
    }
    for name in ("random", "tpe"):
        study = optuna.create_study(sampler=make_sampler(name, 7))
        for i in range(12):
            trial = study.ask(ranges)
            study.tell(trial, float(i))
        for t in study.trials:
            for key, value in t.params.items():
                d = ranges[key]
                assert d.low <= value <= d.high, (name, key, value)
                if key == "narrow":
                    assert value in (d.low, d.high) or significant_digits(value) <= 3
                else:
                    assert significant_digits(value) <= 3, (name, key, value)
                    assert value == float(f"{value:.3g}")
    assert significant_digits(0.00040830388102890006) == 17  # the measure itself


def test_tpe_still_finds_the_optimum_of_a_toy_function():
    import math

    from hpo.search.study import make_sampler

    def toy(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        margin = trial.suggest_float("margin", 0.0, 1.0)
        return -((math.log10(lr) - math.log10(3e-3)) ** 2) - (margin - 0.3) ** 2

    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0))
    study.optimize(toy, n_trials=60)
    best = study.best_params
    assert abs(math.log10(best["lr"] / 3e-3)) < 0.2 and abs(best["margin"] - 0.3) < 0.1, best
    assert all(v == float(f"{v:.3g}") for t in study.trials for v in t.params.values())


class Unrounded(optuna.samplers.BaseSampler):
    """A sampler that draws long numbers and records every call the wrapper passes on."""

    def __init__(self):
        self.calls = []

    def infer_relative_search_space(self, study, trial):
        self.calls.append("infer_relative_search_space")
        return optuna.search_space.intersection_search_space(study.get_trials(deepcopy=False))

    def sample_relative(self, study, trial, search_space):
        self.calls.append("sample_relative")
        return {name: self._draw(d) for name, d in search_space.items()}

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.calls.append("sample_independent")
        return self._draw(param_distribution)

    def _draw(self, d):
        from optuna.distributions import CategoricalDistribution, IntDistribution

        if isinstance(d, CategoricalDistribution):
            return d.choices[-1]
        if isinstance(d, IntDistribution):
            return d.high
        if d.step is not None:
            return d.low + d.step * 1234
        return d.low + (d.high - d.low) / 7

    def before_trial(self, study, trial):
        self.calls.append("before_trial")

    def after_trial(self, study, trial, state, values):
        self.calls.append("after_trial")

    def reseed_rng(self):
        self.calls.append("reseed_rng")


def test_the_wrapper_rounds_only_floats_without_a_step_and_passes_the_rest_on():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hpo.search.study import RoundedSampler

    inner = Unrounded()
    study = optuna.create_study(sampler=RoundedSampler(inner))
    space_ = {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "step": FloatDistribution(0.0, 1.0, step=0.0001),
        "dim": IntDistribution(1, 123457),
        "template": CategoricalDistribution(["photo", "A detailed photo of 0.123456 hands"]),
    }
    for _ in range(2):  # the first draws independently, the second relative to the first
        trial = study.ask(space_)
        study.tell(trial, 0.0)
    for t in study.trials:
        assert t.params["lr"] == 0.00151  # drawn as 0.0015142857...
        assert t.params["step"] == pytest.approx(0.1234)  # 4 digits, as the step allows
        assert t.params["dim"] == 123457
        assert t.params["template"] == "A detailed photo of 0.123456 hands"
    assert {"sample_independent", "sample_relative"} <= set(inner.calls)
    assert inner.calls.count("before_trial") == inner.calls.count("after_trial") == 2
    assert inner.calls.count("infer_relative_search_space") == 2
    study.sampler.reseed_rng()
    assert inner.calls[-1] == "reseed_rng"


def test_a_baseline_keeps_its_values_as_written():
    from hpo.search.study import make_sampler

    study = optuna.create_study(sampler=make_sampler("tpe", 0))
    study.enqueue_trial({"lr": 0.00040830388102890006})
    trial = study.ask()
    assert trial.suggest_float("lr", 1e-4, 1e-2, log=True) == 0.00040830388102890006
    study.tell(trial, 0.0)
    assert study.trials[0].params["lr"] == 0.00040830388102890006
