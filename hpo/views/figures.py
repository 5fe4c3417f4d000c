"""The plotly figures of a study that optuna-dashboard does not draw itself, and those the
standalone report adds (the curves of the top trials, intermediate values with pruned trials
marked, importances).

The dashboard draws optimisation history, importances and intermediate values on its own
pages; copies saved into the study would only repeat those panels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.common.attrs import attrs_of
from hpo.common.lines import trial_label
from hpo.views.model import StudyView, as_view

TARGET = "val mAP"
FIGURES = {  # name -> title, in page order
    "parallel": "Parallel coordinates: parameters and val mAP",
    "value_se": "val mAP ± SE per trial",  # + what each value averages, e.g. (3 folds)
    "curves": "Curves of the top trials: val mAP and train loss per epoch",
    "intermediate": "Intermediate values: val mAP per epoch, what the pruner saw",
    "importances": "Parameter importances for val mAP",
}
DASHBOARD_FIGURES = ("parallel", "value_se")  # the ones saved into the study for the dashboard
RELIABLE_IMPORTANCES = 10  # fewer complete trials than this: importances are mostly noise
_ABBREV = {
    "temperature": "temp",
    "template": "tmpl",
    "smoothing": "smooth",
    "reduction": "red",
    "instances": "inst",
    "patience": "pat",
    "transformer": "tf",
}
_BASELINE, _OTHER, _PRUNED = "#d62728", "#1f77b4", "#999999"
CURVE_TRIALS = 5  # trials in the curves figure
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Figures:
    figures: dict  # name -> plotly Figure, in FIGURES order
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was not drawn
    legends: dict[str, list[str]] = field(default_factory=dict)  # name -> abbreviations used


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def short_name(name: str, limit: int = 14) -> str:
    """``supcon_temperature`` -> ``supcon_temp``: axis labels that fit side by side."""
    if len(name) <= limit:
        return name
    parts = [_ABBREV.get(p, p if len(p) <= 8 else p[:6]) for p in name.split("_")]
    return "_".join(parts)


def _whole_dtick(largest: int) -> int:
    """Tick spacing for an axis of whole numbers (trials, epochs): never a fraction."""
    return max(1, math.ceil(largest / 12))


MAX_TICKS = 6  # per parallel-coordinates axis: more do not fit the dashboard's card


def _tick_text(values: list[float]) -> list[str]:
    """Short texts for round values, one notation per axis: ``0.1 0.3 1 3 10``, or
    ``1e-4 3e-4 1e-3`` where a decimal would run past 5 characters (``0.0001``)."""
    plain = [f"{v:g}" for v in values]
    if all(len(t) <= 5 and "e" not in t for t in plain):
        return plain
    short = [f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e") for v in values]
    return [t.removesuffix("e0") for t in short]  # 1e0 -> 1


def _linear_ticks(lo: float, hi: float, n: int, whole: bool) -> list[float]:
    """Multiples of the smallest round step (1, 2, 2.5, 5 x 10^k; whole numbers for an int
    axis) that put at most ``n`` ticks in [lo, hi]."""
    if hi <= lo:
        return [lo]
    step = 10.0 ** math.floor(math.log10((hi - lo) / n))
    for _ in range(4):  # 4 decades of steps always reach a count <= n
        for m in (1, 2, 2.5, 5):
            size = step * m
            if whole and (size < 1 or m == 2.5):
                continue
            first = math.ceil(lo / size - 1e-9)
            ticks = [round(k * size, 12) for k in range(first, math.floor(hi / size + 1e-9) + 1)]
            if len(ticks) <= n:
                return ticks
        step *= 10
    return [lo, hi]


def _log_ticks(lo: float, hi: float, n: int) -> list[float]:
    """Values (not exponents) at round points of a log axis from 10**lo to 10**hi: 1-2-5 or 1-3
    per decade, or every k-th decade, whichever puts the most ticks, at most ``n``, in range;
    a range under one decade that holds fewer than 2 of them gets round linear steps."""
    best: list[float] = []
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    spans = [((1, 2, 5), 1), ((1, 3), 1)] + [((1,), k) for k in range(1, len(decades) + 1)]
    for mantissas, every in spans:
        vals = [m * 10.0**e for e in decades if e % every == 0 for m in mantissas]
        vals = [v for v in vals if lo - 1e-9 <= math.log10(v) <= hi + 1e-9]
        if len(best) < len(vals) <= n or (len(vals) == len(best) and len(vals) <= n):
            best = vals  # a tie goes to the rounder set
    if len(best) < 2:
        best = _linear_ticks(10.0**lo, 10.0**hi, n, whole=False)
    return best


def _ticks(
    lo: float, hi: float, log: bool, n: int = MAX_TICKS, whole: bool = False
) -> tuple[list[float], list[str]]:
    """At most ``n`` ticks at round values from ``lo`` to ``hi`` (exponents of 10 on a log axis),
    each text the value at its position and no two texts alike."""
    values = _log_ticks(lo, hi, n) if log else _linear_ticks(lo, hi, n, whole)
    texts = _tick_text(values)
    kept = {t: v for v, t in zip(values, texts, strict=True)}  # the last tick of a text wins
    return [math.log10(v) if log else v for v in kept.values()], list(kept)


# The parallel coordinates' card on optuna-dashboard's study page: about half of a 1280 px
# window. A tick label sits left of its axis (7 px for the tick and its padding) and must end
# short of the axis before (8 px), at about 6 px a character (10 px Open Sans, digits widest).
CARD_WIDTH, TICK_PAD, CLEAR, CHAR_PX = 560, 7, 8, 6
_MARGIN = dict(t=125, l=34, r=75, b=60)  # r: the last axis title, turned 45 degrees


def _short_choices(choices: list[str], chars: int) -> list[str] | None:
    """The shortest prefixes, 3 characters or more, that tell ``choices`` apart and fit in
    ``chars`` (``arcface``, ``linear`` -> ``arc``, ``lin``); None where there are none."""
    for n in range(3, chars + 1):
        short = [c[:n] for c in choices]
        if len(set(short)) == len(choices):
            return short
    return None


def _dimension(name: str, trials: list[FrozenTrial], legend: list[str], chars: int = 16) -> dict:
    """One axis; categorical texts longer than ``chars`` are shortened or numbered, and the
    ``legend`` spells them out."""
    dist = next(t.distributions[name] for t in trials if name in t.distributions)
    label = short_name(name)
    if label != name:
        legend.append(f"{label} = {name}")
    missing = any(name not in t.params for t in trials)
    if isinstance(dist, CategoricalDistribution):
        choices = [str(c) for c in dist.choices]
        text = choices
        if any(len(c) > min(chars, 16) for c in choices):
            # prompt templates: numbered; short words: a prefix; spelled out below the figure
            short = _short_choices(choices, chars) if max(map(len, choices)) <= 16 else None
            text = short or [str(i + 1) for i in range(len(choices))]
            legend += [f"{label} {t} = {c}" for t, c in zip(text, choices, strict=True)]
        index = {c: i for i, c in enumerate(dist.choices)}
        values = [index.get(t.params.get(name), len(choices)) for t in trials]
        ticks = list(range(len(choices) + missing))
        text += ["n/a"] * missing
        # every choice on the axis, chosen or not (plotly would span only the values drawn)
        return dict(
            label=label, values=values, tickvals=ticks, ticktext=text, range=[0, max(ticks) or 1]
        )
    log = bool(getattr(dist, "log", False))
    lo, hi = (math.log10(dist.low), math.log10(dist.high)) if log else (dist.low, dist.high)
    whole = isinstance(dist, optuna.distributions.IntDistribution)
    ticks, text = _ticks(lo, hi, log, n=MAX_TICKS - missing, whole=whole)  # and "n/a"
    na = lo - 0.15 * (hi - lo or 1)
    values = [
        (math.log10(t.params[name]) if log else t.params[name]) if name in t.params else na
        for t in trials
    ]
    if missing:
        ticks, text = [na, *ticks], ["n/a", *text]
    return dict(
        label=label, values=values, tickvals=ticks, ticktext=text, range=[na if missing else lo, hi]
    )


def parallel_figure(study: optuna.Study) -> tuple[object | None, str | None, list[str]]:
    """Every complete trial as one line; a parameter a trial did not use sits at "n/a"."""
    import plotly.graph_objects as go

    done = [t for t in completed(study) if t.params]
    if not done:
        return None, "no completed trial with tuned parameters yet", []
    names = list(dict.fromkeys(k for t in done for k in t.params))
    legend: list[str] = []
    values = [t.value for t in done]
    dims = [dict(label=TARGET, values=values)]
    gap = (CARD_WIDTH - _MARGIN["l"] - _MARGIN["r"]) / max(1, len(names))  # between axes
    chars = int((gap - TICK_PAD - CLEAR) // CHAR_PX)
    dims += [_dimension(n, done, legend, chars) for n in names]
    fig = go.Figure(
        go.Parcoords(
            line=dict(
                color=values,
                colorscale="Viridis",
                showscale=True,
                # below the axes, not beside them: at the dashboard's half-width card every
                # pixel of width goes to the gaps between axes
                colorbar=dict(
                    title=dict(text=TARGET, side="right"),
                    orientation="h",
                    thickness=8,
                    len=0.5,
                    x=0.5,
                    y=-_BAR,
                    yanchor="top",
                    tickfont=dict(size=10),
                ),
            ),
            dimensions=dims,
            labelangle=-45,
            labelside="top",
            labelfont=dict(size=12),
            tickfont=dict(size=10),
            rangefont=dict(size=1, color="rgba(0,0,0,0)"),  # min/max labels only clutter
        )
    )
    # the title at the very top, above the turned axis titles
    fig.update_layout(margin=_MARGIN, title=dict(y=0.985, yanchor="top"))
    _spell_out(fig, legend)
    return fig, None, legend


FIGURE_HEIGHT = 440  # the dashboard draws a saved figure in a card 450 px high
LEGEND_CHARS, LEGEND_LINE = 92, 13  # a line of the codes' legend: characters at 10 px, px high
_BAR = 0.08  # the colour bar's offset below the axes, as a share of their height


def _legend_lines(items: list[str], chars: int = LEGEND_CHARS) -> list[str]:
    """``items`` packed into lines of at most ``chars`` characters, `` · `` between items; an
    item longer than a line (a prompt template) wraps at spaces, indented."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= chars:
            lines[-1] += " · " + item
            continue
        words, line = item.split(" "), ""
        for word in words:
            if line and len(line) + 1 + len(word) > chars:
                lines.append(line)
                line = "   " + word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return lines


def _spell_out(fig, legend: list[str]) -> None:
    """The short codes the axes use, spelled out in the figure below its colour bar, so they
    travel with it (the dashboard shows a saved figure without the note beside it)."""
    import html

    if not legend:
        return
    lines = _legend_lines(legend)
    bottom = _MARGIN["b"] + LEGEND_LINE * len(lines)
    height = FIGURE_HEIGHT - _MARGIN["t"] - bottom  # of the axes
    fig.update_layout(margin={**_MARGIN, "b": bottom})
    fig.add_annotation(
        text="<br>".join(html.escape(line) for line in lines),
        xref="paper",
        yref="paper",
        x=0,
        y=0,
        yshift=-(_BAR * height + 40),  # below the colour bar and its ticks
        xanchor="left",
        yanchor="top",
        align="left",
        showarrow=False,
        font=dict(size=10, color="#444"),
    )


def value_se_figure(study: optuna.Study) -> tuple[object | None, str | None]:
    """Each complete trial's value with its standard error over validation folds."""
    import plotly.graph_objects as go

    done = [
        t
        for t in completed(study)
        if isinstance(attrs_of(t).get("value_se"), (int, float))
        and math.isfinite(attrs_of(t)["value_se"])
    ]
    if not done:
        return None, "no trial has a value_se user attribute (validation folds give one)"
    fig = go.Figure()
    for name, colour, group in (
        ("baseline", _BASELINE, [t for t in done if attrs_of(t).get("baseline")]),
        ("searched", _OTHER, [t for t in done if not attrs_of(t).get("baseline")]),
    ):
        if not group:
            continue
        fig.add_scatter(
            x=[t.number for t in group],
            y=[t.value for t in group],
            error_y=dict(type="data", array=[attrs_of(t)["value_se"] for t in group]),
            mode="markers",
            marker=dict(color=colour, size=8, symbol="diamond" if name == "baseline" else "circle"),
            name=name,
            text=[
                f"{trial_label(t)}<br>{TARGET} {t.value:.4f} ± {attrs_of(t)['value_se']:.4f}"
                + (f" ({attrs_of(t)['n_folds']} folds)" if "n_folds" in attrs_of(t) else "")
                for t in group
            ],
            hoverinfo="text",
        )
    fig.update_layout(xaxis_title="trial", yaxis_title=f"{TARGET} ± SE")
    fig.update_xaxes(dtick=_whole_dtick(max(t.number for t in done)))
    return fig, None


def intermediate_figure(study: optuna.Study) -> tuple[object | None, str | None]:
    """val mAP per epoch for every trial; pruned trials dashed grey and crossed where stopped."""
    import plotly.graph_objects as go

    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    if not trials:
        return None, "no finished trial has reported a per-epoch value yet"
    fig = go.Figure()
    shown = set()
    for t in trials:
        pruned = t.state == TrialState.PRUNED
        kind = "pruned" if pruned else "baseline" if attrs_of(t).get("baseline") else "complete"
        steps = sorted(t.intermediate_values)
        colour = {"pruned": _PRUNED, "baseline": _BASELINE, "complete": _OTHER}[kind]
        fig.add_scatter(
            x=steps,
            y=[t.intermediate_values[s] for s in steps],
            mode="lines+markers",
            line=dict(color=colour, dash="dash" if pruned else "solid", width=1.5),
            marker=dict(
                size=[9 if pruned and s == steps[-1] else 4 for s in steps],
                symbol=["x" if pruned and s == steps[-1] else "circle" for s in steps],
                color=colour,
            ),
            name=kind,
            legendgroup=kind,
            showlegend=kind not in shown,
            hovertemplate=f"{trial_label(t)}, {t.state.name.lower()}<br>epoch %{{x}}: %{{y:.4f}}"
            "<extra></extra>",
        )
        shown.add(kind)
    epochs = max(max(t.intermediate_values) for t in trials)
    fig.update_xaxes(title="epoch", dtick=_whole_dtick(epochs))
    fig.update_layout(yaxis_title=TARGET)
    return fig, None


def _runs_apart(entries: list[dict], key: str) -> tuple[list, list]:
    """x (step) and y of ``key`` with a gap between runs, so runs are not joined by a line."""
    xs: list = []
    ys: list = []
    last_run = None
    for e in sorted(entries, key=lambda e: e["step"]):
        if last_run is not None and e["run"] != last_run:
            xs.append(None)
            ys.append(None)
        xs.append(e["step"])
        ys.append(e.get(key))
        last_run = e["run"]
    return xs, ys


def curves_figure(study: StudyView | optuna.Study, store=None, n: int = CURVE_TRIALS):
    """val mAP and train loss per epoch of the ``n`` best complete trials, from their history
    artifacts when ``store`` has them, else val mAP from their intermediate values."""
    from plotly.subplots import make_subplots

    from handreid.errors import UserError
    from hpo.records.history import intermediate_history

    view = as_view(study, store)
    top = sorted(view.completed(), key=lambda t: t.value, reverse=True)[:n]
    top = [t for t in top if t.intermediate_values]
    if not top:
        return None, "no completed trial has reported a per-epoch value yet"
    fig = make_subplots(rows=1, cols=2, subplot_titles=(TARGET, "train loss"))
    has_loss, several_runs = False, False
    for i, t in enumerate(top):
        try:
            entries = view.history(t, store)
        except UserError:  # an unreadable artifact: the intermediate values still tell
            entries = intermediate_history(t)
        base = attrs_of(t).get("baseline")
        colour = _BASELINE if base else _PALETTE[i % len(_PALETTE)]
        several_runs |= len({e["run"] for e in entries}) > 1
        for col, key in ((1, "mAP"), (2, "loss")):
            xs, ys = _runs_apart(entries, key)
            if not any(y is not None for y in ys):
                continue
            has_loss |= key == "loss"
            fig.add_scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                line=dict(color=colour, width=1.5, dash="dash" if base else "solid"),
                marker=dict(size=4, color=colour),
                name=f"{trial_label(t)}: {t.value:.4f}",
                legendgroup=str(t.number),
                showlegend=col == 1,
                hovertemplate=f"{trial_label(t)}<br>step %{{x}}: %{{y:.4f}}<extra></extra>",
                row=1,
                col=col,
            )
    if not has_loss:
        fig.add_annotation(
            text="no epoch histories stored<br>(trials from before they were kept)",
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="x2 domain",
            yref="y2 domain",
        )
    steps = max(max(t.intermediate_values) for t in top)
    title = "epoch (runs one after another)" if several_runs else "epoch"
    fig.update_xaxes(title=title, dtick=_whole_dtick(steps))
    return fig, None


def importances_figure(study: optuna.Study) -> tuple[object | None, str | None, str]:
    from optuna import visualization as vis

    n = len(completed(study))
    if n < 2 or not any(t.params for t in completed(study)):
        return None, "needs 2 completed trials with params", ""
    with warnings.catch_warnings():  # "few trials" warnings: the title says it plainly
        warnings.simplefilter("ignore")
        fig = vis.plot_param_importances(study, target_name=TARGET)
    caveat = (
        f" (unreliable: {n} complete trials, about {RELIABLE_IMPORTANCES} needed)"
        if n < RELIABLE_IMPORTANCES
        else ""
    )
    return fig, None, caveat


def _averaged_over(study: optuna.Study) -> str:
    """`` (1 split)``, `` (3 folds)``, `` (3 folds x 2 seeds)``: what the study's values average."""
    from hpo.common.lines import runs_text

    done = completed(study)
    kinds = sorted({runs_text(attrs_of(t)) for t in done})
    return f" ({', '.join(kinds)})" if kinds else ""


# the figures with val mAP on the y axis, and where it is (the curves' left panel)
FLOOR_FIGURES = {"value_se": {}, "intermediate": {}, "curves": {"row": 1, "col": 1}}
_FLOOR_COLOURS = {"pixels": "#2ca02c", "backbone": "#8c564b"}


def add_floors(fig, study: optuna.Study, vertical: bool = False, **where) -> None:
    """A dotted line at each validation floor (``hpo.decide.floors``), labelled with its name
    and value; ``vertical`` for a figure with val mAP on x."""
    from hpo.decide.floors import floor_name, stored

    record = stored(study)
    if record is None:
        return
    for kind in ("pixels", "backbone"):
        val = (record.get(kind) or [None])[0]
        if val is None:
            continue
        text = f"{floor_name(kind, record)} {val:.3f}"
        line = dict(line_dash="dot", line_color=_FLOOR_COLOURS[kind], **where)
        if vertical:  # named in the legend: a label on the line would cover the points
            fig.add_vline(x=val, showlegend=True, name=text, **line)
        else:
            fig.add_hline(y=val, annotation_text=text, annotation_position="bottom right", **line)


def confirm_figure(view: StudyView):
    """Every confirmed config's mean and 95 % interval on the whole val mAP scale [0, 1],
    the reference baseline's mean dashed, each floor dotted; None before a confirmation."""
    from hpo.views.confirm_report import figure

    summary = view.confirm
    if not summary or not summary.get("rows"):
        return None
    fig = figure(summary)
    fig.update_traces(showlegend=False)
    fig.update_xaxes(range=[0, 1], dtick=0.1, title=f"confirmed {TARGET} (95 % interval)")
    fig.update_layout(height=max(fig.layout.height or 0, 260), margin={"t": 70, "b": 50})
    add_floors(fig, view.study, vertical=True)
    return fig


def study_figures(study: StudyView | optuna.Study, names=tuple(FIGURES), store=None) -> Figures:
    """The figures in ``names`` that can be drawn now; the others in ``skipped`` with a reason.
    ``store``: the artifact store holding the trials' epoch histories (for ``curves``)."""
    view = as_view(study, store)
    study = view.study  # the read model's copy: nothing below reads the storage
    out = Figures({})
    for name in names:
        title = FIGURES[name]
        try:
            if name == "parallel":
                fig, why, legend = parallel_figure(study)
                if legend:
                    out.legends[name] = legend
            elif name == "value_se":
                fig, why = value_se_figure(study)
                title += _averaged_over(study)
            elif name == "curves":
                fig, why = curves_figure(view, store)
            elif name == "intermediate":
                fig, why = intermediate_figure(study)
            else:
                fig, why, caveat = importances_figure(study)
                title += caveat
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            fig, why = None, f"cannot be computed: {exc}"
        if fig is None:
            out.skipped[name] = why
            continue
        if not fig.data:
            out.skipped[name] = "nothing to draw"
            continue
        if name in FLOOR_FIGURES:
            add_floors(fig, study, **FLOOR_FIGURES[name])
        fig.update_layout(title={"text": title}, height=FIGURE_HEIGHT)
        if name != "parallel":
            fig.update_layout(margin={"t": 60})
        out.figures[name] = fig
    return out
