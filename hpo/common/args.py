"""Checks of command arguments that the library functions behind the commands also apply:
light (no Optuna, no torch), so a command refuses a bad value before anything heavy loads."""

from __future__ import annotations

from handreid.errors import UserError


def check_plan_args(top: int, seeds: int) -> None:
    """``hpo confirm --top/--seeds``, and ``hpo.decide.confirm.plan``'s own arguments."""
    if top < 1:
        raise UserError(f"--top={top}: must be at least 1")
    if seeds < 2:
        raise UserError(f"--seeds={seeds}: at least 2 are needed for a paired comparison")
    if seeds > 100:
        raise UserError(f"--seeds={seeds}: at most 100 (each seed re-trains every config)")
