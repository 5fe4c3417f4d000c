from __future__ import annotations

import math

import pytest
import yaml

from handreid.config import ASPECTS, KEYS, TrainConfig, parse_overrides
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
