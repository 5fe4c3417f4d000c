"""The study's dashboard note and figures, and a standalone HTML report.

Into the study go a markdown note and only the figures optuna-dashboard lacks
(``hpo.views.figures.DASHBOARD_FIGURES``); the HTML file has those plus intermediate values and
importances, and a table of the top trials that fits the page.
"""

from __future__ import annotations

import html
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.common.lines import diff_text, fit, interval_text, p_text
from hpo.common.paths import study_dir
from hpo.decide.compare import compare_to_baseline
from hpo.decide.confirm import current
from hpo.decide.floors import floor_lines
from hpo.fleet.progress import counts
from hpo.records import optuna_internals
from hpo.records.artifacts import (  # noqa: F401 - hpo.cli imports these names from here
    ARTIFACTS_DIR,
    existing_artifact_store,
    open_artifact_store,
    put_artifact,
    repair_artifact_entries,
    save_space,
)
from hpo.records.companion import load_companion
from hpo.views.confirm_report import FIGURE_ID as CONFIRM_FIGURE_ID
from hpo.views.confirm_report import run_values
from hpo.views.export import value_text
from hpo.views.figures import (
    DASHBOARD_FIGURES,
    FIGURES,
    TARGET,
    Figures,
    completed,
    confirm_figure,
    short_name,
    study_figures,
)
from hpo.views.headline import headline, versus_baseline
from hpo.views.model import StudyView, as_view, load_view
from hpo.views.page import figure_div, scripts

log = logging.getLogger("hpo")

METRICS = ("rank1", "rank5", "rank10", "best_epoch", "epochs_run", "seconds", "peak_memory_mb")
NOTE_MARKER = "_Notes written below this line are kept when `hpo report` refreshes the summary._"
FIGURE_ID = "hpo-{}"  # graph object id of a figure saved into the study
# figures saved into studies by earlier versions that the dashboard draws itself
OLD_FIGURE_IDS = ("hpo-history", "hpo-importances", "hpo-intermediate")
_HTML_HAS_ALL = "the HTML report has every figure"


@dataclass
class Report:
    html: Path
    pngs: list[Path]
    notes: list[str]


def _text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(value) -> str:
    return _text(value).replace("|", "\\|").replace("\n", " ")


def metric_text(key: str, value) -> str:
    """A metric as shown to people: peak GPU memory is "n/a" on CPU, where it is recorded as 0."""
    if key == "peak_memory_mb" and not value:
        return "n/a"
    return _text(value)


def study_note(study: StudyView | optuna.Study, legend: Sequence[str] = ()) -> str:
    """Markdown summary: how the study was made, counts, best trial with its params and metrics,
    and the abbreviations the saved figures use (``legend``)."""
    study = as_view(study).study  # the read model's copy
    attrs, c = study.user_attrs, counts(study)
    lines = [f"## {study.study_name}", "", f"**{_cell(headline(study))}**", ""]
    attrs = {**attrs, "command": optuna_internals.study_record(study, "command")}
    for key in ("command", "backbone", "data", "created"):
        if attrs.get(key) is not None:
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
            f" (baseline {attrs_of(best)['baseline']})" if attrs_of(best).get("baseline") else ""
        )
        lines += ["", f"### Best trial {best.number}{label}: {TARGET} {value_text(best)}", ""]
        metrics = [
            f"{k} {_cell(metric_text(k, attrs_of(best)[k]))}"
            for k in METRICS
            if k in attrs_of(best)
        ]
        if metrics:
            lines += [", ".join(metrics), ""]
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in best.params.items()]
    lines += _floor_note(study)
    lines += _baseline_lines(study)
    if legend:
        lines += ["", "Figure labels: " + "; ".join(f"`{item}`" for item in legend)]
    lines += [
        "",
        f"Summary refreshed by hpo on {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        "---",
        NOTE_MARKER,
        "",
    ]
    return "\n".join(lines)


def _floor_note(study: optuna.Study) -> list[str]:
    """The note's floors: what no training reaches, and the warning when the winner does not
    clear it."""
    found = floor_lines(study)
    if not found:
        return []
    lines = ["", "### Floors", "", found[0] + "."]
    lines += [f"**{line.removeprefix('warning: ')}**." for line in found[1:]]
    return lines


def baselines(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial that ran a baseline config (retries included), in trial order."""
    return [t for t in study.get_trials(deepcopy=False) if attrs_of(t).get("baseline")]


def _baseline_state(t: FrozenTrial, tried: list[FrozenTrial]) -> str:
    """How a baseline trial ended: its value, or its state and where it was retried."""
    if t.state == TrialState.COMPLETE:
        text = f"{TARGET} {value_text(t)}"
    else:
        text = t.state.name.lower()
        retries = [r.number for r in tried if attrs_of(r).get("retry_of") == t.number]
        if retries:
            text += f", queued again as trial {retries[0]}"
    if "retry_of" in attrs_of(t):
        text += f" (retry of trial {attrs_of(t)['retry_of']})"
    return text


def _baseline_lines(study: optuna.Study) -> list[str]:
    """The note's section on the baselines: the best trial's difference to the best complete
    baseline, parameter by parameter and in value, and every baseline trial's outcome."""
    tried = baselines(study)
    if not tried:
        return []
    lines = ["", "### Against the baseline", ""]
    cmp = compare_to_baseline(study)
    if cmp is None:
        lines.append("No baseline trial has completed yet.")
    else:
        lines.append(cmp.value_line(confirmed=current(study) is not None) + ".")
        if cmp.changes:
            name = _cell(attrs_of(cmp.baseline)["baseline"])
            lines += ["", f"| parameter | baseline {name} | best trial {cmp.best.number} |"]
            lines.append("|---|---|---|")
            lines += [f"| {c.name} | {' | '.join(map(_cell, c.texts()))} |" for c in cmp.changes]
    lines += ["", "Baseline trials:"]
    lines += [
        f"- trial {t.number}: {_cell(attrs_of(t)['baseline'])}, {_baseline_state(t, tried)}"
        for t in tried
    ]
    return lines


def _kept_user_notes(study: optuna.Study) -> str:
    """What a person wrote in the dashboard: below our marker, or the whole note if it has none."""
    from optuna_dashboard import get_note

    old = get_note(study) or ""
    if NOTE_MARKER in old:
        return old.split(NOTE_MARKER, 1)[1].lstrip("\n")
    if old.startswith(f"## {study.study_name}\n") and "Summary refreshed by hpo" in old:
        return ""
    return old


def annotate_study(study: optuna.Study, view: StudyView | None = None) -> Figures:
    """Save the summary note and the figures the dashboard lacks into the study, drawn from
    its read model ``view`` (read now when not given).

    Figures that earlier versions saved and the dashboard draws itself are removed where the
    storage can delete them (databases); on a journal file they stay (see ``hpo.records.optuna_internals``).
    """
    from optuna_dashboard import save_note, save_plotly_graph_object

    view = view if view is not None else load_view(study)
    companion = load_companion(study) if view.companion_trials else None
    for named in (study, companion):
        if named is not None:
            name_metric(named)
    figs = study_figures(view, DASHBOARD_FIGURES)
    legend = [item for items in figs.legends.values() for item in items]
    save_note(study, study_note(view, legend) + _kept_user_notes(study))
    for name, fig in figs.figures.items():
        # a fixed id per figure: a refresh overwrites it instead of adding another
        save_plotly_graph_object(study, fig, graph_object_id=FIGURE_ID.format(name))
    _retire_old_figures(study)
    return figs


def name_metric(study: optuna.Study) -> None:
    """The dashboard names the objective "val mAP" instead of "Objective 0" (the API is
    marked experimental); written only when it differs, as a refresh writes nothing new."""
    if study.metric_names == [TARGET]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.set_metric_names([TARGET])


RETIRED = "Retired panel: optuna-dashboard draws this one itself"


def _retire_old_figures(study: optuna.Study) -> None:
    """Delete the figures earlier versions saved; a journal file cannot, so there each one is
    overwritten once with a short notice instead of showing numbers that never refresh."""
    from optuna_dashboard import save_plotly_graph_object

    stale = optuna_internals.figure_keys(study, OLD_FIGURE_IDS)
    if not stale or optuna_internals.delete_study_system_attrs(study, stale):
        return
    for gid in OLD_FIGURE_IDS:
        saved = optuna_internals.figure_json(study, gid)
        if saved is None or RETIRED in saved:
            continue
        fig = _notice(f"{RETIRED}.<br>This study's journal file cannot delete a saved figure.")
        save_plotly_graph_object(study, fig, graph_object_id=gid)


def _notice(text: str):
    """A figure that is only a line of text (no axes)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, height=120, template="none")
    return fig


def companion_note(
    study: optuna.Study, companion: optuna.Study, view: StudyView | None = None
) -> str:
    """The confirm study's dashboard note: what it is, a link back to its parent, the result."""
    parent = optuna_internals.study_id(study)
    return "\n".join(
        [
            f"## {companion.study_name}: confirm runs of study {study.study_name}",
            "",
            f"Made by `hpo confirm` for study [{study.study_name}](./{parent}): the top trials "
            "and the baselines re-trained on fresh seeds on the study's identities and measured "
            "on its confirm identities (none where the study has none). Each trial "
            f"here is one run: `candidate` is the trial number in {study.study_name}, "
            "`confirm_seed` the seed. Its values are not a search; the comparison is in "
            f"{study.study_name}'s note and in `hpo show --study {study.study_name}`.",
            "",
            f"**{_cell(headline(view if view is not None else study))}**",
            "",
        ]
    )


def annotate_after_confirm(study: optuna.Study, companion: optuna.Study) -> None:
    """Refresh the study's note (its headline names the confirmed winner) and describe the
    confirm study in its own note and attributes; drawing problems never fail a confirmation."""
    from optuna_dashboard import save_note

    try:
        companion.set_user_attr("confirm_of", study.study_name)
        companion.set_user_attr("purpose", "confirm runs (hpo confirm); see the parent's note")
        name_metric(companion)
        view = load_view(study)
        save_note(companion, companion_note(study, companion, view))
        annotate_study(study, view)
    except Exception as exc:  # noqa: BLE001 - the runs and the summary are stored
        log.warning("warning: could not refresh the dashboard notes: %s", exc)


def annotate_after_run(study: optuna.Study, view: StudyView | None = None) -> None:
    """``annotate_study`` for the end of ``hpo run``: a drawing problem never fails a finished study."""
    try:
        figs = annotate_study(study, view)
    except Exception as exc:  # noqa: BLE001 - the trials are stored; the note is a convenience
        log.warning("warning: could not save the dashboard note and figures: %s", exc)
        return
    n = len(figs.figures)
    print(
        fit(
            f"saved the summary note and {n} figure{'s' * (n != 1)} to the study "
            "(view them with `hpo dashboard`)"
        )
    )


def top_trials(study: optuna.Study, n: int = 10) -> list[FrozenTrial]:
    """The ``n`` best complete trials (studies here maximise val mAP)."""
    from hpo.views.listing import top_trials as best_of

    return best_of(completed(study), n)


def _head(name: str) -> str:
    """A column header that may break after underscores; the full name shows on hover."""
    short = html.escape(short_name(name)).replace("_", "_<wbr>")
    return f'<th title="{html.escape(name)}">{short}</th>'


def _trial_cell(t: FrozenTrial) -> str:
    base = attrs_of(t).get("baseline")
    tag = f' <span class="base">baseline {html.escape(str(base))}</span>' if base else ""
    return f"<td>{t.number}{tag}</td>"


def _param_cell(value) -> str:
    """Numbers stay whole on one line; text (prompt templates) may wrap anywhere."""
    if isinstance(value, str):
        return f'<td class="text">{html.escape(value)}</td>'
    return f'<td class="num">{html.escape(_text(value))}</td>'


def _table(study: optuna.Study, n: int) -> str:
    """Top trials at the page's width: long text wraps, so nothing scrolls sideways."""
    trials = top_trials(study, n)
    if not trials:
        return "<p>No completed trial yet.</p>"
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    has = lambda key: any(key in attrs_of(t) for t in trials)  # noqa: E731
    cols = [("trial", None), (TARGET, None)]
    if has("rank1"):
        cols.append(("rank-1/5/10", None))
    if has("epochs_run"):
        cols.append(("epochs best/run", None))
    cols += [(label, key) for label, key in (("seconds", "seconds"), ("GPU MB", "peak_memory_mb"))]
    cols = [(label, key) for label, key in cols if key is None or has(key)]
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in cols)
    head += "".join(_head(p) for p in params)
    rows = []
    for t in trials:
        a = attrs_of(t)
        cells = {
            TARGET: value_text(t),
            "rank-1/5/10": " / ".join(
                f"{a[k]:.3f}" for k in ("rank1", "rank5", "rank10") if k in a
            ),
            "epochs best/run": f"{a.get('best_epoch', '-')}/{a.get('epochs_run', '-')}",
            "seconds": metric_text("seconds", a.get("seconds", "")),
            "GPU MB": metric_text("peak_memory_mb", a.get("peak_memory_mb", "")),
        }
        row = [_trial_cell(t)]
        row += [f"<td>{html.escape(cells[label])}</td>" for label, _ in cols[1:]]
        row += [_param_cell(t.params.get(p, "")) for p in params]
        rows.append("<tr>" + "".join(row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _baseline_html(study: optuna.Study) -> list[str]:
    """The best trial against the baseline: the value difference with its interval, the
    parameters that differ, and each baseline trial's outcome."""
    tried = baselines(study)
    if not tried:
        return []
    out = ["<h2>Best trial against the baseline</h2>"]
    cmp = compare_to_baseline(study)
    if cmp is None:
        out.append("<p>No baseline trial has completed yet.</p>")
    else:
        line = cmp.value_line(confirmed=current(study) is not None)
        out.append(f'<p class="cmp">{html.escape(line)}.</p>')
        if cmp.changes:
            base = html.escape(str(attrs_of(cmp.baseline)["baseline"]))
            head = (
                f"<tr><th>parameter</th><th>baseline {base} (trial {cmp.baseline.number})</th>"
                f"<th>best trial {cmp.best.number}</th></tr>"
            )
            rows = "".join(
                f"<tr><td>{html.escape(c.name)}</td>"
                + "".join(f"<td>{html.escape(v)}</td>" for v in c.texts())
                + "</tr>"
                for c in cmp.changes
            )
            out.append(f'<table class="cmp"><thead>{head}</thead><tbody>{rows}</tbody></table>')
    items = "".join(
        f'<li>trial {t.number}: <span class="base">baseline '
        f"{html.escape(str(attrs_of(t)['baseline']))}</span>, "
        f"{html.escape(_baseline_state(t, tried))}</li>"
        for t in tried
    )
    out.append(f"<ul>{items}</ul>")
    return out


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top}
td.text{overflow-wrap:anywhere;min-width:8em}td.num{white-space:nowrap}
th{background:#f3f3f3}.base{color:#b00;font-size:11px}.figure{margin:1.5em 0}
table.cmp{width:auto;max-width:100%;margin-top:.5em}table.cmp td{overflow-wrap:anywhere}
.skip{color:#a40}code{background:#f3f3f3;padding:1px 3px}"""


def _confirm_section(view: StudyView) -> list[str]:
    """The confirmation: the headline, a table with one row per re-trained config in which
    every cell reads on its own, and the figure on the whole val mAP scale with the floors;
    empty before a confirmation."""
    summary = view.confirm
    fig = confirm_figure(view)
    if fig is None:
        return []
    values = run_values(view)
    ref = summary.get("reference_baseline")
    head = (
        f"<tr><th>trial</th><th>runs ({TARGET} each, by seed)</th>"
        f"<th>confirmed {TARGET} [95 % CI]</th><th>against the baseline</th></tr>"
    )
    rows = []
    for r in summary["rows"]:
        base = r.get("baseline")
        tag = f' <span class="base">baseline {html.escape(str(base))}</span>' if base else ""
        runs = ", ".join(f"{v:.3f}" for v in values.get(r["trial"], [])) or "-"
        mean = f"{r['mean']:.3f} {interval_text(*r['ci'])}, {r['n']} runs"
        rows.append(
            f"<tr><td>{r['trial']}{tag}</td><td class='text'>{runs}</td>"
            f"<td class='num'>{mean}</td>"
            f"<td>{html.escape(_against_baseline(r, ref))}</td></tr>"
        )
    seeds = summary.get("seeds", [])
    folds = summary.get("folds", 1)
    return [
        "<h2>Confirmation</h2>",
        f"<p><b>{html.escape(headline(view))}</b></p>",
        f"<p>Each config was trained again on fresh seeds ({', '.join(map(str, seeds))}) "
        f"on each of {folds} fold{'s' * (folds != 1)}; differences pair runs by seed and "
        "fold.</p>",
        f"<table class='cmp'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>",
        figure_div(CONFIRM_FIGURE_ID, fig),
    ]


def _against_baseline(row: dict, ref: int | None) -> str:
    """One sentence: how a confirmed config compares with the reference baseline."""
    if row["trial"] == ref:
        return "The reference baseline: every other config is compared with it."
    d = row.get("vs_baseline")
    if ref is None:
        return "Not compared: no baseline was confirmed."
    if not d:
        return f"Not compared: its runs do not pair with those of the baseline (trial {ref})."
    words = versus_baseline(row) or "compared with"
    diff = f"{diff_text(d['diff'])} {interval_text(*d['ci'], signed=True)}, {p_text(d.get('p'))}"
    return f"{words[0].upper()}{words[1:]} the baseline (trial {ref}): {diff}."


def _final_section(view: StudyView) -> list[str]:
    """``hpo final``'s table, when the study has one."""
    table = (view.final or {}).get("table")
    if not table:
        return []
    from hpo.views.final_table import html_section

    return html_section(table)


def render_html(
    study: StudyView | optuna.Study, figs: Figures, *, top: int = 10, notes: Sequence[str] = ()
) -> str:
    """One self-contained page: plotly.js packed once, every figure a div with its data
    beside it, drawn by one script at the end (``hpo.views.page``)."""
    view = as_view(study)
    study = view.study  # the read model's copy

    attrs, c = study.user_attrs, counts(study)
    attrs = {**attrs, "command": optuna_internals.study_record(study, "command")}
    name = html.escape(study.study_name)
    info = [
        f"<li>{k}: <code>{html.escape(str(attrs[k]))}</code></li>"
        for k in ("command", "backbone", "data", "created")
        if attrs.get(k) is not None
    ]
    info.append(
        f"<li>trials: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed, "
        f"{c['running']} running</li>"
    )
    body = [
        f"<h1>Study {name}</h1>",
        f'<p class="headline"><b>{html.escape(headline(study))}</b></p>',
        f"<ul>{''.join(info)}</ul>",
        *(
            f'<p class="{"skip" if line.startswith("warning") else "cmp"}">{html.escape(line)}</p>'
            for line in floor_lines(study)
        ),
        f"<h2>Top trials by {TARGET}</h2>",
        _table(study, top),
        *_baseline_html(study),
        *_confirm_section(view),
        *_final_section(view),
    ]
    body += [figure_div(f"fig-{fig_name}", fig) for fig_name, fig in figs.figures.items()]
    for line in [*(f"{FIGURES[k]}: skipped, {why}" for k, why in figs.skipped.items()), *notes]:
        body.append(f'<p class="skip">{html.escape(line)}</p>')
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{name}: hpo report</title>'
        f"<style>{_CSS}</style>\n</head><body>\n{chr(10).join(body)}\n"
        f"{scripts()}</body></html>\n"
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
    study: optuna.Study,
    out_dir: str | Path | None = None,
    *,
    top: int = 10,
    png: bool = True,
    store=None,
    view: StudyView | None = None,
) -> Report:
    """report.html (+ one PNG per figure when possible) in ``out_dir``; also refreshes the study
    note. ``store`` holds the trials' epoch histories for the curves panel (default: the
    artifact folder ``studies/artifacts`` when it exists; without one, val mAP curves come from
    the intermediate values). ``view``: the study's read model, read now when not given."""
    if store is None:
        store = existing_artifact_store()
    view = view if view is not None else load_view(study, store)
    c = counts(view.study)
    if c["complete"] + c["pruned"] == 0:
        raise UserError(f"study {study.study_name!r} has no finished trials yet; nothing to report")
    out = Path(out_dir) if out_dir else study_dir(study.study_name) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {out}: {exc.strerror or exc}") from None
    saved = annotate_study(study, view)
    rest = study_figures(view, [n for n in FIGURES if n not in DASHBOARD_FIGURES], store)
    drawn = {**saved.figures, **rest.figures}
    figs = Figures(
        {n: drawn[n] for n in FIGURES if n in drawn},
        {**saved.skipped, **rest.skipped},
        {**saved.legends, **rest.legends},
    )
    pngs, png_note = export_pngs(figs, out) if png else ([], None)
    notes = [png_note] if png_note else []
    path = out / "report.html"
    _atomic_write(path, render_html(view, figs, top=top, notes=notes))
    notes = [f"{FIGURES[k]}: skipped, {why}" for k, why in figs.skipped.items()] + notes
    return Report(path, pngs, notes)


def save_artifacts(study: optuna.Study, store, paths: list[Path]) -> list[str]:
    """Upload files as study artifacts (a file already there under the same name is replaced in
    place); also store the search space as ``space.yaml`` if the study has it only as its old
    attribute, and delete the null entries older versions left (see ``hpo.records.artifacts``)."""
    from hpo.records.artifacts import SPACE_FILE, artifact_metas

    repair_artifact_entries(study)
    old_space = optuna_internals.study_record(study, "space")
    if isinstance(old_space, dict) and not any(
        m.filename == SPACE_FILE for m in artifact_metas(study)
    ):
        save_space(study, store, old_space)
    return [put_artifact(study, store, p) for p in paths]
