"""Tiny open_clip towers for tests and demos: the RN50 / ViT-B-16 code paths at toy size.

They are registered in open_clip's own model-config registry, so ``open_clip.create_model``
builds them exactly like the full-size models. The text tower keeps the real 77-token
context and 49,408-word vocabulary, so the standard CLIP tokenizer works unchanged.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import open_clip

_TEXT_CFG: dict[str, Any] = {
    "context_length": 77,
    "vocab_size": 49408,
    "width": 64,
    "heads": 4,
    "layers": 2,
}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # ViT: 64 px, 8 px patches -> 8 x 8 grid, 2 blocks of width 64 (2 heads).
    "tiny-vit": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 8,
            "mlp_ratio": 2.0,
        },
        "text_cfg": dict(_TEXT_CFG),
    },
    # ModifiedResNet: one bottleneck per stage, stem width 16 -> layer4 has 512 channels,
    # 64 px -> 2 x 2 map; attnpool with 8 heads of width 64 projects to 64.
    "tiny-rn": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 64,
            "layers": [1, 1, 1, 1],
            "width": 16,
            "head_width": 64,
            "patch_size": None,
        },
        "text_cfg": dict(_TEXT_CFG),
    },
}


def register_tiny_models() -> None:
    """Make ``tiny-vit`` and ``tiny-rn`` known to ``open_clip.create_model`` (idempotent)."""
    registry = getattr(getattr(open_clip, "factory", None), "_MODEL_CONFIGS", None)
    if isinstance(registry, dict):
        # What add_model_config does after reading a JSON file, without writing one.
        for name, cfg in TINY_CONFIGS.items():
            registry[name] = copy.deepcopy(cfg)
        return
    # Fallback for open_clip versions without the module-level registry: the public API.
    folder = Path(tempfile.mkdtemp(prefix="handreid-tiny-clip-"))
    for name, cfg in TINY_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


__all__ = ["TINY_CONFIGS", "register_tiny_models"]
