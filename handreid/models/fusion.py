"""Multimodal interaction: prompt token states attend to image patch tokens.

``transformer_layers`` = 1 cross-attention block (queries: the prompt's token states; keys and
values: the image's patch tokens) followed by ``transformer_layers - 1`` self-attention blocks
over the prompt tokens, then a mean over the valid (non-padded) prompt tokens. Every input
moves the output: the patch tokens through attention values and weights, the prompt (and so
the template, the aspect and the pseudo-word) through the queries and residual path.
"""

from __future__ import annotations

import torch
from torch import nn

from handreid.errors import ConfigError


def _mlp(dim: int, ratio: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, dim * ratio), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ratio, dim)
    )


class CrossAttentionBlock(nn.Module):
    """Post-norm block: x = LN(q + Attn(q, kv, kv)); x = LN(x + MLP(x)).

    The patch tokens get their own LayerNorm first: RN tokens (attnpool values) and ViT tokens
    differ widely in scale, and unnormalised keys would saturate the softmax.
    """

    def __init__(self, dim: int, heads: int, dropout: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """queries: (B, L, E) prompt states, tokens: (B, N, E) patch tokens -> (B, L, E)."""
        kv = self.norm_kv(tokens)
        attended, _ = self.attn(queries, kv, kv, need_weights=False)
        x = self.norm1(queries + self.drop(attended))
        return self.norm2(x + self.drop(self.mlp(x)))


class SelfAttentionBlock(nn.Module):
    """Post-norm self-attention over prompt tokens; padded tokens are never attended to."""

    def __init__(self, dim: int, heads: int, dropout: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, E), pad_mask: (B, L) bool, True = padding -> (B, L, E)."""
        attended, _ = self.attn(x, x, x, key_padding_mask=pad_mask, need_weights=False)
        x = self.norm1(x + self.drop(attended))
        return self.norm2(x + self.drop(self.mlp(x)))


def masked_mean(x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """x: (B, L, E), pad_mask: (B, L) True = padding -> mean over valid tokens (B, E)."""
    keep = (~pad_mask).to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


class MultimodalFusion(nn.Module):
    """1 cross-attention block + (layers - 1) self-attention blocks + masked mean pooling.

    ``heads`` defaults to E // 64 (at least 1): 8 for ViT-B-16 (E=512), 16 for RN50 (E=1024).
    """

    def __init__(self, dim: int, layers: int, dropout: float, heads: int | None = None) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"transformer_layers={layers} is out of range; it must be at least 1")
        heads = heads or max(1, dim // 64)
        self.cross = CrossAttentionBlock(dim, heads, dropout)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim, heads, dropout) for _ in range(layers - 1)
        )

    def forward(
        self, states: torch.Tensor, pad_mask: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """states: (B, L, E) prompt token states, pad_mask: (B, L) True = padding,
        tokens: (B, N, E) image patch tokens -> fused feature (B, E)."""
        x = self.cross(states, tokens)
        for block in self.blocks:
            x = block(x, pad_mask)
        return masked_mean(x, pad_mask)


__all__ = ["CrossAttentionBlock", "MultimodalFusion", "SelfAttentionBlock", "masked_mean"]
