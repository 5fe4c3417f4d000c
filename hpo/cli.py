"""``hpo run|confirm|export|show|trials|ls|report|dashboard``: tune the handreid trainer with
Optuna."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from handreid.errors import Terminated, UserError, cli_exit
from hpo.commands import confirm, dashboard, export, ls, report, show, trials
from hpo.commands import run as run_command
from hpo.commands._common import Parser

COMMANDS = (run_command, confirm, export, show, trials, ls, report, dashboard)  # help order


def build_parser() -> argparse.ArgumentParser:
    from handreid.clihelp import HelpFormatter

    parser = Parser(prog="hpo", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = build_parser().parse_known_args(argv)
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
