"""Command lines that ``hpo run`` prints, stores or hands to its workers."""

from __future__ import annotations

import argparse
import shlex


def masked(argv: list[str]) -> list[str]:
    """The command line as it may be printed or stored: database passwords masked."""
    from hpo.records.storage import shown

    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--storage":
            arg = shown(arg)
        elif arg.startswith("--storage="):
            arg = "--storage=" + shown(arg.removeprefix("--storage="))
        out.append(arg)
    return out


def replaced(argv: list[str], *, drop: str, add: list[str]) -> str:
    """``hpo <argv>`` with the option ``drop`` (and its value) replaced by ``add``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == drop:
            skip = True
        elif not arg.startswith(drop + "="):
            out.append(arg)
    return "hpo " + shlex.join(masked(out + add))


def worker_argv(
    args: argparse.Namespace, storage: str, study: str, data: str, dataset: str
) -> list[str]:
    """The command each worker runs: the same study, already created and validated."""
    argv = [
        "run",
        "--worker",
        "--backbone",
        args.backbone,
        "--trials",
        str(args.trials),
        "--data",
        data,
        "--dataset",
        dataset,
        "--study",
        study,
        "--storage",
        storage,
        "--sampler",
        args.sampler,
        "--pruner",
        args.pruner,
        "--device",
        args.device,
        "--heartbeat",
        str(args.heartbeat),
        "--keep-checkpoints",
        str(args.keep_checkpoints),
    ]
    for flag, value in (
        ("--seed", args.seed),
        ("--space", args.space),
        ("--epochs", args.epochs),
        ("--timeout", args.timeout),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.aspects:
        argv += ["--aspects", *args.aspects]
    for item in args.set:
        argv += ["--set", item]
    return argv
