"""PromptSG model: open_clip backbone, inversion + prompt composer, fusion, neck and heads.

Importing this package registers the tiny open_clip towers ``tiny-vit`` and ``tiny-rn``.
"""

from __future__ import annotations

from handreid.models.tiny import TINY_CONFIGS, register_tiny_models

register_tiny_models()

from handreid.models.backbone import (  # noqa: E402 - the tiny towers must be registered first
    MODEL_NAMES,
    ImageEncoder,
    TextEncoder,
    build_encoders,
    load_clip,
    resolve_model_name,
)
from handreid.models.fusion import MultimodalFusion  # noqa: E402
from handreid.models.heads import ArcFace, BNNeck, LinearClassifier, build_classifier  # noqa: E402
from handreid.models.prompt import InversionNetwork, PromptComposer, TextOut, render_prompt  # noqa: E402
from handreid.models.promptsg import PromptSG, build_model  # noqa: E402

__all__ = [
    "MODEL_NAMES",
    "TINY_CONFIGS",
    "ArcFace",
    "BNNeck",
    "ImageEncoder",
    "InversionNetwork",
    "LinearClassifier",
    "MultimodalFusion",
    "PromptComposer",
    "PromptSG",
    "TextEncoder",
    "TextOut",
    "build_classifier",
    "build_encoders",
    "build_model",
    "load_clip",
    "register_tiny_models",
    "render_prompt",
    "resolve_model_name",
]
