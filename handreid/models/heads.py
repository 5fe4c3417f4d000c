"""Neck (optional reduction + BNNeck) and identity classifiers (Linear or ArcFace)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from handreid.errors import ConfigError


class BNNeck(nn.Module):
    """fused (B, E) -> (feat (B, D), feat_bn (B, D)).

    ``reduction``: Linear(E, D) first (D = ``dim``); otherwise D = E. The BatchNorm bias is
    frozen at zero (the usual BNNeck: BN only rescales, so the classifier's hyperplanes
    pass through the origin); its weight trains.
    """

    def __init__(self, in_dim: int, reduction: bool, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ConfigError(f"bnneck_dim={dim} is out of range; it must be a positive integer")
        self.reduce = nn.Linear(in_dim, dim) if reduction else nn.Identity()
        self.out_dim = dim if reduction else in_dim
        self.bn = nn.BatchNorm1d(self.out_dim)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, E) -> feat (B, D) before BN (triplet loss), feat_bn (B, D) (classifier)."""
        feat = self.reduce(x)
        return feat, self.bn(feat)


class LinearClassifier(nn.Module):
    """Bias-free Linear(D, C); ``labels`` are accepted and ignored (same call as ArcFace)."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, D) -> logits (B, C)."""
        return self.fc(x)


class ArcFace(nn.Module):
    """Additive angular margin: logits = s*cos(theta + m) for the target class, s*cos(theta)
    for the others; s*cos(theta) for every class without labels (evaluation).

    cos(theta + m) is computed as cos*cos(m) - sin*sin(m) with sin = sqrt(clamp(1 - cos^2,
    min=eps)), which stays finite (value and gradient) at theta = 0 and pi. Where theta + m
    would pass pi (cos < cos(pi - m)) the target logit falls back to cos - m*sin(m), the
    usual InsightFace rule that keeps the margin logit decreasing in theta. Computed in fp32.
    """

    eps = 1e-7

    def __init__(self, in_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        if not 0.0 <= margin < math.pi / 2:
            raise ConfigError(
                f"arcface_margin={margin!r} is out of range; allowed [0, {math.pi / 2})"
            )
        if not scale > 0 or math.isinf(scale):
            raise ConfigError(
                f"arcface_scale={scale!r} is out of range; it must be a positive number"
            )
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = float(scale), float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, D), labels: (B,) long or None -> logits (B, C) in fp32."""
        with torch.autocast(x.device.type, enabled=False):
            cos = F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))
            cos = cos.clamp(-1.0, 1.0)
            if labels is None:
                return self.scale * cos
            sin = torch.sqrt((1.0 - cos * cos).clamp_min(self.eps))
            phi = cos * self.cos_m - sin * self.sin_m
            phi = torch.where(cos > self.th, phi, cos - self.mm)
            # a comparison, not F.one_hot: one_hot may read label values back to the host
            target = labels[:, None] == torch.arange(cos.shape[1], device=labels.device)
            return self.scale * torch.where(target, phi, cos)


def build_classifier(
    kind: str, in_dim: int, num_classes: int, scale: float, margin: float
) -> nn.Module:
    """``linear`` or ``arcface`` classifier on (B, in_dim) features."""
    if num_classes < 1:
        raise ConfigError(
            f"num_classes={num_classes}: the training data needs at least one identity"
        )
    if kind == "linear":
        return LinearClassifier(in_dim, num_classes)
    if kind == "arcface":
        return ArcFace(in_dim, num_classes, scale, margin)
    raise ConfigError(f"classifier={kind!r} is not allowed; choose one of ['linear', 'arcface']")


__all__ = ["ArcFace", "BNNeck", "LinearClassifier", "build_classifier"]
