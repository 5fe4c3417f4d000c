"""Inversion network (image embedding -> pseudo-word) and the prompt composer.

The composer tokenises the template once per aspect at construction. At each step it looks
up the token embeddings, overwrites the placeholder position with the pseudo-word and runs
the frozen text transformer *with* autograd, so the loss trains the inversion network
through the text encoder.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import open_clip
import torch
from torch import nn

from handreid.config import check_template
from handreid.errors import ConfigError
from handreid.models.backbone import TextEncoder

# Two one-token words: the placeholder's position is where their tokenisations differ.
_PROBES = ("x", "y")


class InversionNetwork(nn.Module):
    """Global image embedding (B, E) -> one pseudo-word token embedding (B, W).

    Linear(E, 512) - ReLU - Linear(512, 512) - ReLU - Linear(512, W) - BatchNorm1d(W).
    """

    def __init__(self, embed_dim: int, token_width: int, hidden: int = 512) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, token_width),
            nn.BatchNorm1d(token_width),
        )

    def forward(self, image_embed: torch.Tensor) -> torch.Tensor:
        """image_embed: (B, E) -> pseudo-word (B, W)."""
        return self.mlp(image_embed)


class TextOut(NamedTuple):
    """states: (B, L, E) token states in the joint space; pad_mask: (B, L) bool, True after
    the EOT token; pooled: (B, E) the EOT state (CLIP's text embedding)."""

    states: torch.Tensor
    pad_mask: torch.Tensor
    pooled: torch.Tensor


def render_prompt(template: str, aspect: str, word: str) -> str:
    """Fill ``template`` for one aspect, with ``word`` at the placeholder.

    ``{}`` is the placeholder and ``{aspect}`` the aspect words. A template without ``{}``
    gets the placeholder right before ``{aspect}``; without either, at the end, before a final
    period. Whitespace left by empty fields is collapsed. Unknown fields -> ConfigError.
    """
    fields = check_template(template)
    if "" in fields:
        text = template.format(word, aspect=aspect)
    elif "aspect" in fields:
        text = template.format(aspect=f"{word} {aspect}")
    else:
        text = template.format()
        text = text[:-1] + f" {word}." if text.rstrip().endswith(".") else f"{text} {word}"
    text = " ".join(text.split())
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


@functools.lru_cache(maxsize=8)
@functools.lru_cache(maxsize=8)  # building the BPE tokenizer costs ~0.2 s per model
def _tokenizer(model_name: str) -> Callable[[list[str]], torch.Tensor]:
    return open_clip.get_tokenizer(model_name)


def tokenize_prompts(
    template: str,
    aspects: Sequence[str],
    tokenizer: Callable[[list[str]], torch.Tensor],
    context_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (A, context_length) with the placeholder word, and its position (A,)."""
    probes = [tokenizer([render_prompt(template, a, w) for a in aspects]) for w in _PROBES]
    ids, other = (p[:, :context_length] for p in probes)
    diff = ids != other
    pos = diff.float().argmax(dim=1)
    words = tokenizer(list(_PROBES))[:, 1]  # each probe alone: one whole-word token
    rows = torch.arange(len(ids))
    whole = (ids[rows, pos] == words[0]) & (other[rows, pos] == words[1])
    if not bool(((diff.sum(dim=1) == 1) & whole).all()):
        raise ConfigError(
            f"prompt_template={template!r}: the {{}} placeholder must stand as a word of its own "
            "(spaces or punctuation around it)"
        )
    if bool(((ids != 0).sum(dim=1) >= context_length).any()):
        raise ConfigError(
            f"prompt_template={template!r} is too long for the {context_length}-token text encoder"
        )
    return ids, pos


def _valid_length(ids: torch.Tensor) -> torch.Tensor:
    """(A, L) ids padded with 0 -> (A,) tokens up to and including EOT."""
    return (ids != 0).sum(dim=1)


class PromptComposer(nn.Module):
    """Composes ``template`` per aspect with a pseudo-word and encodes it with the text tower.

    Token ids are registered buffers made once. Because the CLIP text transformer is causal
    (tokens after EOT cannot change earlier ones), sequences are cut to the longest valid
    length among the aspects (77 -> about 12 tokens); a non-causal tower keeps all tokens.

    ``simplified(aspect_idx)`` encodes the template with the placeholder removed, once per
    aspect without gradients, and caches the result per device (cleared when weights load).
    """

    def __init__(
        self, text: TextEncoder, model_name: str, template: str, aspects: Sequence[str]
    ) -> None:
        super().__init__()
        if not aspects:
            raise ConfigError("the prompt composer needs at least one aspect ('' for none)")
        self.text = text
        self.template = template
        self.aspects = tuple(aspects)
        tokenizer = _tokenizer(model_name)
        n = text.context_length
        ids, pos = tokenize_prompts(template, self.aspects, tokenizer, n)
        plain = tokenizer([render_prompt(template, a, "") for a in self.aspects])[:, :n]
        self.register_buffer("ids", self._truncate(ids), persistent=False)
        self.register_buffer("placeholder_pos", pos, persistent=False)
        self.register_buffer("plain_ids", self._truncate(plain), persistent=False)
        self._cache: dict[str, TextOut] = {}  # "device/dtype" -> TextOut (A, L, ...)
        self._register_load_state_dict_pre_hook(lambda *args, **kwargs: self._cache.clear())

    def _truncate(self, ids: torch.Tensor) -> torch.Tensor:
        return ids[:, : int(_valid_length(ids).max())] if self.text.causal else ids

    @property
    def prompts(self) -> list[str]:
        """The composed prompts per aspect, ``*`` marking the pseudo-word (for logs)."""
        return [render_prompt(self.template, a, "*") for a in self.aspects]

    def forward(self, pseudo: torch.Tensor, aspect_idx: torch.Tensor) -> TextOut:
        """pseudo: (B, W) pseudo-word embeddings, aspect_idx: (B,) long -> TextOut (B, L, ...)."""
        ids = self.ids[aspect_idx]  # (B, L)
        embeds = self.text.embed(ids)
        at = torch.arange(ids.shape[1], device=ids.device) == self.placeholder_pos[aspect_idx, None]
        embeds = torch.where(at[..., None], pseudo[:, None, :].to(embeds.dtype), embeds)
        states, pooled = self.text(embeds, ids)
        return TextOut(states, self._pad_mask(ids), pooled)

    def simplified(self, aspect_idx: torch.Tensor) -> TextOut:
        """The placeholder-free prompt's TextOut for each sample (B, L, ...), from the cache."""
        out = self.encode_simplified()
        return TextOut(out.states[aspect_idx], out.pad_mask[aspect_idx], out.pooled[aspect_idx])

    def encode_simplified(self) -> TextOut:
        """TextOut (A, L, ...) of the placeholder-free prompt per aspect; computed once per device."""
        ids = self.plain_ids
        key = f"{ids.device}/{self.text.token_embedding.weight.dtype}"
        if key not in self._cache:
            # fp32 and outside autocast: the cache must not depend on the first caller's context.
            with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
                states, pooled = self.text(self.text.embed(ids), ids)
            self._cache[key] = TextOut(states, self._pad_mask(ids), pooled)
        return self._cache[key]

    @staticmethod
    def _pad_mask(ids: torch.Tensor) -> torch.Tensor:
        return torch.arange(ids.shape[1], device=ids.device) >= _valid_length(ids)[:, None]


__all__ = ["InversionNetwork", "PromptComposer", "TextOut", "render_prompt", "tokenize_prompts"]
