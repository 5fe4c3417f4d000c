"""Horizontal flip: the default chosen from benchmarks/bench_flip.py, and what a flip does.

With left and right hands as separate identities, a mirrored right hand looks like a left
one. Measured (docs/benchmarks.md, "Flip and aspects"; tiny-vit, all aspects, 3 paired seeds):
test mAP with flip_prob 0.5 minus 0 was +0.037 [-0.060, +0.134] on synthetic hands and
+0.008 [-0.034, +0.050] on the 11k sample, and no test query in 12 runs had the same person's
other hand as its rank-1 match: the aspect word of the composed prompt conditions the feature
(tests/models/test_promptsg.py), so a flip does not teach the left/right confusion. The flip
stays on by default.
"""

from __future__ import annotations

import pytest
import torch

from handreid.config import TrainConfig
from handreid.data.augment import BatchAugment, normalize
from hpo.records.space import builtin_spaces, load_space


def test_flip_is_on_by_default_in_the_trainer_and_every_shipped_space():
    assert TrainConfig().flip_prob == 0.5
    for name in builtin_spaces():
        space = load_space(name)
        for baseline in space.baselines:
            params = {k: v for k, v in baseline.items() if k != "name"}
            assert space.config(params).flip_prob == 0.5, (name, baseline.get("name"))


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_a_flip_mirrors_the_pixels_and_nothing_else(flip):
    images = torch.randint(0, 256, (4, 3, 8, 12), dtype=torch.uint8)
    out = BatchAugment(flip_prob=flip, pad=0, random_erasing=0.0)(images)
    expected = images.flip(-1) if flip else images
    assert torch.equal(out, normalize(expected))


def test_half_the_images_are_mirrored_on_average():
    images = torch.arange(6, dtype=torch.uint8).repeat(512, 3, 2, 1)  # (512, 3, 2, 6), asymmetric
    gen = torch.Generator().manual_seed(0)
    out = BatchAugment(flip_prob=0.5, pad=0, random_erasing=0.0)(images, gen)
    mirrored = torch.isclose(out, normalize(images.flip(-1))).flatten(1).all(1)
    assert 0.43 < mirrored.float().mean().item() < 0.57  # 512 draws: SD of the share 0.022
