from __future__ import annotations

import pytest
import torch

from handreid.data import augment
from handreid.data.augment import CLIP_MEAN, CLIP_STD, BatchAugment, normalize


def _images(b: int = 6, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)


def test_normalize_uses_clip_mean_and_std():
    x = _images()
    out = normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    with pytest.raises(TypeError, match="uint8"):
        normalize(x.float())


def test_no_augmentation_equals_normalize():
    x = _images()
    out = BatchAugment(flip_prob=0, pad=0, random_erasing=0)(x)
    assert torch.equal(out, normalize(x))


def test_flip_always():
    x = _images()
    out = BatchAugment(flip_prob=1.0, pad=0, random_erasing=0)(x)
    assert torch.equal(out, normalize(x.flip(-1)))


def test_pad_and_crop_is_a_shifted_window_of_the_padded_image():
    x = _images(b=8)
    pad = 3
    out = BatchAugment(flip_prob=0, pad=pad, random_erasing=0)(x, torch.Generator().manual_seed(5))
    padded = normalize(torch.nn.functional.pad(x, (pad,) * 4))
    h, w = x.shape[-2:]
    shifts = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert matches, f"image {i} is not a crop of its padded version"
        shifts.add(matches[0])
    assert len(shifts) > 1  # offsets differ across the batch


def test_erasing_fills_one_rectangle_with_random_values():
    x = torch.zeros((16, 3, 32, 32), dtype=torch.uint8)
    out = BatchAugment(flip_prob=0, pad=0, random_erasing=1.0)(x, torch.Generator().manual_seed(0))
    assert not x.any()  # erased into a copy, not into the caller's batch
    base = normalize(x)
    changed = (out != base).any(dim=1)  # (B, H, W)
    assert changed.any(dim=(1, 2)).sum() >= 14  # random noise may rarely hit 0 everywhere
    for mask in changed:
        rows = mask.any(dim=1).nonzero().flatten()
        cols = mask.any(dim=0).nonzero().flatten()
        if len(rows) == 0:
            continue
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.float().mean() > 0.95  # a filled rectangle (noise equals 0 only by chance)
        area = box.numel() / mask.numel()
        assert 0.015 <= area <= 0.45
    # Erased pixels take values across [0, 255] (in normalised units).
    erased = out[changed.unsqueeze(1).expand_as(out)]
    assert erased.std() > 0.5


def test_erasing_probability_zero_and_half():
    x = torch.zeros((200, 3, 16, 16), dtype=torch.uint8)
    out = BatchAugment(flip_prob=0, pad=0, random_erasing=0.5)(x, torch.Generator().manual_seed(1))
    erased = (out != normalize(x)).flatten(1).any(dim=1).float().mean().item()
    assert 0.35 < erased < 0.65


def test_generator_makes_it_deterministic_and_shape_dtype():
    x = _images(b=5, h=20, w=14)
    aug = BatchAugment(flip_prob=0.5, pad=4, random_erasing=0.5)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, _images(b=5, h=20, w=14))  # input untouched


def test_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        BatchAugment()(torch.zeros(1, 3, 4, 4))


def test_accelerator_paths_match_cpu_paths():
    """The gather/where paths used off the CPU give the CPU paths' result (run here on CPU)."""
    x = _images(b=16, h=20, w=18, seed=2)
    torch.testing.assert_close(augment._normalize_torch(x), augment._normalize_numpy(x))
    aug = BatchAugment(flip_prob=0.5, pad=5, random_erasing=1.0)
    params = aug.draw(x.shape, x.device, torch.Generator().manual_seed(9))
    assert params.flip.any() and not params.flip.all()
    cropped = augment._crop_gather(x, params, 5)
    assert torch.equal(cropped, augment._crop_slices(x, params, 5))
    zeros = torch.zeros_like(x)
    where = augment._erase_where(zeros, params, torch.Generator().manual_seed(0))
    slices = augment._erase_slices(zeros.clone(), params, torch.Generator().manual_seed(0))
    # Same rectangles (the noise inside is drawn differently); nothing changes outside them.
    for i in range(len(x)):
        box = (
            slice(None),
            slice(params.erase_top[i], params.erase_top[i] + params.erase_h[i]),
            slice(params.erase_left[i], params.erase_left[i] + params.erase_w[i]),
        )
        for out in (where, slices):
            outside = out[i].clone()
            outside[box] = 0
            assert not outside.any()
            assert out[i][box].float().mean() > 50  # uniform bytes average about 127
