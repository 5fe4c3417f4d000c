"""Device names checked without importing torch, so that a typo is refused at once."""

from __future__ import annotations

import re

from handreid.errors import UserError

_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(device: str | None) -> None:
    """Refuse a ``--device`` that is not auto, cpu, cuda or cuda:N (availability is checked
    later, by ``handreid.engine.resolve_device``, once torch is loaded)."""
    if device is not None and not _NAME.fullmatch(str(device)):
        raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
