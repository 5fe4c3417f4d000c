"""Help text for the command-line parsers of ``handreid`` and ``hpo``."""

from __future__ import annotations

import argparse


def shown_default(action: argparse.Action) -> bool:
    """Whether an option's default is worth showing: a value the user would otherwise have to
    guess (not a flag's False, an empty list or None, which mean "not given")."""
    default = action.default
    return bool(action.option_strings) and not (
        default is None or default is False or default == [] or default is argparse.SUPPRESS
    )


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if text is argparse.SUPPRESS or "default" in text or not shown_default(action):
            return text
        return f"{text} (default: %(default)s)"


__all__ = ["HelpFormatter", "shown_default"]
