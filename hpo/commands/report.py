"""``hpo report``: an HTML report of a study."""

from __future__ import annotations

import argparse

from handreid.errors import UserError
from hpo.commands._common import add_command, storage_arg, study_arg


def add_parser(sub) -> None:
    from hpo.records.artifacts import ARTIFACTS_DIR  # not via hpo.views.report: that pulls in scipy

    p = add_command(sub, "report", "HTML report: figures, top trials; refreshes the note")
    study_arg(p)
    storage_arg(p)
    p.add_argument("--out", help="output folder (default studies/<study>/report)")
    p.add_argument("--top", type=int, default=10, help="rows in the table of best trials")
    p.add_argument("--no-png", action="store_true", help="skip the PNG export of the figures")
    p.add_argument("--artifacts", default=str(ARTIFACTS_DIR), help="artifact folder")
    p.add_argument("--no-artifacts", action="store_true", help="do not save study artifacts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpo.common.paths import study_dir
    from hpo.records.artifacts import existing_artifact_store
    from hpo.search.study import load_study
    from hpo.views.model import load_view
    from hpo.views.report import open_artifact_store, save_artifacts, write_report

    if args.top < 1:
        raise UserError(f"--top={args.top}: must be at least 1")
    study = load_study(args.storage, args.study)
    store = existing_artifact_store()
    view = load_view(study, store)
    report = write_report(
        study, args.out, top=args.top, png=not args.no_png, store=store, view=view
    )
    size = report.html.stat().st_size / 1e6
    pngs = f" and {len(report.pngs)} PNGs" if report.pngs else ""
    print(f"wrote {report.html} ({size:.1f} MB){pngs}")
    for note in report.notes:
        print(f"note: {note}")
    if not args.no_artifacts:
        files = [report.html]
        best = study_dir(study.study_name) / "best.yaml"
        files += [best] if best.is_file() else []
        save_artifacts(study, open_artifact_store(args.artifacts), files)
        print(f"saved study artifacts {', '.join(f.name for f in files)} in {args.artifacts}")
    print("the study's dashboard note and figures are refreshed (view them with `hpo dashboard`)")
    return 0
