"""open_clip backbone: build the CLIP model, adapt its image size, split it into two encoders.

``load_clip`` creates the model with ``open_clip.create_model`` (weights from an open_clip tag,
a local checkpoint or none), then resizes the image tower's positional embeddings to the
requested ``[h, w]`` once, in 2-D. ``ImageEncoder`` returns a global embedding and patch
tokens, both in the joint embedding space E; ``TextEncoder`` is the frozen text transformer
run on token *embeddings*, so a pseudo-word can be spliced in with gradients flowing through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer, text_global_pool
from torch import nn

from handreid.config import MODEL_ALIASES
from handreid.errors import ModelError
from handreid.models.tiny import TINY_CONFIGS

MODEL_NAMES = (*MODEL_ALIASES, *TINY_CONFIGS)
_NO_WEIGHTS = ("", "none")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


# ---- model name and weights ----------------------------------------------------------------
def resolve_model_name(model: str) -> str:
    """``rn50`` -> ``RN50``; any name open_clip knows passes through; others -> ModelError."""
    name = MODEL_ALIASES.get(model, model)
    if name.startswith(("hf-hub:", "local-dir:")) or open_clip.get_model_config(name) is not None:
        return name
    raise ModelError(
        f"unknown model {model!r}; choose one of {list(MODEL_NAMES)} "
        "or any name in open_clip.list_models() (e.g. 'ViT-B-32', 'RN101')"
    )


def _offline_reason(host: str) -> str | None:
    """Why downloads cannot work (offline mode set, host unreachable), or None."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    try:  # one quick probe instead of the libraries' minute of retries
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return f"{host} is unreachable"
    return None


def _cached_weights(pcfg: dict) -> str | None:
    """The local file holding an open_clip tag's weights, if already downloaded."""
    if pcfg.get("file"):
        return pcfg["file"]
    hub = pcfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            # Same file choice as open_clip.download_pretrained: 'org/repo/' means the default
            # file name, and a .safetensors twin is preferred.
            repo, filename = os.path.split(hub)
            filename = filename or "open_clip_pytorch_model.bin"
            stem = filename.rsplit(".", 1)[0]
            candidates = ["open_clip_model.safetensors", f"{stem}.safetensors", filename]
            for candidate in candidates:
                hit = try_to_load_from_cache(repo_id=repo, filename=candidate)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = pcfg.get("url", "")
    if url:
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def _download(name: str, tag: str, pcfg: dict) -> str:
    cached = _cached_weights(pcfg)
    if cached:
        return cached
    host = "huggingface.co" if pcfg.get("hf_hub") else urlparse(pcfg.get("url", "")).hostname
    hint = "pass a local checkpoint path as pretrained, or pretrained: none for random weights"
    reason = _offline_reason(host or "huggingface.co")
    if reason:
        raise ModelError(
            f"pretrained weights {name}:{tag} are not in the local cache and cannot be downloaded "
            f"({reason}); {hint}"
        )
    try:
        return open_clip.download_pretrained(pcfg)
    except Exception as exc:  # noqa: BLE001 - any download failure is one user-facing line
        raise ModelError(
            f"downloading weights {name}:{tag} failed ({type(exc).__name__}); {hint}"
        ) from None


def _resolve_weights(name: str, pretrained: str) -> tuple[str | None, bool]:
    """``(checkpoint file or None, quick_gelu)`` for a tag, a path or ``none``."""
    if pretrained.strip().lower() in _NO_WEIGHTS:
        return None, False
    if os.path.isfile(pretrained):
        return pretrained, False
    if os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise ModelError(f"pretrained={pretrained!r}: checkpoint file not found")
    pcfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelError(
            f"pretrained={pretrained!r} is neither a file nor an open_clip tag of {name} "
            f"(tags: {tags}); use a tag, a local checkpoint path, or none"
        )
    # OpenAI weights were trained with QuickGELU; building with nn.GELU would silently differ.
    return _download(name, pretrained, pcfg), bool(pcfg.get("quick_gelu", False))


def load_clip(
    model: str, pretrained: str, image_size: Sequence[int], quick_gelu: bool | None = None
) -> nn.Module:
    """An open_clip CLIP model with weights loaded and the image tower resized to ``image_size``.

    ``pretrained``: an open_clip tag (``openai``; only the local cache is used when offline),
    a ``torch.save``-d open_clip state_dict (plain or under ``"state_dict"``), or ``none``/``""``
    for random weights. Failures are one-line ModelErrors, raised within seconds.
    ``hf-hub:`` / ``local-dir:`` names bring their own weights; ``pretrained`` is ignored.
    ``quick_gelu`` overrides the activation the weights' tag implies (a reloaded checkpoint
    must be rebuilt with the activation it was trained with).
    """
    name = resolve_model_name(model)
    schema = name.startswith(("hf-hub:", "local-dir:"))
    path, tag_quick_gelu = (None, False) if schema else _resolve_weights(name, pretrained)
    quick_gelu = tag_quick_gelu if quick_gelu is None else quick_gelu
    try:
        with _quiet_random_init(path is None and not schema):
            clip = open_clip.create_model(name, pretrained=path, force_quick_gelu=quick_gelu)
    except Exception as exc:  # noqa: BLE001 - bad checkpoints surface as many exception types
        source = (
            f"checkpoint {path}" if path else ("its own weights" if schema else "random weights")
        )
        raise ModelError(f"cannot build {name} from {source}: {_explain(exc)}") from None
    _check_supported(clip, name)
    resize_image_tower(clip.visual, image_size)
    return clip


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """Random weights were asked for (``pretrained: none``): drop open_clip's warning about them."""

    def drop(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    if active:
        root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _explain(exc: Exception) -> str:
    """One short line for a failed create_model / checkpoint load."""
    text = " ".join(str(exc).split())
    if "Error(s) in loading state_dict" in text:
        detail = text.split(":", 1)[-1].strip()
        return f"its parameters do not match this architecture ({detail[:160]}...)"
    if isinstance(exc, (pickle.UnpicklingError, EOFError)) or "Weights only load failed" in text:
        return "not a readable PyTorch state_dict file"
    return text[:200] or type(exc).__name__


def _check_supported(clip: nn.Module, name: str) -> None:
    visual = clip.visual
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
            raise ModelError(f"{name}: attentional-pool ViT towers are not supported")
    elif not isinstance(visual, ModifiedResNet):
        raise ModelError(f"{name}: only ViT and ModifiedResNet image towers are supported")
    text = _text_tower(clip)
    if text is None or getattr(text, "cls_emb", None) is not None:
        raise ModelError(f"{name}: only the standard CLIP text transformer is supported")


def _text_tower(clip: nn.Module) -> nn.Module | None:
    """The module holding token_embedding ... text_projection (CLIP or CustomTextCLIP)."""
    for module in (clip, getattr(clip, "text", None)):
        if module is not None and isinstance(
            getattr(module, "token_embedding", None), nn.Embedding
        ):
            return module
    return None


# ---- image size ----------------------------------------------------------------------------
def _resize_grid(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """(1 + old_h*old_w, C) -> (1 + new_h*new_w, C): leading token kept, grid bicubic in 2-D."""
    lead, grid = pos[:1], pos[1:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, old[0], old[1], channels).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], channels).to(pos.dtype)
    return torch.cat([lead, grid])


def resnet_grid(image_size: Sequence[int]) -> tuple[int, int]:
    """layer4 map size of a ModifiedResNet: stride-2 conv (padding 1), then 4 floor-halvings."""

    def side(n: int) -> int:
        n = (n + 1) // 2
        for _ in range(4):
            n //= 2
        return n

    return side(image_size[0]), side(image_size[1])


def resize_image_tower(visual: nn.Module, image_size: Sequence[int]) -> None:
    """Replace the positional embeddings for ``image_size`` = (h, w); a no-op at native size.

    ViT: the patch grid (class token kept); ModifiedResNet: attnpool's spatial grid (its
    mean-token entry kept). Both interpolate in 2-D, bicubic, and update ``image_size`` /
    ``grid_size`` so open_clip's own forward agrees.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if isinstance(visual, VisionTransformer):
        ph, pw = visual.patch_size
        new = (h // ph, w // pw)
        if min(new) < 1:
            raise ModelError(f"image_size={[h, w]} is smaller than one {ph}x{pw} patch")
        if new != tuple(visual.grid_size):
            pos = visual.positional_embedding
            resized = _resize_grid(pos.detach(), tuple(visual.grid_size), new)
            visual.positional_embedding = nn.Parameter(resized, requires_grad=pos.requires_grad)
        visual.grid_size = new
        visual.image_size = (h, w)
        return
    pool = visual.attnpool
    old_side = math.isqrt(pool.positional_embedding.shape[0] - 1)
    new = resnet_grid((h, w))
    if min(new) < 1:
        raise ModelError(
            f"image_size={[h, w]} is too small for a ResNet tower (at least 32 px a side)"
        )
    if new != (old_side, old_side):
        resized = _resize_grid(pool.positional_embedding.detach(), (old_side, old_side), new)
        pool.positional_embedding = nn.Parameter(resized)
    visual.image_size = (h, w)
    visual.grid_size = new


# ---- encoders ------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """The CLIP image tower returning ``(global (B, E), patch tokens (B, N, E))``.

    ViT: ``ln_post`` on every token then ``@ proj``; the global embedding is the class token
    (or the patch mean for ``pool_type: avg``), exactly what open_clip's forward returns.
    ModifiedResNet: the global embedding is attnpool's output; patch tokens are the layer4
    positions (plus attnpool's positional embedding) through attnpool's ``v_proj`` and
    ``c_proj``, i.e. the per-position values attnpool averages, in the same space E.

    ``set_trainable(unfreeze_blocks)``:
      * ``<= 0`` (or at least the number of blocks/stages): the whole image tower trains.
      * ViT ``N > 0``: the last N resblocks plus ``ln_post`` and ``proj`` train; the patch
        embedding, class/positional embeddings, ``ln_pre`` and earlier blocks are frozen.
      * ResNet ``N > 0``: the last N of ``layer1..layer4`` plus ``attnpool`` (positional
        embedding, q/k/v/c projections) train; the stem and earlier stages are frozen, and
        their BatchNorm layers stay in eval mode so their running statistics stay fixed.
      * ``train_tower=False`` freezes the whole tower (used when ``lr_clip_visual`` is 0).
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.kind = "vit" if isinstance(visual, VisionTransformer) else "rn"
        self.embed_dim = int(visual.output_dim)
        self.grid = tuple(getattr(visual, "grid_size", resnet_grid(_as_pair(visual.image_size))))
        self.num_patches = self.grid[0] * self.grid[1]
        self.image_size = _as_pair(visual.image_size)
        self._frozen_bn: list[nn.Module] = []

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) normalised -> global (B, E), patch tokens (B, N, E)."""
        if self.kind == "vit":
            return self._forward_vit(images)
        return self._forward_rn(images)

    def _forward_vit(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)  # (B, N, width)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        x = v.transformer(x)
        if not v.final_ln_after_pool:
            x = v.ln_post(x)
        pooled = x[:, 0] if v.pool_type == "tok" else x[:, 1:].mean(dim=1)
        tokens = x[:, 1:]
        if v.final_ln_after_pool:
            pooled, tokens = v.ln_post(pooled), v.ln_post(tokens)
        if v.proj is not None:
            pooled, tokens = pooled @ v.proj, tokens @ v.proj
        return pooled, tokens

    def _forward_rn(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.visual
        if v.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))  # (B, C, h, w)
        pool = v.attnpool
        pooled = pool(x)
        tokens = x.flatten(2).transpose(1, 2) + pool.positional_embedding[1:].to(x.dtype)
        return pooled, pool.c_proj(pool.v_proj(tokens))

    # ---- what trains ------------------------------------------------------------------------
    def set_trainable(self, unfreeze_blocks: int, train_tower: bool = True) -> None:
        """Set requires_grad on the tower's parameters (rule in the class docstring)."""
        v = self.visual
        blocks = (
            list(v.transformer.resblocks)
            if self.kind == "vit"
            else [v.layer1, v.layer2, v.layer3, v.layer4]
        )
        whole = train_tower and (unfreeze_blocks <= 0 or unfreeze_blocks >= len(blocks))
        for p in v.parameters():
            p.requires_grad_(whole)
        self._frozen_bn = []
        if whole or not train_tower:
            if not train_tower:
                self._frozen_bn = [
                    m for m in v.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                ]
            self.train(self.training)
            return
        head = [v.ln_post] if self.kind == "vit" else [v.attnpool]
        for module in (*blocks[-unfreeze_blocks:], *head):
            module.requires_grad_(True)
        if self.kind == "vit" and v.proj is not None:
            v.proj.requires_grad_(True)
        if self.kind == "rn":
            frozen = [v.conv1, v.bn1, v.conv2, v.bn2, v.conv3, v.bn3, *blocks[:-unfreeze_blocks]]
            self._frozen_bn = [
                m
                for f in frozen
                for m in f.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ]
        self.train(self.training)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        for bn in self._frozen_bn:  # frozen stages keep their pretrained statistics
            bn.eval()
        return self


class TextEncoder(nn.Module):
    """The frozen CLIP text transformer, fed token embeddings instead of token ids.

    Parameters never train (requires_grad False) but no ``no_grad`` is used, so gradients
    reach whatever produced the input embeddings (the inversion network's pseudo-word).
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        text = _text_tower(clip)
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        self.pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
        self.eos_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
        self.context_length = int(self.positional_embedding.shape[0])
        self.width = int(self.token_embedding.embedding_dim)
        self.embed_dim = _projected_dim(self.text_projection, self.width)
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def causal(self) -> bool:
        """Whether later tokens cannot affect earlier ones (so sequences may be truncated)."""
        return self.attn_mask is not None and self.pool_type in ("argmax", "eos")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L) long -> token embeddings (B, L, W)."""
        return self.token_embedding(ids)

    def forward(self, embeds: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """embeds: (B, L, W), ids: (B, L) -> states (B, L, E) after ln_final and the text
        projection, and the pooled text embedding (B, E) (EOT token, as CLIP.encode_text)."""
        n = ids.shape[1]
        x = embeds + self.positional_embedding[:n].to(embeds.dtype)
        mask = None if self.attn_mask is None else self.attn_mask[:n, :n]
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        # Pool before projecting, as CLIP.encode_text does, so the pooled value matches it bitwise.
        pooled = text_global_pool(x, ids, self.pool_type, eos_token_id=self.eos_id)
        return self._project(x), self._project(pooled)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


def _projected_dim(projection: nn.Module | torch.Tensor | None, width: int) -> int:
    if projection is None:
        return width
    if isinstance(projection, nn.Linear):
        return projection.out_features
    return int(projection.shape[1])


def _as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def build_encoders(
    model: str,
    pretrained: str,
    image_size: Sequence[int],
    unfreeze_blocks: int = 0,
    train_tower: bool = True,
    quick_gelu: bool | None = None,
) -> tuple[ImageEncoder, TextEncoder]:
    """Load the CLIP model and return its image encoder (trainability set) and frozen text encoder."""
    clip = load_clip(model, pretrained, image_size, quick_gelu)
    image = ImageEncoder(clip.visual)
    image.set_trainable(unfreeze_blocks, train_tower)
    return image, TextEncoder(clip)


__all__ = [
    "MODEL_NAMES",
    "ImageEncoder",
    "TextEncoder",
    "build_encoders",
    "load_clip",
    "resize_image_tower",
    "resnet_grid",
    "resolve_model_name",
]
