"""The report's confirmation section: every raced config with its runs, its confirmed mean
and interval and its paired difference to the baseline, as a table and as a figure (points
with intervals, the reference baseline's mean as a line)."""

from __future__ import annotations

import html
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.views.headline import versus_baseline
from hpo.views.model import StudyView, as_view

FIGURE_ID = "fig-confirm"


def run_values(study: StudyView | optuna.Study) -> dict[int, list[float]]:
    """Each raced trial's finished confirm run values, by seed order."""
    runs: dict[int, list[tuple[int, float]]] = {}
    for t in as_view(study).companion_trials:
        if t.state == TrialState.COMPLETE and "candidate" in attrs_of(t):
            seed = int(attrs_of(t).get("confirm_seed", 0))
            runs.setdefault(int(attrs_of(t)["candidate"]), []).append((seed, t.value))
    return {n: [v for _, v in sorted(r)] for n, r in runs.items()}


def _diff(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    return f"{d['diff']:+.4f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p={d['p']:.2f}"


def figure(summary: dict[str, Any]):
    """Confirmed mean and interval of every raced config; the reference baseline as a line."""
    import plotly.graph_objects as go

    rows = summary.get("rows", [])
    labels = [
        f"trial {r['trial']}" + (f" ({r['baseline']})" if r["baseline"] else "") for r in rows
    ]
    means = [r["mean"] for r in rows]
    fig = go.Figure(
        go.Scatter(
            x=means,
            y=labels,
            mode="markers",
            marker={"size": 10},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [r["ci"][1] - r["mean"] for r in rows],
                "arrayminus": [r["mean"] - r["ci"][0] for r in rows],
            },
            hovertemplate="%{y}: %{x:.4f}<extra></extra>",
        )
    )
    ref = next((r for r in rows if r["trial"] == summary.get("reference_baseline")), None)
    if ref is not None:
        fig.add_vline(x=ref["mean"], line_dash="dash", line_color="#b00")
        fig.add_annotation(
            x=ref["mean"], y=1.02, yref="paper", text="baseline", showarrow=False, yanchor="bottom"
        )
    from hpo.decide.confirm import metric

    fig.update_layout(
        title=f"Confirmed {metric(summary)}, {int(summary.get('level', 0.95) * 100)}% intervals",
        xaxis_title=f"confirmed {metric(summary)}",
        height=140 + 40 * len(rows),
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        template="plotly_white",
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def section(study: StudyView | optuna.Study) -> list[str]:
    """HTML of the confirmation section; empty before a confirmation."""
    import plotly.io as pio

    from hpo.decide.confirm import metric
    from hpo.views.headline import headline

    view = as_view(study)
    summary = view.confirm
    if not summary or not summary.get("rows"):
        return []
    values = run_values(view)
    head = (
        f"<tr><th>trial</th><th>role</th><th>runs ({metric(summary)} by seed)</th>"
        "<th>confirmed mean [95% CI]</th><th>vs baseline</th><th></th></tr>"
    )
    body = []
    for r in summary["rows"]:
        role = r["role"] + (f" {r['baseline']}" if r["baseline"] else "")
        runs = ", ".join(f"{v:.3f}" for v in values.get(r["trial"], []))
        words = versus_baseline(r) or ("reference" if r["vs_baseline"] is None else "")
        body.append(
            f"<tr><td class='num'>{r['trial']}</td><td>{html.escape(role)}</td>"
            f"<td class='text'>{runs or r['n']}</td>"
            f"<td class='num'>{r['mean']:.4f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] n={r['n']}</td>"
            f"<td class='num'>{_diff(r['vs_baseline'])}</td><td>{html.escape(words)}</td></tr>"
        )
    div = pio.to_html(
        figure(summary),
        full_html=False,
        include_plotlyjs=False,
        div_id=FIGURE_ID,
        config={"responsive": True},
    )
    seeds = ", ".join(map(str, summary.get("seeds", [])))
    return [
        "<h2>Confirmation</h2>",
        f"<p><b>{html.escape(headline(view))}</b></p>",
        f"<p>Re-trained on fresh seeds {seeds} x {summary.get('folds', 1)} fold(s); "
        "differences paired by seed and fold.</p>",
        f"<table class='cmp'>{head}{''.join(body)}</table>",
        f'<div class="figure">{div}</div>',
    ]


__all__ = ["figure", "run_values", "section"]
