"""``hpo dashboard``: optuna-dashboard on the project's storage, with the study artifacts and
what ``hpo.views.dashboard_app`` adds (the decision first on a study's page)."""

from __future__ import annotations

import errno
import socket
import warnings
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from handreid.errors import UserError
from hpo.records.artifacts import ARTIFACTS_DIR, open_artifact_store
from hpo.search.study import open_storage

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C must not wait for a browser's open keep-alive connection


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - one line per request drowns the terminal
        pass


def make_dashboard(
    storage: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifacts: str | Path | None = ARTIFACTS_DIR,
) -> WSGIServer:
    """A bound (not yet serving) server; a port in use or a bad host fails here, as a UserError."""
    from optuna_dashboard import wsgi

    if not 0 <= port <= 65535:
        raise UserError(f"--port={port}: must be between 0 and 65535 (0 picks a free port)")
    st = open_storage(storage, create=False)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(
            host, port, None, server_class=server_class, handler_class=_QuietHandler
        )
    except OSError as exc:
        in_use = exc.errno == errno.EADDRINUSE
        hint = "; is a dashboard already running? choose another --port" if in_use else ""
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    try:  # the artifact folder is made only once the port is ours
        from hpo.views.dashboard_app import DashboardLayer  # (after the refusals: it loads scipy)

        store = open_artifact_store(artifacts) if artifacts else None
        server.set_app(DashboardLayer(wsgi(st, artifact_store=store), st))
    except BaseException:
        server.server_close()
        raise
    return server


def artifacts_elsewhere(storage: str, root: str | Path) -> int:
    """How many artifacts the storage's studies and trials name when the folder ``root`` holds
    none of them; 0 when it holds one, or when they name none. (A dashboard started away from
    the folder where ``hpo run`` ran would answer every one with an error: each curves.png a
    broken image.) Files removed on purpose (checkpoints) leave the others, so "none" is the
    sign of the wrong folder."""
    import optuna

    from hpo.records.artifacts import artifact_metas

    st = open_storage(storage, create=False)
    root, named = Path(root), 0
    try:
        for summary in optuna.get_all_study_summaries(st, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=st)
            for owner in [study, *study.get_trials(deepcopy=False)]:
                for meta in artifact_metas(owner, storage=st):
                    if (root / meta.artifact_id).is_file():
                        return 0
                    named += 1
    except Exception:  # noqa: BLE001 - a check that cannot run says nothing; the dashboard serves
        return 0
    return named


def url(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/dashboard"


def serve(server: WSGIServer) -> None:
    """Serve until Ctrl-C or SIGTERM (which ``hpo.cli`` turns into KeyboardInterrupt)."""
    # the dashboard recomputes importances per page load; their "few trials" warnings are noise here
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
