"""PromptSG assembled: image encoder -> inversion -> composed prompt -> fusion -> neck -> head.

Dimensions (E: joint embedding, W: text token width, N: patch tokens at 224 x 224):
RN50 E=1024, W=512, N=49; ViT-B-16 E=512, W=512, N=196; tiny-rn / tiny-vit E=64, W=64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from handreid.config import TrainConfig
from handreid.models.backbone import build_encoders, resolve_model_name
from handreid.models.fusion import MultimodalFusion
from handreid.models.heads import BNNeck, build_classifier
from handreid.models.prompt import InversionNetwork, PromptComposer, TextOut


class PromptSG(nn.Module):
    """Hand re-ID model; see ``build_model``.

    ResNet towers are put in channels_last memory format at build time (``Module.to`` keeps
    it) and their inputs are converted in ``forward``; ``to_device`` moves the model and
    re-applies the format, for callers that created the model elsewhere.
    """

    def __init__(
        self,
        image: nn.Module,
        inversion: InversionNetwork,
        composer: PromptComposer,
        fusion: MultimodalFusion,
        neck: BNNeck,
        classifier: nn.Module,
        inference_prompt: str = "composed",
    ) -> None:
        super().__init__()
        self.image = image
        self.inversion = inversion
        self.composer = composer
        self.fusion = fusion
        self.neck = neck
        self.classifier = classifier
        self.inference_prompt = inference_prompt
        if image.kind == "rn":
            image.to(memory_format=torch.channels_last)

    @property
    def embed_dim(self) -> int:
        return self.image.embed_dim

    @property
    def feat_dim(self) -> int:
        return self.neck.out_dim

    def forward(
        self, images: torch.Tensor, aspect_idx: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """images: (B, 3, H, W) normalised, aspect_idx: (B,) long, labels: (B,) long or None.

        Returns logits (B, C) (ArcFace margin applied when labels are given), feat (B, D) neck
        feature before BN, feat_bn (B, D), fused (B, E), image_embed (B, E) global image
        embedding, text_embed (B, E) composed-prompt text embedding.
        """
        image_embed, tokens = self.image(images)
        text = self.composer(self.inversion(image_embed), aspect_idx)
        fused = self.fusion(text.states, text.pad_mask, tokens)
        feat, feat_bn = self.neck(fused)
        return {
            "logits": self.classifier(feat_bn, labels),
            "feat": feat,
            "feat_bn": feat_bn,
            "fused": fused,
            "image_embed": image_embed,
            "text_embed": text.pooled,
        }

    @torch.no_grad()
    def extract(self, images: torch.Tensor, aspect_idx: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W), aspect_idx: (B,) -> L2-normalised fused feature (B, E).

        ``composed``: the pseudo-word comes from the image; ``simplified``: the cached
        placeholder-free prompt of each aspect. Call ``eval()`` first (BatchNorm, dropout).
        """
        image_embed, tokens = self.image(images)
        text = self._prompt(image_embed, aspect_idx)
        fused = self.fusion(text.states, text.pad_mask, tokens)
        return F.normalize(fused.float(), dim=-1)

    def _prompt(self, image_embed: torch.Tensor, aspect_idx: torch.Tensor) -> TextOut:
        if self.inference_prompt == "simplified":
            return self.composer.simplified(aspect_idx)
        return self.composer(self.inversion(image_embed), aspect_idx)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        """AdamW groups: ``clip_visual`` (trainable image-tower parameters, lr_clip_visual) and
        ``modules`` (inversion, fusion, reduction, BNNeck, classifier; lr_modules).

        Each is split in two dicts of the same name: weight_decay = cfg.weight_decay, and 0
        for parameters of one dimension (biases, BatchNorm/LayerNorm weights, ViT class
        embedding) and positional embeddings. Only trainable parameters appear, each once.
        """
        groups = []
        parts = (
            ("clip_visual", cfg.lr_clip_visual, [self.image]),
            ("modules", cfg.lr_modules, [self.inversion, self.fusion, self.neck, self.classifier]),
        )
        for name, lr, modules in parts:
            decay, no_decay = [], []
            for module in modules:
                for pname, p in module.named_parameters():
                    if p.requires_grad:
                        plain = p.ndim <= 1 or pname.endswith("positional_embedding")
                        (no_decay if plain else decay).append(p)
            groups.append(
                {"name": name, "params": decay, "lr": lr, "weight_decay": cfg.weight_decay}
            )
            groups.append({"name": name, "params": no_decay, "lr": lr, "weight_decay": 0.0})
        return groups

    def to_device(self, device: torch.device | str) -> PromptSG:
        """Move to ``device``, keeping ResNet towers channels_last."""
        self.to(device)
        if self.image.kind == "rn":
            self.image.to(memory_format=torch.channels_last)
        return self


def build_model(
    cfg: TrainConfig, num_classes: int, aspects: Sequence[str], *, quick_gelu: bool | None = None
) -> PromptSG:
    """PromptSG for ``cfg`` with ``num_classes`` identities; ``aspects`` are the data's ordered
    aspect names (``aspect_idx`` indexes them), ``("",)`` for data without aspects.

    The text tower is always frozen; ``unfreeze_blocks`` picks what of the image tower
    trains (see ``ImageEncoder``), and ``lr_clip_visual: 0`` freezes the whole image tower
    so that no gradient is computed for it. ``quick_gelu`` overrides the activation implied by
    ``pretrained`` (used when rebuilding a checkpoint without its original weights).
    """
    name = resolve_model_name(cfg.open_clip_name)
    image, text = build_encoders(
        name,
        cfg.pretrained,
        cfg.image_size,
        cfg.unfreeze_blocks,
        train_tower=cfg.lr_clip_visual > 0,
        quick_gelu=quick_gelu,
    )
    composer = PromptComposer(text, name, cfg.prompt_template, tuple(aspects))
    neck = BNNeck(image.embed_dim, cfg.bnneck_reduction, cfg.bnneck_dim)
    return PromptSG(
        image=image,
        inversion=InversionNetwork(image.embed_dim, text.width),
        composer=composer,
        fusion=MultimodalFusion(text.embed_dim, cfg.transformer_layers, cfg.dropout),
        neck=neck,
        classifier=build_classifier(
            cfg.classifier, neck.out_dim, num_classes, cfg.arcface_scale, cfg.arcface_margin
        ),
        inference_prompt=cfg.inference_prompt,
    )


__all__ = ["PromptSG", "build_model"]


def uses_quick_gelu(model: nn.Module) -> bool:
    """Whether the towers were built with QuickGELU (OpenAI weights) rather than nn.GELU."""
    return any(type(m).__name__ == "QuickGELU" for m in model.modules())
