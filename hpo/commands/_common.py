"""Argument and output helpers shared by the ``hpo`` command modules."""

from __future__ import annotations

import argparse
from typing import NoReturn

from handreid.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse's own errors (unknown option, bad number) as our one ``error:`` line, exit 2,
    instead of a usage block; ``--help`` still prints the usage."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def add_command(sub, name: str, text: str) -> argparse.ArgumentParser:
    """The sub-parser of one verb, with ``text`` as its help line and description."""
    from handreid.clihelp import HelpFormatter

    return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)


# hpo.records.storage.DEFAULT_STORAGE (a test pins the two together), written here so that
# building a command's options imports no Optuna: `hpo show --top 0` refuses in a blink
DEFAULT_STORAGE = "sqlite:///studies/handreid.db"


def storage_arg(p: argparse.ArgumentParser, default_text: str | None = None) -> None:
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"database URL or journal file path (default {default_text or DEFAULT_STORAGE})",
    )


def study_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", help="study name (may be left out when the storage holds one)")


def worker_args(p: argparse.ArgumentParser) -> None:
    """The hidden options a parent process passes to the workers it starts."""
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lines", choices=["epochs", "trials", "none"], help=argparse.SUPPRESS)


def count(text: str) -> int:
    """A whole number >= 0 (argparse turns the error into our one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def progress_mode(args: argparse.Namespace) -> str:
    """How this process shows progress (``hpo.fleet.progress``): a worker does what its parent
    asked with the hidden --lines; otherwise the terminal and --quiet decide."""
    from hpo.fleet.progress import output_mode

    if args.worker:
        return args.lines or "trials"
    return output_mode(args.quiet)


def worker_prefix(args: argparse.Namespace) -> str:
    from hpo.fleet.progress import worker_prefix as prefix

    return prefix() if args.worker else ""


def print_json(data) -> None:
    import json

    from hpo.views.listing import json_ready

    print(json.dumps(json_ready(data), indent=2, allow_nan=False))


def watch_parent(args: argparse.Namespace) -> None:
    """A worker stops (as on SIGTERM) when the process that started it dies."""
    if args.worker:
        from hpo.fleet.workers import watch_parent as watch

        watch()
