"""Floors: raw pixels and the backbone without fine-tuning, through the trainer's evaluator."""

from __future__ import annotations

import json
import statistics
import warnings

import pytest
import torch

from handreid.config import TrainConfig
from handreid.engine import evaluate_features, prepare_data
from handreid.floors import (
    backbone_label,
    compute_floors,
    floors_key,
    format_floors,
    pixel_features,
)
from hpo.records.space import load_space


def test_pixel_features_are_centred_and_unit_length():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    feats = pixel_features(images)
    assert feats.shape == (6, 3 * 8 * 8) and feats.dtype == torch.float32
    assert torch.allclose(feats.norm(dim=1), torch.ones(6), atol=1e-5)
    # centring: the unnormalised rows sum to zero, so the normalised rows, scaled back, do too
    raw = images.flatten(1).float() / 255
    centred = raw - raw.mean(0)
    assert torch.allclose(feats * centred.norm(dim=1, keepdim=True), centred, atol=1e-5)


def test_identical_images_of_one_identity_make_a_perfect_pixel_floor(tiny_cfg):
    data = prepare_data(tiny_cfg)
    val = data.val
    # each image replaced by its identity's first image: pixels must then match perfectly
    first = {int(i): k for k, i in reversed(list(enumerate(val.ids.tolist())))}
    images = torch.stack([val.images[first[int(i)]] for i in val.ids])
    result = evaluate_features(pixel_features(images), val)
    assert result["mAP"] == pytest.approx(1.0)


def test_synthetic_hands_have_a_weak_pixel_floor(tiny_cfg):
    """Synthetic identities differ in shape and colour drawn with per-image jitter and
    background: four aspects of 40 subjects are hard for raw pixels."""
    cfg = tiny_cfg.replace(aspects=("all",))
    floors = compute_floors(cfg, device="cpu")
    val, test = floors.pixels
    assert val < 0.35 and test < 0.35, floors
    assert floors.backbone[0] < 0.4 and floors.backbone_label == "untrained tiny-vit"


def test_the_real_sample_has_a_strong_pixel_floor(sample_11k, tmp_path):
    """On the 100 px 11k sample, views of one identity are near-duplicates: flattened pixels
    beat the untrained tower and the tuned tiny-vit values (0.78-0.81) of docs/benchmarks.md."""
    cfg = (
        load_space("tiny-vit")
        .with_base(data_root=str(sample_11k), cache_dir=str(tmp_path))
        .config({})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the sample lacks most listed images
        floors = compute_floors(cfg, device="cpu")
    val, test = floors.pixels
    assert val > 0.8 and test > 0.8, floors
    assert val > floors.backbone[0] and test > floors.backbone[1]


def test_val_floor_is_the_mean_over_folds_and_test_is_shared(tiny_cfg):
    cfg = tiny_cfg.replace(val_folds=3)
    floors = compute_floors(cfg, device="cpu")
    per_fold = []
    for k in range(3):
        data = prepare_data(cfg.replace(val_fold=k))
        per_fold.append(evaluate_features(pixel_features(data.val.images), data.val)["mAP"])
    assert len(set(per_fold)) == 3, "each fold validates on its own identities"
    assert floors.pixels[0] == pytest.approx(statistics.fmean(per_fold))
    data = prepare_data(cfg)
    assert floors.pixels[1] == pytest.approx(
        evaluate_features(pixel_features(data.test.images), data.test)["mAP"]
    )


def test_the_untrained_tower_is_seeded_and_the_key_names_split_and_seed(tiny_cfg):
    a = compute_floors(tiny_cfg, device="cpu")
    b = compute_floors(tiny_cfg, device="cpu")
    c = compute_floors(tiny_cfg.replace(seed=tiny_cfg.seed + 1), device="cpu")
    assert a.backbone == b.backbone and a.key == b.key
    assert c.backbone != a.backbone and c.key != a.key
    assert c.pixels == a.pixels, "pixels do not depend on the training seed"
    other_split = compute_floors(tiny_cfg.replace(split_seed=5), device="cpu")
    assert other_split.key != a.key and other_split.pixels != a.pixels


def test_the_key_ignores_the_seed_of_pretrained_weights(tiny_cfg):
    pretrained = tiny_cfg.replace(pretrained="openai")
    assert floors_key(pretrained, ["d"]) == floors_key(pretrained.replace(seed=9), ["d"])
    assert floors_key(tiny_cfg, ["d"]) != floors_key(tiny_cfg.replace(seed=9), ["d"])
    assert floors_key(tiny_cfg, ["d"]) != floors_key(tiny_cfg, ["e"])


def test_record_is_a_short_attribute_and_the_table_shows_both_floors(tiny_cfg):
    floors = compute_floors(tiny_cfg, device="cpu")
    record = floors.record()
    assert len(json.dumps(record)) < 200
    assert record["pixels"] == [round(v, 4) for v in floors.pixels]
    text = format_floors(floors)
    assert "raw pixels" in text and "untrained tiny-vit" in text
    assert f"{floors.pixels[0]:.4f}" in text and f"{floors.backbone[1]:.4f}" in text


def test_backbone_labels():
    base = TrainConfig(model="rn50", pretrained="openai")
    assert backbone_label(base) == "zero-shot rn50 openai"
    assert backbone_label(base.replace(pretrained="none")) == "untrained rn50"
    assert backbone_label(base.replace(pretrained="/w/ckpt.pt")) == (
        "rn50 from ckpt.pt, not fine-tuned"
    )
    long = backbone_label(base.replace(pretrained="/w/" + "x" * 80 + ".pt"))
    assert len(long) == 48 and long.endswith("…")


def test_handreid_evaluate_floors_prints_them_for_one_config(tiny_cfg, tmp_path, capsys):
    from handreid.cli import main

    path = tmp_path / "c.yaml"
    tiny_cfg.replace(data_root="").save(path)  # the data comes from --data
    expected = compute_floors(tiny_cfg, device="cpu").record()
    argv = ["evaluate", "--floors", "--config", str(path), "--data", tiny_cfg.data_root]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--device", "cpu", "--json"])
    assert exc.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pixels"] == dict(zip(("val", "test"), expected["pixels"], strict=True))
    assert printed["backbone"] == dict(zip(("val", "test"), expected["backbone"], strict=True))
    assert printed["key"] == expected["key"] and printed["backbone_label"] == "untrained tiny-vit"
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--device", "cpu"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("floors (no training") and f"{expected['pixels'][0]:.4f}" in out
