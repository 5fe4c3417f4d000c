"""The example trainer configs leave a study room above what needs no training: their
validation identities are enough that raw pixels do not already rank them perfectly."""

from __future__ import annotations

import warnings
from importlib.resources import files

import pytest

from handreid.config import TrainConfig
from handreid.data import load_splits
from handreid.floors import compute_floors


def example(name: str, data_root, tmp_path) -> TrainConfig:
    path = files("handreid").joinpath("configs", f"{name}.yaml")
    cfg = TrainConfig.from_yaml(path)
    return cfg.replace(data_root=str(data_root), cache_dir=str(tmp_path / "cache"))


def pixel_floor(cfg: TrainConfig) -> tuple[int, float]:
    """(validation identities, val mAP of raw pixels) of ``cfg``'s split."""
    with warnings.catch_warnings():  # the 11k sample lacks most of HandInfo.csv's images
        warnings.simplefilter("ignore", UserWarning)
        val = len(load_splits(cfg).identity_lists()["val"])
        record = compute_floors(cfg, device="cpu").record()
    return val, record["pixels"][0]


def test_tiny_vit_validates_below_the_pixel_ceiling_on_the_11k_sample(sample_11k, tmp_path):
    """With 10 validation identities (val_fraction 0.15) raw pixels reached val mAP 1.000 on
    the sample's 100 px thumbnails: no trial could show it learned anything."""
    val, floor = pixel_floor(example("tiny-vit", sample_11k, tmp_path))
    assert val >= 20
    assert floor < 0.95, f"raw pixels reach {floor:.3f} on {val} validation identities"


def test_tiny_vit_validates_below_the_pixel_ceiling_on_synthetic_hands(synthetic_root, tmp_path):
    val, floor = pixel_floor(example("tiny-vit", synthetic_root, tmp_path))
    assert val >= 5
    assert floor < 0.95, f"raw pixels reach {floor:.3f} on {val} validation identities"


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_the_tiny_examples_train_on_enough_identities_for_their_batches(name, synthetic_root):
    cfg = TrainConfig.from_yaml(files("handreid").joinpath("configs", f"{name}.yaml"))
    cfg = cfg.replace(data_root=str(synthetic_root))
    train = load_splits(cfg).identity_lists()["train_count"]
    assert train >= cfg.batch_size // cfg.num_instances  # a P x K batch has P identities
