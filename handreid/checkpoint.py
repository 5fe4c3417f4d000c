"""Best-model checkpoints (the resolved config, class count, aspects and weights together) and
the run folder that holds them."""

from __future__ import annotations

from pathlib import Path

import torch

from handreid.config import TrainConfig
from handreid.errors import UserError
from handreid.evaluation import METRICS

# the run folder and atomic writes live in handreid.files (no torch); kept importable here
from handreid.files import (
    RUN_FILES,
    atomic_file,
    check_checkpoint_path,
    check_run_folder,
    write_run_folder,
)

__all__ = [
    "FORMAT",
    "RUN_FILES",
    "atomic_file",
    "check_run_folder",
    "compare_stored_test",
    "format_comparison",
    "load_checkpoint",
    "save_checkpoint",
    "write_run_folder",
]

FORMAT = 1
# The same model, images and device give the same floats; this only absorbs float noise, so
# any difference a user could see in the printed percentages is reported.
TOLERANCE = 1e-6


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    cfg: TrainConfig,
    *,
    num_classes: int,
    aspects: tuple[str, ...],
    val: dict | None = None,
    test: dict | None = None,
) -> None:
    """Write atomically so an interrupted run never leaves a truncated checkpoint.

    ``val`` and ``test`` are the model's metrics when saved (best epoch's validation, test
    report), kept so that ``handreid evaluate --checkpoint`` can be checked against them.
    """
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
        "test": test or {},
        "state_dict": state,
    }
    with atomic_file(path) as f:
        try:
            torch.save(payload, f)
        except RuntimeError as exc:
            # torch's zip writer turns the file's OSError (a full disk) into "enforce fail at
            # inline_container.cc"; the OSError it was handling says what happened
            os_error = _os_error_in(exc)
            if os_error is None:
                raise
            raise os_error from None


def _os_error_in(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen:
        if isinstance(chain, OSError):
            return chain
        seen.add(id(chain))
        chain = chain.__cause__ or chain.__context__
    return None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Return ``(model, cfg, payload)``; the model is built without downloading weights."""
    from handreid.models import build_model

    path = Path(path)
    check_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise UserError(f"{path}: not a handreid checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a handreid checkpoint (format {FORMAT} expected)")
    _check_payload(path, payload)
    cfg = TrainConfig.from_dict(payload["config"], source=str(path))
    # The stored weights replace everything, so skip fetching the pretrained ones.
    model = build_model(
        cfg.replace(pretrained="none"),
        payload["num_classes"],
        tuple(payload["aspects"]),
        quick_gelu=bool(payload.get("quick_gelu", False)),
    )
    _check_weights(path, model.state_dict(), payload["state_dict"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), cfg, payload


def _check_payload(path: Path, payload: dict) -> None:
    """The checkpoint's parts, each of the kind a handreid checkpoint holds; a one-line
    UserError naming the first that is not."""
    from handreid.config import ASPECTS

    where = f"{path}: not a usable handreid checkpoint"
    for key, kind in (
        ("config", dict),
        ("num_classes", int),
        ("aspects", list),
        ("state_dict", dict),
    ):
        if key not in payload:
            raise UserError(f"{where}: it has no {key!r}")
        if not isinstance(payload[key], kind) or isinstance(payload[key], bool):
            raise UserError(
                f"{where}: {key!r} is a {type(payload[key]).__name__}, not a {kind.__name__}"
            )
    if payload["num_classes"] < 1:
        raise UserError(f"{where}: num_classes={payload['num_classes']}, must be at least 1")
    allowed = (*ASPECTS, "")  # "" for datasets without aspects (HD, folder)
    for aspect in payload["aspects"]:
        if aspect not in allowed:
            raise UserError(
                f"{where}: unknown aspect {aspect!r} in 'aspects'; allowed: "
                f"{', '.join(map(repr, ASPECTS))} (or '' for data without aspects)"
            )
    if not payload["aspects"]:
        raise UserError(f"{where}: 'aspects' is empty")


def _check_weights(path: Path, expected: dict, stored: dict) -> None:
    """Every weight the model has, of its shape, and no other: what ``load_state_dict`` would
    otherwise report as a traceback, said in one line."""
    where = f"{path}: its weights do not match the model its config builds"

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return ", ".join(names[:3]) + more

    missing = [k for k in expected if k not in stored]
    if missing:
        raise UserError(f"{where}: missing {listed(missing)}")
    unexpected = [str(k) for k in stored if k not in expected]
    if unexpected:
        raise UserError(f"{where}: unexpected {listed(unexpected)}")
    for key, value in expected.items():
        given = stored[key]
        if not isinstance(given, torch.Tensor):
            raise UserError(f"{where}: {key} is a {type(given).__name__}, not a tensor")
        if tuple(given.shape) != tuple(value.shape):
            raise UserError(
                f"{where}: {key} has shape {list(given.shape)}, the model's is {list(value.shape)}"
            )
        # NaN weights give NaN features, which rank in gallery order: plausible-looking metrics
        if given.is_floating_point() and not bool(torch.isfinite(given).all()):
            bad = int((~torch.isfinite(given)).sum())
            raise UserError(
                f"{path}: weight {key} holds {bad} of {given.numel()} values that are not finite "
                "(NaN or inf): a diverged or damaged model, whose metrics would mean nothing"
            )


def compare_stored_test(payload: dict, measured: dict, same_root: bool) -> dict | None:
    """How ``measured`` (a ``test_report``) compares with the test metrics the checkpoint
    stored when it was saved; None when it stored none.

    Returns ``{"stored": {metric: value}, "same_test_set": bool, "differs": [metric, ...]}``.
    The test sets are compared by their ``test_set`` digest; a checkpoint saved before the
    digest existed counts as the same test set when ``same_root`` (the data folder is the one
    its config names). ``differs`` is empty when the test sets differ: the numbers measure
    other images, so no difference is a mismatch.
    """
    stored = payload.get("test")
    if not isinstance(stored, dict) or not all(
        isinstance(stored.get(k), int | float) and not isinstance(stored.get(k), bool)
        for k in METRICS
    ):
        return None
    if isinstance(stored.get("test_set"), str):
        same = stored["test_set"] == measured.get("test_set")
    else:
        same = same_root
    differs = [k for k in METRICS if same and abs(measured[k] - stored[k]) > TOLERANCE]
    return {
        "stored": {k: stored[k] for k in METRICS},
        "same_test_set": same,
        "differs": differs,
    }


def format_comparison(comparison: dict | None) -> str | None:
    """One line for the user when the stored test metrics differ from the measured ones or
    were measured on other test images; None when they agree."""
    if comparison is None or (comparison["same_test_set"] and not comparison["differs"]):
        return None
    stored = comparison["stored"]
    if not comparison["same_test_set"]:
        return (
            f"the checkpoint's stored test mAP {100 * stored['mAP']:.2f} was measured on other "
            "test images (another data folder or split), so it is not comparable with these"
        )
    parts = ", ".join(f"{k} {100 * stored[k]:.2f}" for k in comparison["differs"])
    return (
        f"differs from the checkpoint's stored test metrics on the same test images (stored: "
        f"{parts}): another device or library version, or image files changed since it was saved"
    )
