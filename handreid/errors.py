"""User-facing errors: one line, exit status 2, raised before any training starts."""

from __future__ import annotations


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
