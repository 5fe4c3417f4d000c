"""Floors: the validation and test mAP of what needs no training.

A tuned value means little until it stands beside what is reached without any training:

- **pixels**: each image at the model's input size (as the trainer sees it), flattened to one
  vector of its 0..1 pixel values, centred on the mean image of the set being evaluated, and
  L2-normalised;
- **backbone**: the global embedding of the image tower as the config builds it before the
  first step, i.e. zero-shot CLIP for ``pretrained: openai`` (or any tag or checkpoint) and
  the untrained tower for ``pretrained: none`` (seeded with ``cfg.seed``, so it is the very
  tower a run at that seed starts from).

Both go through the trainer's own evaluator (``handreid.engine.evaluate_features``) on the
same validation identities (every fold, averaged as the trial value is), the same test
identities and the same query/gallery splits. Inference only: no gradient, no optimiser.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from handreid.config import TrainConfig
from handreid.data.augment import normalize
from handreid.engine import (
    EvalSet,
    PreparedData,
    evaluate_features,
    prepare_data,
    resolve_device,
    seed_everything,
)
from handreid.evaluation import l2_normalize

KINDS = ("pixels", "backbone")
_LABEL_CHARS = 48  # the label travels in a short study attribute


@dataclass(frozen=True)
class Floors:
    """Val and test mAP of each floor for one config's data and split.

    ``val`` is the mean over the config's validation folds (None for a refit, which has no
    validation identities); ``key`` names the data, split and floor-relevant config keys, so a
    stored record is reused only for the same ones.
    """

    key: str
    pixels: tuple[float | None, float]  # (val, test)
    backbone: tuple[float | None, float]
    backbone_label: str
    seconds: float

    def record(self) -> dict:
        """A compact JSON-ready record (under 200 characters as JSON)."""
        r4 = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {
            "key": self.key,
            "pixels": [r4(v) for v in self.pixels],
            "backbone": [r4(v) for v in self.backbone],
            "backbone_label": self.backbone_label,
            "seconds": round(self.seconds, 1),
        }


def backbone_label(cfg: TrainConfig) -> str:
    """``untrained tiny-vit``, ``zero-shot rn50 openai`` or ``rn50 from w.pt, not fine-tuned``."""
    weights = str(cfg.pretrained).strip()
    if weights.lower() in ("", "none"):
        text = f"untrained {cfg.model}"
    elif os.sep in weights or os.path.isfile(weights):
        text = f"{cfg.model} from {os.path.basename(weights)}, not fine-tuned"
    else:
        text = f"zero-shot {cfg.model} {weights}"
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def fold_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """One config per validation fold (the refit, which has none, is its own single config)."""
    if cfg.refit:
        return [cfg]
    return [cfg.replace(val_fold=k) for k in range(cfg.val_folds)]


def floors_key(cfg: TrainConfig, split_digests: list[str]) -> str:
    """Digest of what the floors depend on: the identity splits of every fold (their
    ``identity_lists`` digests), the query/gallery splits, the input size and the backbone."""
    weights = str(cfg.pretrained).strip().lower()
    parts = {
        "splits": sorted(split_digests),
        "split_seed": cfg.split_seed,
        "num_splits": cfg.num_splits,
        "image_size": list(cfg.image_size),
        "model": cfg.model,
        "pretrained": cfg.pretrained,
        "seed": cfg.seed if weights in ("", "none") else None,
        "eval_ap": cfg.eval_ap,
    }
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """images: uint8 (N, 3, H, W) -> (N, 3*H*W) float32: pixels in 0..1, centred on the set's
    mean image (so that what all images share, the background and the overall brightness,
    does not dominate every cosine), L2-normalised."""
    x = images.flatten(1).float() / 255.0
    return l2_normalize(x - x.mean(dim=0, keepdim=True))


def build_backbone(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The image tower as ``build_model`` makes it before training: the same weights (or, for
    ``pretrained: none``, the same random draw after ``seed_everything(cfg.seed)``)."""
    from handreid.models import ImageEncoder, load_clip, resolve_model_name

    seed_everything(cfg.seed)
    clip = load_clip(resolve_model_name(cfg.open_clip_name), cfg.pretrained, cfg.image_size)
    return ImageEncoder(clip.visual).to(device).eval()


@torch.no_grad()
def backbone_features(
    encoder: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """images: uint8 (N, 3, H, W) -> (N, E) float32 L2-normalised global embeddings, CLIP
    normalisation as in training and evaluation."""
    feats = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start : start + batch_size].to(device))
        pooled, _ = encoder(batch)
        feats.append(pooled.float())
    return l2_normalize(torch.cat(feats))


def _map(feats: torch.Tensor, evalset: EvalSet, cfg: TrainConfig) -> float:
    return float(evaluate_features(feats, evalset, cfg.eval_ap)["mAP"])


def compute_floors(
    cfg: TrainConfig,
    data_for: Callable[[TrainConfig], PreparedData] = prepare_data,
    device: str | torch.device | None = None,
) -> Floors:
    """The pixel and backbone floors of ``cfg``'s data and split.

    ``data_for(fold_cfg)`` gives the prepared data of one fold (default ``prepare_data``; a
    study passes its data pool so nothing is decoded twice). Validation floors are the mean
    over folds, as a trial's value is; the test identities are the same in every fold.
    """
    start = time.perf_counter()
    device = resolve_device(device)
    encoder = build_backbone(cfg, device)  # weights that cannot be had fail before decoding
    datas = [data_for(c) for c in fold_configs(cfg)]
    digests = [d.splits.identity_lists()["digest"] for d in datas]
    features = {
        "pixels": pixel_features,
        "backbone": lambda images: backbone_features(encoder, images, cfg.eval_batch_size, device),
    }
    out: dict[str, tuple[float | None, float]] = {}
    for kind in KINDS:
        make = features[kind]
        vals = [
            _map(make(d.val.images).to(device), d.val.to(device), cfg)
            for d in datas
            if len(d.val.ids)
        ]
        test = _map(make(datas[0].test.images).to(device), datas[0].test.to(device), cfg)
        out[kind] = (sum(vals) / len(vals) if vals else None, test)
    return Floors(
        key=floors_key(cfg, digests),
        pixels=out["pixels"],
        backbone=out["backbone"],
        backbone_label=backbone_label(cfg),
        seconds=time.perf_counter() - start,
    )


def format_floors(floors: Floors) -> str:
    """A small table for a terminal."""
    rows = [("raw pixels", floors.pixels), (floors.backbone_label, floors.backbone)]
    width = max(len(name) for name, _ in rows)
    lines = [f"floors (no training; mAP, {len(rows)} kinds):"]
    for name, (val, test) in rows:
        v = "-" if val is None else f"{val:.4f}"
        lines.append(f"  {name:<{width}}  val {v:>6}  test {test:.4f}")
    lines.append(f"  key {floors.key}, {floors.seconds:.1f} s (inference only)")
    return "\n".join(lines)


__all__ = [
    "KINDS",
    "Floors",
    "backbone_features",
    "backbone_label",
    "build_backbone",
    "compute_floors",
    "floors_key",
    "fold_configs",
    "format_floors",
    "pixel_features",
]
