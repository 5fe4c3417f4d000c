"""The card ``hpo dashboard`` puts first on a study's page: the decision (the confirmed
winner, its interval, its difference to the baseline, the floors, and what the dashboard's own
"Best Trial" is), or, on a companion of confirm runs, that its trials are confirm runs and not
a search. HTML with an SVG figure, from the study's read model; ``hpo.views.dashboard_app``
serves it and places it.
"""

from __future__ import annotations

import html
import math

from hpo.common.lines import interval_text
from hpo.decide.floors import check, floor_name, floors_text
from hpo.views.figures import TARGET
from hpo.views.headline import decision, headline
from hpo.views.model import StudyView

FLOOR_COLOURS = {"pixels": "#2ca02c", "backbone": "#8c564b"}  # as in the report's figures
BASELINE_COLOUR, WINNER_COLOUR, OTHER_COLOUR = "#b00", "#1565c0", "#666"


def shown_name(parent: str, kind: str = "confirm") -> str:
    """How the dashboard names the companion of confirm (or final) runs of study ``parent``."""
    return f"{parent} › {kind} runs"


def study_card(view: StudyView, companion_id: int | None = None) -> str:
    """The decision card of a study: ``companion_id`` links its confirm runs' page."""
    d = decision(view)
    state = "confirmed" if d["confirmed"] else "open"
    lead = headline(view)
    parts = [f'<p class="hpo-lead">{html.escape(lead[0].upper() + lead[1:])}.</p>']
    if view.floors:
        floors, warning = _floors_sentences(view)
        parts.append(f"<p>{html.escape(floors)}</p>")
        if warning:
            parts.append(f'<p class="hpo-warn">{html.escape(warning)}</p>')
    table = (view.final or {}).get("table")
    if table:
        from hpo.views.final_table import headline as final_headline

        for line in final_headline(table):
            parts.append(f"<p>Final, on the test identities: {html.escape(line)}.</p>")
    parts.append(f'<p class="hpo-small">{_best_trial_sentence(view, d, companion_id)}</p>')
    figure = _interval_svg(view) if d["confirmed"] else ""
    return (
        f'<div class="hpo-card" data-state="{state}"><div class="hpo-text">'
        f'<p class="hpo-kicker">Decision</p>{"".join(parts)}</div>{figure}</div>'
    )


def companion_card(
    parent: StudyView, parent_id: int, runs: int, stored_name: str, kind: str = "confirm"
) -> str:
    """The card of a companion study: what its trials are, and where the decision is."""
    link = f'<a href="/dashboard/studies/{parent_id}">{html.escape(parent.name)}</a>'
    lead = headline(parent)
    if kind == "final":
        return final_card(parent, link, runs, stored_name)
    return (
        '<div class="hpo-card" data-state="companion"><div class="hpo-text">'
        '<p class="hpo-kicker">Confirm runs, not a search</p>'
        f'<p class="hpo-lead">These {runs} trials are the confirm runs of study {link}.</p>'
        f"<p>Each is a config of {html.escape(parent.name)} (its trial number there is the "
        "attribute <code>candidate</code>) trained again on one fresh seed "
        "(<code>confirm_seed</code>) on the study's identities and measured on its confirm "
        "identities, which no study trial trained or validated on. The History and the trial "
        "values below compare seeds, not configurations: the highest run is the luckiest "
        'seed, so this page shows no "Best Trial" and no parameter importance.</p>'
        f"<p>The decision, on {link}'s page: <b>{html.escape(lead)}</b>.</p>"
        f'<p class="hpo-small">Stored as the study <code>{html.escape(stored_name)}</code>.'
        "</p></div></div>"
    )


def final_card(parent: StudyView, link: str, runs: int, stored_name: str) -> str:
    """The card of a study's final runs: the table's decision first, then what the runs are."""
    from hpo.views.final_table import headline as final_headline

    table = (parent.final or {}).get("table")
    leads = final_headline(table) if table else ["no final table yet: `hpo final` builds it"]
    lead = "".join(f'<p class="hpo-lead">{html.escape(x)}.</p>' for x in leads)
    return (
        '<div class="hpo-card" data-state="companion"><div class="hpo-text">'
        '<p class="hpo-kicker">Final runs: test identities, used once</p>'
        f"{lead}"
        f"<p>These {runs} trials are the final runs of study {link}: its confirmed winner, its "
        "baseline and any extra config, each trained on every training-side identity on a "
        "fresh seed (<code>final_seed</code>) and evaluated once on the test identities of "
        "one aspect (<code>final_aspect</code>). A trial's value is a test mAP; the table "
        "(`hpo show`, <code>studies/&lt;study&gt;/final/</code>) pairs them by seed and "
        'split, so this page shows no "Best Trial" and no parameter importance.</p>'
        f'<p class="hpo-small">Stored as the study <code>{html.escape(stored_name)}</code>.'
        "</p></div></div>"
    )


def _floors_sentences(view: StudyView) -> tuple[str, str | None]:
    """``Floors (what no training reaches, val mAP): pixel floor 0.555, backbone floor
    (untrained tiny-vit) 0.662.``, and when the winner does not clear them, why that matters."""
    record = view.floors
    kinds = [k for k in ("pixels", "backbone") if (record.get(k) or [None])[0] is not None]
    if not kinds:
        return floors_text(record) + ".", None
    named = ", ".join(f"{floor_name(k, record)} {record[k][0]:.3f}" for k in kinds)
    warning = check(view.study, record)
    return (
        f"Floors (what no training reaches, {TARGET}): {named}.",
        f"{warning[0].upper()}{warning[1:]}." if warning else None,
    )


def _best_trial_sentence(view: StudyView, d: dict, companion_id: int | None) -> str:
    """What the dashboard's "Best Trial" card and History below are (HTML)."""
    done = view.completed()
    if not done:
        return "No trial has completed yet."
    best = max(done, key=lambda t: t.value)
    text = (
        f"The dashboard's \"Best Trial\" and History below show the search's own values, one "
        f"training per fold and none confirmed: its best, trial {best.number}, reached "
        f"{TARGET} {best.value:.3f}"
    )
    if not d["confirmed"]:
        text += "."
    elif d["winner"] == best.number:
        text += f"; the confirmed value above is its mean over {d['n']} fresh runs."
    else:
        text += f"; on fresh seeds, trial {d['winner']} won (above)."
    text = html.escape(text, quote=False)
    if companion_id is not None:
        text += f' <a href="/dashboard/studies/{companion_id}">The confirm runs</a>.'
    return text


# the figure: val mAP from 0 to 1 across, one row per confirmed config
_W, _LABEL, _RIGHT, _ROW, _TOP = 470, 150, 12, 24, 14


def _x(value: float) -> float:
    value = min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    return _LABEL + value * (_W - _LABEL - _RIGHT)


def _interval_svg(view: StudyView) -> str:
    """Each confirmed config's mean and 95 % interval on [0, 1] (the winner in blue), the
    reference baseline's mean dashed and each floor dotted, named in a key below."""
    from hpo.decide.confirm import metric

    summary = view.confirm or {}
    rows = summary.get("rows") or []
    winner, ref = summary.get("winner"), summary.get("reference_baseline")
    name = metric(summary)  # confirm mAP on confirm identities, else val mAP
    bottom = _TOP + _ROW * len(rows)
    out = []
    for i, r in enumerate(rows):
        y = _TOP + _ROW * i + _ROW / 2
        colour = WINNER_COLOUR if r["trial"] == winner else OTHER_COLOUR
        label = f"trial {r['trial']}" + (f" ({r['baseline']})" if r.get("baseline") else "")
        tip = f"{label}: {name} {r['mean']:.3f} {interval_text(*r['ci'])}, {r['n']} runs"
        weight = ' font-weight="bold"' if r["trial"] == winner else ""
        out.append(
            f"<g><title>{html.escape(tip)}</title>"
            f'<text x="{_LABEL - 8}" y="{y + 4:.1f}" text-anchor="end"{weight}>'
            f"{html.escape(label)}</text>"
            f'<line x1="{_x(r["ci"][0]):.1f}" x2="{_x(r["ci"][1]):.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{_x(r["mean"]):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/></g>'
        )
    key = []
    marks = [(k, (view.floors or {}).get(k) or [None]) for k in FLOOR_COLOURS]
    lines = [
        (FLOOR_COLOURS[k], "2,3", f"{floor_name(k, view.floors)} {vals[0]:.3f}", vals[0])
        for k, vals in marks
        if vals[0] is not None
    ]
    base = next((r for r in rows if r["trial"] == ref), None)
    if base is not None:
        lines.append((BASELINE_COLOUR, "6,3", f"baseline mean {base['mean']:.3f}", base["mean"]))
    for j, (colour, dash, text, value) in enumerate(lines):
        out.append(
            f'<line x1="{_x(value):.1f}" x2="{_x(value):.1f}" y1="{_TOP - 6}" y2="{bottom}" '
            f'stroke="{colour}" stroke-dasharray="{dash}" stroke-width="1.5"/>'
        )
        y = bottom + 38 + 16 * j
        key.append(
            f'<line x1="{_LABEL}" x2="{_LABEL + 22}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
            f'stroke-dasharray="{dash}" stroke-width="1.5"/>'
            f'<text x="{_LABEL + 28}" y="{y}">{html.escape(text)}</text>'
        )
    ticks = "".join(
        f'<line x1="{_x(v):.1f}" x2="{_x(v):.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#999"/>'
        f'<text x="{_x(v):.1f}" y="{bottom + 16}" text-anchor="middle">{v:g}</text>'
        for v in (0, 0.2, 0.4, 0.6, 0.8, 1)
    )
    axis = (
        f'<line x1="{_x(0)}" x2="{_x(1)}" y1="{bottom}" y2="{bottom}" stroke="#999"/>{ticks}'
        f'<text x="{_LABEL - 8}" y="{bottom + 16}" text-anchor="end">{name}</text>'
    )
    height = bottom + 30 + 16 * len(lines)
    return (
        f'<svg class="hpo-figure" role="img" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-size="12" fill="#333">'
        f"<title>confirmed {name} and 95 % intervals, with the floors</title>"
        f"{''.join(out)}{axis}{''.join(key)}</svg>"
    )


__all__ = ["companion_card", "shown_name", "study_card"]
