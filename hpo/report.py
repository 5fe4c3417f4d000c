"""Plotly figures, a dashboard note and a standalone HTML report for a study.

The same four figures go to two places: into the study itself (optuna-dashboard shows notes
and saved plotly figures on the study page) and into one self-contained HTML file.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from hpo.paths import study_dir
from hpo.study import STUDIES_DIR, counts

log = logging.getLogger("hpo")

TARGET = "val mAP"
FIGURES = {  # name -> title; the names also key the figures saved in the study
    "history": "Optimisation history: val mAP per trial",
    "importances": "Parameter importances for val mAP",
    "parallel": "Parallel coordinates: parameters and val mAP",
    "intermediate": "Intermediate values: val mAP per epoch (pruning)",
}
METRICS = ("rank1", "rank5", "rank10", "best_epoch", "epochs_run", "seconds", "peak_memory_mb")
NOTE_MARKER = "_Notes written below this line are kept when `hpo report` refreshes the summary._"
ARTIFACTS_DIR = STUDIES_DIR / "artifacts"
_ARTIFACT_PREFIX = "artifacts:"  # optuna.artifacts' study system-attr key prefix
_HTML_HAS_ALL = "the HTML report has every figure"


@dataclass
class Figures:
    figures: dict  # name -> plotly Figure, in FIGURES order
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was not drawn


@dataclass
class Report:
    html: Path
    pngs: list[Path]
    notes: list[str]


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def study_figures(study: optuna.Study) -> Figures:
    """The four figures that can be drawn now; the others are listed in ``skipped`` with a reason."""
    from optuna import visualization as vis

    done = completed(study)
    tuned = any(t.params for t in done)
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    reasons = {
        "history": None if done else "no completed trial yet",
        "importances": None if len(done) >= 2 and tuned else "needs 2 completed trials with params",
        "parallel": None if tuned else "no completed trial with tuned parameters yet",
        "intermediate": None if reported else "no trial has reported a per-epoch value yet",
    }
    draw = {
        "history": lambda: vis.plot_optimization_history(study, target_name=TARGET),
        "importances": lambda: vis.plot_param_importances(study, target_name=TARGET),
        "parallel": lambda: vis.plot_parallel_coordinate(study, target_name=TARGET),
        "intermediate": lambda: vis.plot_intermediate_values(study),
    }
    out = Figures({})
    for name, title in FIGURES.items():
        if reasons[name]:
            out.skipped[name] = reasons[name]
            continue
        try:
            # "few trials, importance may be inaccurate" warnings: the figure speaks for itself
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = draw[name]()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            out.skipped[name] = f"cannot be computed: {exc}"
            continue
        if not fig.data:
            out.skipped[name] = "nothing to draw"
            continue
        fig.update_layout(title={"text": title}, height=460, margin={"t": 60})
        if name == "intermediate":
            fig.update_layout(xaxis_title="epoch", yaxis_title=TARGET, showlegend=False)
        out.figures[name] = fig
    return out


def _cell(value) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def study_note(study: optuna.Study) -> str:
    """Markdown summary: how the study was made, counts, best trial with its params and metrics."""
    attrs, c = study.user_attrs, counts(study)
    lines = [f"## {study.study_name}", ""]
    for key in ("command", "backbone", "data", "created"):
        if key in attrs:
            lines.append(
                f"- {key}: `{attrs[key]}`" if key == "command" else f"- {key}: {attrs[key]}"
            )
    lines.append(
        f"- trials: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed, "
        f"{c['running']} running"
    )
    done = completed(study)
    if not done:
        lines += ["", "No completed trial yet."]
    else:
        best = study.best_trial
        label = (
            f" (baseline {best.user_attrs['baseline']})" if best.user_attrs.get("baseline") else ""
        )
        lines += ["", f"### Best trial {best.number}{label}: {TARGET} {best.value:.4f}", ""]
        metrics = [f"{k} {_cell(best.user_attrs[k])}" for k in METRICS if k in best.user_attrs]
        if metrics:
            lines += [", ".join(metrics), ""]
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in best.params.items()]
    lines += [
        "",
        f"Summary refreshed by hpo on {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        "---",
        NOTE_MARKER,
        "",
    ]
    return "\n".join(lines)


def _kept_user_notes(study: optuna.Study) -> str:
    """What a person wrote in the dashboard: below our marker, or the whole note if it has none."""
    from optuna_dashboard import get_note

    old = get_note(study) or ""
    if NOTE_MARKER in old:
        return old.split(NOTE_MARKER, 1)[1].lstrip("\n")
    if old.startswith(f"## {study.study_name}\n") and "Summary refreshed by hpo" in old:
        return ""
    return old


def annotate_study(study: optuna.Study) -> Figures:
    """Save the summary note and the figures into the study for optuna-dashboard."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    # names the axis "val mAP" instead of "Objective 0"; the API is marked experimental
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.set_metric_names([TARGET])
    save_note(study, study_note(study) + _kept_user_notes(study))
    figs = study_figures(study)
    for name, fig in figs.figures.items():
        save_plotly_graph_object(study, fig, graph_object_id=f"hpo-{name}")  # fixed id: overwrite
    return figs


def annotate_after_run(study: optuna.Study) -> None:
    """``annotate_study`` for the end of ``hpo run``: a drawing problem never fails a finished study."""
    try:
        figs = annotate_study(study)
    except Exception as exc:  # noqa: BLE001 - the trials are stored; the note is a convenience
        log.warning("warning: could not save the dashboard note and figures: %s", exc)
        return
    n = len(figs.figures)
    print(f"saved the summary note and {n} figures to the study (view them with `hpo dashboard`)")


def top_trials(study: optuna.Study, n: int = 10) -> list[FrozenTrial]:
    return sorted(
        completed(study), key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE"
    )[:n]


def _table(study: optuna.Study, n: int) -> str:
    trials = top_trials(study, n)
    if not trials:
        return "<p>No completed trial yet.</p>"
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    cols = ["trial", TARGET, *[m for m in METRICS if any(m in t.user_attrs for t in trials)]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*cols, *params])
    rows = []
    for t in trials:
        cells = [
            t.number,
            t.value,
            *[t.user_attrs.get(m, "") for m in cols[2:]],
            *[t.params.get(p, "") for p in params],
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in cells) + "</tr>")
    return (
        f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></div>"
    )


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}.wide{overflow-x:auto}.figure{margin:1.5em 0}.skip{color:#a40}code{background:#f3f3f3;padding:1px 3px}"""


def render_html(
    study: optuna.Study, figs: Figures, *, top: int = 10, notes: Sequence[str] = ()
) -> str:
    """One self-contained page: plotly.js inlined once in <head>, every figure a div that uses it."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    attrs, c = study.user_attrs, counts(study)
    name = html.escape(study.study_name)
    info = [
        f"<li>{k}: <code>{html.escape(str(attrs[k]))}</code></li>"
        for k in ("command", "backbone", "data", "created")
        if k in attrs
    ]
    info.append(
        f"<li>trials: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed, "
        f"{c['running']} running</li>"
    )
    body = [
        f"<h1>Study {name}</h1>",
        f"<ul>{''.join(info)}</ul>",
        f"<h2>Top trials by {TARGET}</h2>",
        _table(study, top),
    ]
    for fig_name, fig in figs.figures.items():
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{fig_name}",
            config={"responsive": True},
        )
        body.append(f'<div class="figure">{div}</div>')
    for line in [*(f"{FIGURES[k]}: skipped, {why}" for k, why in figs.skipped.items()), *notes]:
        body.append(f'<p class="skip">{html.escape(line)}</p>')
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{name}: hpo report</title>'
        f'<style>{_CSS}</style>\n<script type="text/javascript">{get_plotlyjs()}</script>\n'
        f"</head><body>\n{chr(10).join(body)}\n</body></html>\n"
    )


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido would use (BROWSER_PATH, PATH, a kaleido download), or None."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return None
    return Chromium.find_browser(skip_local=False)


def export_pngs(figs: Figures, out_dir: Path) -> tuple[list[Path], str | None]:
    """PNG of each figure via kaleido in one browser session; (paths, None) or ([], why not)."""
    if not figs.figures:
        return [], None
    try:
        import kaleido  # noqa: F401 - only its presence is checked here
    except ImportError:
        return (
            [],
            "PNG export skipped: kaleido is not installed (pip install kaleido); " + _HTML_HAS_ALL,
        )
    if find_browser() is None:
        return (
            [],
            "PNG export skipped: no Chrome/Chromium found (install chromium or set BROWSER_PATH); "
            + _HTML_HAS_ALL,
        )
    import plotly.io as pio

    paths = [out_dir / f"{name}.png" for name in figs.figures]
    try:
        pio.write_images(list(figs.figures.values()), paths, width=1100, height=520)
    except Exception as exc:  # noqa: BLE001 - kaleido/browser failures come in many types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [], f"PNG export failed: {reason[:200]}"
    return paths, None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(
    study: optuna.Study, out_dir: str | Path | None = None, *, top: int = 10, png: bool = True
) -> Report:
    """report.html (+ one PNG per figure when possible) in ``out_dir``; also refreshes the study note."""
    c = counts(study)
    if c["complete"] + c["pruned"] == 0:
        raise UserError(f"study {study.study_name!r} has no finished trials yet; nothing to report")
    out = Path(out_dir) if out_dir else study_dir(study.study_name) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {out}: {exc.strerror or exc}") from None
    figs = annotate_study(study)
    pngs, png_note = export_pngs(figs, out) if png else ([], None)
    notes = [png_note] if png_note else []
    path = out / "report.html"
    _atomic_write(path, render_html(study, figs, top=top, notes=notes))
    notes = [f"{FIGURES[k]}: skipped, {why}" for k, why in figs.skipped.items()] + notes
    return Report(path, pngs, notes)


def open_artifact_store(root: str | Path = ARTIFACTS_DIR):
    """A file-system artifact store (created if missing) that ``hpo dashboard`` serves."""
    from optuna.artifacts import FileSystemArtifactStore

    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create artifact folder {root}: {exc.strerror or exc}") from None
    return FileSystemArtifactStore(root)


def study_artifacts(study: optuna.Study) -> dict[str, str]:
    """artifact id -> file name of the study's live artifacts (deleted ones are stored as null)."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    metas = [json.loads(v) for k, v in attrs.items() if k.startswith(_ARTIFACT_PREFIX)]
    return {m["artifact_id"]: m["filename"] for m in metas if m}


def save_artifacts(study: optuna.Study, store, paths: list[Path]) -> list[str]:
    """Upload files as study artifacts, replacing earlier uploads of the same file name."""
    from optuna.artifacts import upload_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    names = {p.name for p in paths}
    for artifact_id, filename in study_artifacts(study).items():
        if filename in names:
            with contextlib.suppress(ArtifactNotFound):
                store.remove(artifact_id)
            # the same tombstone optuna-dashboard writes when an artifact is deleted on its page
            study._storage.set_study_system_attr(
                study._study_id, _ARTIFACT_PREFIX + artifact_id, json.dumps(None)
            )
    return [
        upload_artifact(artifact_store=store, file_path=str(p), study_or_trial=study) for p in paths
    ]
