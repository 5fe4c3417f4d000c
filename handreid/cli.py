"""``handreid train|evaluate|synth|inspect``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from handreid.errors import UserError


def _cmd_synth(args: argparse.Namespace) -> int:
    from handreid.data.synthetic import write_synthetic

    out = write_synthetic(args.out, ids=args.ids, per_id=args.per_id, size=args.size, seed=args.seed)
    print(f"wrote {args.ids} identities x {args.per_id} images x 4 aspects to {out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from handreid.data.inspect import format_inspect, inspect_data

    report = inspect_data(args.data, dataset=args.dataset, aspects=args.aspects)
    print(json.dumps(report, indent=2) if args.json else format_inspect(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handreid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic hands dataset in the 11k layout")
    p.add_argument("--out", required=True)
    p.add_argument("--ids", type=int, default=40)
    p.add_argument("--per-id", type=int, default=8, help="images per identity and aspect")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("inspect", help="check a dataset folder and report what a run would use")
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", choices=["auto", "11k", "hd", "folder"], default="auto")
    p.add_argument("--aspects", nargs="+", default=["all"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_inspect)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
