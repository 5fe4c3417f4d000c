"""Best-model checkpoints: the resolved config, class count, aspects and weights together."""

from __future__ import annotations

from pathlib import Path

import torch

from handreid.config import TrainConfig
from handreid.errors import UserError

FORMAT = 1


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    cfg: TrainConfig,
    *,
    num_classes: int,
    aspects: tuple[str, ...],
    val: dict | None = None,
) -> None:
    """Write atomically so an interrupted run never leaves a truncated checkpoint."""
    from handreid.models.promptsg import uses_quick_gelu

    path = Path(path)
    state = {
        k: v.detach().cpu() for k, v in getattr(model, "_orig_mod", model).state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "num_classes": num_classes,
        # the activation is no parameter: rebuilding OpenAI-weight towers needs QuickGELU again
        "quick_gelu": uses_quick_gelu(model),
        "aspects": list(aspects),
        "val": val or {},
        "state_dict": state,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Return ``(model, cfg, payload)``; the model is built without downloading weights."""
    from handreid.models import build_model

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise UserError(f"{path}: not a handreid checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a handreid checkpoint (format {FORMAT} expected)")
    cfg = TrainConfig.from_dict(payload["config"], source=str(path))
    # The stored weights replace everything, so skip fetching the pretrained ones.
    model = build_model(
        cfg.replace(pretrained="none"),
        payload["num_classes"],
        tuple(payload["aspects"]),
        quick_gelu=bool(payload.get("quick_gelu", False)),
    )
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), cfg, payload
