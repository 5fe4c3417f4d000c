"""Normalisation and ReID-style augmentation on whole uint8 batches, on their own device.

Training and evaluation use the same CLIP mean/std (the seed trainer normalised only test
images). Random parameters for the whole batch are drawn at once on the batch's device. On an
accelerator the images are then transformed by one gather and one masked select, with no host
synchronisation. On the CPU the same parameters drive per-image slice copies instead: there
they are plain memory copies, about ten times faster than an element-wise gather.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)``: ``(x / 255 - mean) / std``."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    return _normalize_numpy(images) if images.device.type == "cpu" else _normalize_torch(images)


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # copied once per device: a pageable host-to-device copy every step would sync the stream
    return torch.from_numpy(_SCALE).to(device), torch.from_numpy(_SHIFT).to(device)


def _normalize_torch(images: torch.Tensor) -> torch.Tensor:
    scale, shift = _constants(images.device)
    return torch.addcmul(shift, images.float(), scale)


def _normalize_numpy(images: torch.Tensor) -> torch.Tensor:
    # numpy casts while multiplying, backs large arrays with huge pages and uses no thread
    # pool: about 3x faster than torch's uint8 -> float copy on a small CPU.
    out = np.multiply(images.numpy(), _SCALE, dtype=np.float32)
    return torch.from_numpy(np.add(out, _SHIFT, out=out))


_SCALE = np.array([1.0 / (255.0 * s) for s in CLIP_STD], dtype=np.float32).reshape(1, 3, 1, 1)
_SHIFT = np.array(
    [-m / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)], dtype=np.float32
).reshape(1, 3, 1, 1)


@dataclass(frozen=True)
class _Params:
    """Per-image random parameters, each a ``(B,)`` tensor on the batch's device."""

    flip: torch.Tensor  # bool
    top: torch.Tensor  # crop offset in the padded image, [0, 2 * pad]
    left: torch.Tensor
    erase: torch.Tensor  # bool
    erase_top: torch.Tensor
    erase_left: torch.Tensor
    erase_h: torch.Tensor
    erase_w: torch.Tensor


class BatchAugment:
    """Random horizontal flip, zero padding + random crop, random erasing, then normalisation.

    The usual ReID recipe, applied to uint8 batches (a quarter of the bytes of float):
    each image is mirrored with probability ``flip_prob``, zero-padded by ``pad`` pixels and
    cropped back at a random offset; with probability ``random_erasing`` a rectangle of
    2%-40% of the image area and aspect ratio 0.3-3.3 is filled with uniform random pixel
    values in [0, 255] (Zhong et al., Random Erasing). With ``flip_prob=0, pad=0,
    random_erasing=0`` the output equals ``normalize(images)``.
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        pad: int = 10,
        random_erasing: float = 0.5,
        erase_area: tuple[float, float] = (0.02, 0.4),
        erase_ratio: float = 0.3,
        erase_attempts: int = 10,
    ) -> None:
        self.flip_prob = float(flip_prob)
        self.pad = int(pad)
        self.random_erasing = float(random_erasing)
        self.erase_area = erase_area
        self.erase_ratio = erase_ratio
        self.erase_attempts = erase_attempts

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` on any device -> normalised float32 ``(B, 3, H, W)``.

        ``generator`` must live on the images' device when given.
        """
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(
                f"BatchAugment expects uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        x = images
        if self.flip_prob > 0 or self.pad > 0 or self.random_erasing > 0:
            params = self.draw(images.shape, images.device, generator)
            on_cpu = images.device.type == "cpu"
            if self.flip_prob > 0 or self.pad > 0:
                x = (_crop_slices if on_cpu else _crop_gather)(x, params, self.pad)
            if self.random_erasing > 0:
                if on_cpu:  # writes in place: never into the caller's tensor
                    x = _erase_slices(x if x is not images else x.clone(), params, generator)
                else:
                    x = _erase_where(x, params, generator)
        return normalize(x)

    def draw(
        self, shape: torch.Size, device: torch.device, gen: torch.Generator | None = None
    ) -> _Params:
        """All random parameters of a batch of ``shape`` (B, C, H, W), drawn at once.

        Erasing tries ``erase_attempts`` shapes per image and keeps the first that fits."""
        b, _, h, w = shape
        u = torch.rand((4, b), device=device, generator=gen)
        span = 2 * self.pad + 1
        e = torch.rand((5, b, self.erase_attempts), device=device, generator=gen)
        lo, hi = self.erase_area
        area = (lo + (hi - lo) * e[0]) * (h * w)
        log_r = math.log(self.erase_ratio)
        ratio = torch.exp(log_r - 2 * log_r * e[1])  # log-uniform in [r, 1/r]
        eh = torch.sqrt(area * ratio).round().long()
        ew = torch.sqrt(area / ratio).round().long()
        fits = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
        first = torch.argmax(fits.int(), dim=1, keepdim=True)
        eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
        return _Params(
            flip=u[0] < self.flip_prob,
            top=(u[1] * span).long(),
            left=(u[2] * span).long(),
            erase=(u[3] < self.random_erasing) & fits.any(dim=1),
            erase_top=(e[2].gather(1, first)[:, 0] * (h - eh + 1)).long(),
            erase_left=(e[3].gather(1, first)[:, 0] * (w - ew + 1)).long(),
            erase_h=eh,
            erase_w=ew,
        )


def _crop_gather(x: torch.Tensor, prm: _Params, pad: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, 3, H, W): flip, zero-pad and crop as one gather."""
    b, c, h, w = x.shape
    cols = torch.arange(w, device=x.device)
    cols = torch.where(prm.flip[:, None], w - 1 - cols, cols) + prm.left[:, None]  # (B, W)
    rows = torch.arange(h, device=x.device) + prm.top[:, None]  # (B, H)
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    out = padded.reshape(b, c, -1).gather(2, index.expand(b, c, h * w))
    return out.view(b, c, h, w)


def _crop_slices(x: torch.Tensor, prm: _Params, pad: int) -> torch.Tensor:
    """Same result as ``_crop_gather`` by per-image slice copies of CPU tensors.

    The copies go through numpy: single-threaded memory copies, so a busy machine does not
    stall each of them on a thread-pool barrier as small torch ops can."""
    b, _, h, w = x.shape
    src = x.numpy()
    out = np.zeros_like(src) if pad else np.empty_like(src)
    for i, (flip, top, left) in enumerate(
        zip(*(t.tolist() for t in (prm.flip, prm.top, prm.left)), strict=True)
    ):
        img = src[i, :, :, ::-1] if flip else src[i]
        dy = top - pad
        dx = pad - left if flip else left - pad  # a mirrored image shifts the other way
        r0, r1, c0, c1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        out[i, :, r0:r1, c0:c1] = img[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx]
    return torch.from_numpy(out)


def _erase_where(x: torch.Tensor, prm: _Params, gen: torch.Generator | None) -> torch.Tensor:
    """uint8 (B, 3, H, W): each chosen image gets one rectangle of random bytes."""
    b, _, h, w = x.shape
    r = torch.arange(h, device=x.device)
    q = torch.arange(w, device=x.device)
    top, left = prm.erase_top[:, None], prm.erase_left[:, None]
    rows = (r >= top) & (r < top + prm.erase_h[:, None]) & prm.erase[:, None]  # (B, H)
    cols = (q >= left) & (q < left + prm.erase_w[:, None])  # (B, W)
    inside = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)  # (B, 1, H, W)
    return torch.where(inside, _random_bytes(x.shape, x.device, gen), x)


def _erase_slices(x: torch.Tensor, prm: _Params, gen: torch.Generator | None) -> torch.Tensor:
    """Same rectangles as ``_erase_where``, filled in place by slice; noise only where used."""
    fields = (prm.erase, prm.erase_top, prm.erase_left, prm.erase_h, prm.erase_w)
    c, out = x.shape[1], x.numpy()
    for i, (erase, top, left, eh, ew) in enumerate(zip(*(t.tolist() for t in fields), strict=True)):
        if erase:
            noise = _random_bytes((c, eh, ew), x.device, gen).numpy()
            out[i, :, top : top + eh, left : left + ew] = noise
    return x


def _random_bytes(shape, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    """Uniform uint8 noise of ``shape``; one 64-bit draw gives 8 bytes (8x fewer draws)."""
    n = math.prod(shape)
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=gen)  # the full 64-bit range
    return words.view(torch.uint8)[:n].view(shape)


__all__ = ["CLIP_MEAN", "CLIP_STD", "BatchAugment", "normalize"]
