"""User-facing errors: one line, exit status 2, raised before any training starts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A mistake in the user's input (config, data, command line).

    The CLIs print ``error: <message>`` on one line and exit with status 2.
    """


class ConfigError(UserError):
    """An invalid trainer config key or value."""


class DataError(UserError):
    """A missing, malformed or unreadable dataset."""


class ModelError(UserError):
    """A model that cannot be built (unknown name, weights unavailable)."""


def cli_exit(run: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run a CLI entry point: a UserError is one ``error:`` line and exit status 2."""
    try:
        code = run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
