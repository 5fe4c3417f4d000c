"""``hpo run|confirm|final|export|show|trials|ls|report|dashboard``: tune the handreid trainer with
Optuna."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from handreid.errors import Terminated, UserError, cli_exit
from hpo.commands import confirm, dashboard, export, final, ls, report, show, trials
from hpo.commands import run as run_command
from hpo.commands._common import Parser

COMMANDS = (run_command, confirm, final, export, show, trials, ls, report, dashboard)  # help order


def verb(command: ModuleType) -> tuple[str, str]:
    """``("trials", "list a study's trials.")`` from the first sentence of a command module's
    docstring (``hpo trials``: ...), so that listing the verbs builds none of their options:
    some options' defaults and choices come from modules that import Optuna."""
    head, _, text = " ".join((command.__doc__ or "").split()).partition(": ")
    return head.strip("`").removeprefix("hpo "), text.rstrip(".")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``hpo`` parser. Given ``argv``, only the command it names gets its options (the
    others only their help line), so ``hpo --help``, ``hpo`` alone and a command's refusals
    import nothing that another command needs."""
    from handreid.clihelp import HelpFormatter

    parser = Parser(prog="hpo", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    named = _named(argv) if argv is not None else None
    for command in COMMANDS:
        name, text = verb(command)
        if argv is None or name == named:
            command.add_parser(sub)
        else:
            sub.add_parser(name, help=text, description=text)
    return parser


def _named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (``hpo`` itself takes
    only ``-h``)."""
    return next((a for a in argv if not a.startswith("-")), None)


def verbs_text(columns: int | None = None) -> str:
    """What ``hpo`` alone prints: the usage and each command with its help line, wrapped at
    spaces to the terminal with the help lines aligned."""
    import textwrap

    from hpo.common.lines import fit, width

    columns = columns or width()
    names = [verb(c) for c in COMMANDS]
    pad = max(len(name) for name, _ in names) + 4
    lines = [fit("usage: hpo COMMAND [options]; hpo COMMAND --help lists its options", columns)]
    lines.append("commands:")
    for name, text in names:
        lines += textwrap.wrap(
            text,
            columns,
            initial_indent=f"  {name:<{pad - 2}}",
            subsequent_indent=" " * pad,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a usage error like any other (exit 2, one error line), listing what to type
        print(verbs_text())
        raise UserError("no command given: name one of the commands above")
    args, extra = build_parser(argv).parse_known_args(argv)
    if args.command is None:  # options only, no command (`hpo -x`): argparse accepted it
        raise UserError("hpo: no command given (see hpo --help)")
    if extra:  # named with the command's own help, not the top-level one
        prog = f"hpo {args.command}"
        raise UserError(f"{prog}: unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
    args.argv = argv
    return args.func(args)


def _sigterm(signum, frame):  # a terminated worker ends its trial like Ctrl-C does; exit 143
    raise Terminated


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)
    cli_exit(run, argv)


if __name__ == "__main__":
    main()
