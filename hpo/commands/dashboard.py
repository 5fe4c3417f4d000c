"""``hpo dashboard``: serve optuna-dashboard on a storage."""

from __future__ import annotations

import argparse
import sys

from hpo.commands._common import add_command, storage_arg


def add_parser(sub) -> None:
    from hpo.records.artifacts import ARTIFACTS_DIR

    p = add_command(sub, "dashboard", "serve optuna-dashboard on the storage (on 127.0.0.1)")
    storage_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    p.add_argument("--artifacts", default=str(ARTIFACTS_DIR), help="artifact folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpo.views.dashboard import LOOPBACK, artifacts_elsewhere, make_dashboard, serve, url

    server = make_dashboard(args.storage, args.host, args.port, args.artifacts)
    missing = artifacts_elsewhere(args.storage, args.artifacts)
    if missing:
        print(
            f"warning: none of the {missing} artifacts the studies name is in {args.artifacts} "
            "(images will show broken): start `hpo dashboard` in the folder where `hpo run` "
            "ran, or pass --artifacts",
            file=sys.stderr,
        )
    if args.host not in LOOPBACK:
        print(
            f"warning: listening on {args.host}: anyone who can reach it can read and edit the studies",
            file=sys.stderr,
        )
    print(f"optuna-dashboard on {args.storage}, artifacts in {args.artifacts}", flush=True)
    print(f"Listening on {url(server)} (Ctrl-C to stop)", flush=True)
    serve(server)
    return 0
