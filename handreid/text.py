"""How numbers are written for a terminal, shared by ``handreid`` and ``hpo``."""

from __future__ import annotations

import sys


def pm() -> str:
    """The uncertainty sign: ``±`` where standard output can encode it, ``+-`` otherwise."""
    try:
        "±".encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "+-"
    return "±"


__all__ = ["pm"]
