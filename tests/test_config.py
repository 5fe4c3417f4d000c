from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from handreid.config import (
    ASPECTS,
    KEYS,
    TrainConfig,
    config_warnings,
    load_yaml,
    parse_overrides,
    parse_yaml,
)
from handreid.errors import ConfigError

SEED_KEYS = [
    "model",
    "pretrained",
    "image_size",
    "batch_size",
    "num_instances",
    "epochs",
    "early_stop_patience",
    "warmup_epochs",
    "scheduler",
    "lr_clip_visual",
    "lr_modules",
    "weight_decay",
    "max_norm",
    "classifier",
    "arcface_scale",
    "arcface_margin",
    "bnneck_reduction",
    "bnneck_dim",
    "transformer_layers",
    "prompt_template",
    "inference_prompt",
    "loss_id_weight",
    "label_smoothing",
    "loss_tri_weight",
    "triplet_margin",
    "supcon_loss_weight",
    "supcon_ramp",
    "supcon_temperature",
    "unfreeze_blocks",
    "amp",
    "seed",
    "dataset",
    "data_root",
    "aspects",
    "exclude_accessories",
    "val_fraction",
    "num_splits",
]


def test_every_design_key_exists():
    assert set(SEED_KEYS) <= set(KEYS)


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(
        model="tiny-vit", image_size=(64, 48), aspects=("dorsal left", "palmar right")
    )
    path = tmp_path / "c.yaml"
    cfg.save(path, header="a header\nsecond line")
    text = path.read_text()
    assert text.startswith("# a header\n# second line\n")
    assert TrainConfig.from_yaml(path) == cfg
    assert yaml.safe_load(text)["image_size"] == [64, 48]


def test_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'lr_modlues'; did you mean 'lr_modules'\?"):
        TrainConfig.from_dict({"lr_modlues": 1e-4})
    path = tmp_path / "c.yaml"
    path.write_text("arcface_scal: 30\n")
    with pytest.raises(ConfigError, match="did you mean 'arcface_scale'"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bnneck_dim": 0}, "bnneck_dim=0 is out of range"),
        ({"arcface_margin": math.pi / 2}, "arcface_margin=1.57"),
        ({"arcface_margin": -0.1}, "arcface_margin=-0.1 is out of range"),
        (
            {"classifier": "cosface"},
            r"classifier='cosface' is not allowed; choose one of \['linear', 'arcface'\]",
        ),
        ({"amp": "on"}, "amp='on': expected true or false"),
        ({"epochs": 2.5}, "epochs=2.5: expected an integer"),
        ({"lr_modules": "fast"}, "lr_modules='fast': expected a number"),
        ({"image_size": [224]}, r"expected \[height, width\]"),
        ({"aspects": ["dorsal up"]}, "unknown aspect 'dorsal up'"),
        ({"batch_size": 30, "num_instances": 4}, "multiple of num_instances"),
        ({"prompt_template": "A {} photo of {finger}"}, r"unknown field \{finger\}"),
        ({"prompt_template": "A {} and {} hand"}, "at most once"),
        ({"max_norm": 0}, "max_norm=0.0 is out of range"),
        ({"supcon_temperature": 0}, "supcon_temperature=0.0 is out of range"),
        ({"seed": -1}, r"seed=-1 is out of range; allowed \[0, 4294967295\]"),
        ({"seed": 2**32}, r"seed=4294967296 is out of range; allowed \[0, 4294967295\]"),
        ({"seed": 1e30}, r"seed=1000000000000000019884624838656 is out of range"),
        ({"seed": 10**5000}, r"seed=<integer of 16610 bits> is out of range"),
        ({"seed": math.inf}, "seed=inf: expected an integer"),
        ({"epochs": math.nan}, "epochs=nan: expected an integer"),
        ({"prompt_template": "A {:{}} hand"}, "Replacement index 1 out of range"),
        ({"prompt_template": "A {aspect!x} hand"}, "Unknown conversion specifier x"),
        ({"prompt_template": "A {aspect:d} hand"}, "Unknown format code 'd'"),
        ({"confirm_fraction": 1.0}, r"confirm_fraction=1.0 is out of range; allowed \[0.0, 1.0\)"),
        ({"confirm_fraction": -0.1}, "confirm_fraction=-0.1 is out of range"),
        ({"confirm_run": True}, "confirm_run needs confirm identities: set confirm_fraction"),
        (
            {"confirm_run": True, "confirm_fraction": 0.2, "refit": True},
            "refit and confirm_run exclude each other",
        ),
    ],
)
def test_bad_values_say_what_and_allowed(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(changes)


def test_yaml_typing_of_values():
    cfg = TrainConfig.from_dict(
        {"lr_modules": "1e-4", "aspects": "all", "image_size": 64, "epochs": 3.0}
    )
    assert cfg.lr_modules == 1e-4
    assert cfg.aspects == ASPECTS
    assert cfg.image_size == (64, 64)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)


def test_overrides_are_yaml_typed():
    out = parse_overrides(
        ["lr_modules=3e-4", "amp=false", "aspects=[dorsal left, palmar left]", "model=rn50"]
    )
    assert out == {
        "lr_modules": 3e-4,
        "amp": False,
        "aspects": ("dorsal left", "palmar left"),
        "model": "rn50",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        parse_overrides(["epoch=3"])


def test_from_yaml_with_overrides_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny-vit\nepochs: 4\n")
    cfg = TrainConfig.from_yaml(path, ["epochs=2", "max_norm=0.5"])
    assert (cfg.model, cfg.epochs, cfg.max_norm) == ("tiny-vit", 2, 0.5)
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.from_yaml(path)


def test_replace_validates():
    cfg = TrainConfig()
    assert cfg.replace(bnneck_dim=512).bnneck_dim == 512
    with pytest.raises(ConfigError):
        cfg.replace(bnneck_dim=-1)
    with pytest.raises(ConfigError, match="did you mean 'bnneck_dim'"):
        cfg.replace(bneck_dim=3)


def test_aliases():
    assert TrainConfig(model="rn50").open_clip_name == "RN50"
    assert TrainConfig(model="vitb16").open_clip_name == "ViT-B-16"
    assert TrainConfig(model="ViT-L-14").open_clip_name == "ViT-L-14"


def test_seed_bounds_are_accepted():
    assert TrainConfig(seed=0).seed == 0
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1


# ---- YAML: duplicate keys, encodings, what PyYAML lets escape -----------------------------------
def test_duplicate_key_names_the_key_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny-vit\nepochs: 4\nlr_modules: 1e-4\nepochs: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml: duplicate key 'epochs' \(line 4\)"):
        TrainConfig.from_yaml(path)


def test_duplicate_keys_in_nested_mappings_and_merges():
    with pytest.raises(ConfigError, match=r"duplicate key 'low' \(line 3\)"):
        parse_yaml("space:\n  lr: {type: float,\n    low: 1, low: 2}\n", "s.yaml")
    # a merge brings keys that the mapping may override: that is not a duplicate
    data = parse_yaml("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 5\n")
    assert data["b"] == {"x": 5, "y": 2}
    # 1 and 1.0 are one dict key: PyYAML would keep the last silently
    with pytest.raises(ConfigError, match="duplicate key 1.0"):
        parse_yaml("{1: a, 1.0: b}")


def test_parse_yaml_raises_the_callers_error_type():
    class SpaceLikeError(ConfigError):
        pass

    with pytest.raises(SpaceLikeError, match="duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", error=SpaceLikeError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: 2001-13-01\n", r"\(line 1\): cannot read '2001-13-01' as timestamp \(month must"),
        ("epochs: " + "[" * 3000 + "]" * 3000 + "\n", "not valid YAML: nested too deeply"),
        ("epochs: " + "9" * 5000 + "\n", r"not valid YAML \(line 1\): cannot read .* as int"),
        ("epochs: !!int\n", r"not valid YAML \(line 1\): cannot read '' as int"),
        ("epochs: !!timestamp x\n", r"not valid YAML \(line 1\): cannot read 'x' as timestamp"),
        ("epochs: [1\n", r"not valid YAML \(line 2\)"),
        ("? [a]\n: 1\n", r"not valid YAML \(line 1\): found unhashable key"),
    ],
)
def test_yaml_that_pyyaml_cannot_build_is_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_yaml(path)
    assert "\n" not in str(err.value)


def test_non_utf8_config_names_the_byte(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model: tiny-vit\nprompt_template: A photo of a {} \xe9 hand.\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 0xe9 at offset 49\)"):
        TrainConfig.from_yaml(path)
    path.write_bytes(b"\xef\xbb\xbfmodel: tiny-vit\n")  # a UTF-8 byte-order mark is fine
    assert TrainConfig.from_yaml(path).model == "tiny-vit"


def test_load_yaml_of_an_unreadable_path(tmp_path):
    with pytest.raises(ConfigError, match=f"cannot read {tmp_path}: Is a directory"):
        load_yaml(tmp_path)


def test_overrides_fall_back_to_text_when_not_yaml():
    out = parse_overrides(["prompt_template=A {} {aspect} hand: up: left", "pretrained=2001-13-01"])
    assert out == {"prompt_template": "A {} {aspect} hand: up: left", "pretrained": "2001-13-01"}
    with pytest.raises(ConfigError, match="epochs='2001-13-01': expected an integer"):
        parse_overrides(["epochs=2001-13-01"])


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "{}\n", "---\n"])
def test_a_config_that_sets_nothing_is_refused_even_with_overrides(tmp_path, text):
    # it would train the defaults (vitb16 with OpenAI weights) without a word
    path = tmp_path / "c.yaml"
    path.write_text(text)
    for overrides in ([], ["epochs=2"]):
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_yaml(path, overrides)
        message = str(err.value)
        assert message.startswith(f"{path}: the config sets nothing")
        assert "(model vitb16, pretrained openai)" in message and "'model: tiny-vit'" in message


def test_example_configs_and_a_one_key_config_still_load(tmp_path):
    from importlib.resources import files

    for example in files("handreid").joinpath("configs").iterdir():
        cfg = TrainConfig.from_yaml(Path(str(example)))
        assert cfg.model == example.name.removesuffix(".yaml")
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny-vit\n")
    assert TrainConfig.from_yaml(path) == TrainConfig(model="tiny-vit")
    from hpo.records.space import load_space  # baselines are partial mappings, never files

    for backbone in ("rn50", "vitb16", "tiny-rn", "tiny-vit"):
        space = load_space(backbone)
        for baseline in space.baselines:
            space.config({k: v for k, v in baseline.items() if k != "name"})


def test_non_mapping_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("[]\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        TrainConfig.from_yaml(path)


# ---- legal but probably unintended: a warning that names the values -----------------------------
def test_warmup_covering_the_whole_run_is_a_warning():
    assert config_warnings(TrainConfig(epochs=3, warmup_epochs=2)) == []
    (message,) = config_warnings(TrainConfig(epochs=3, warmup_epochs=3))
    assert "warmup_epochs=3 >= epochs=3" in message and "cosine" in message
    (message,) = config_warnings(TrainConfig(epochs=2, warmup_epochs=5, scheduler="constant"))
    assert "warmup_epochs=5 >= epochs=2" in message and "constant" in message
