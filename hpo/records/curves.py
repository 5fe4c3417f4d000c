"""A trial's curves as a PNG: val mAP and train loss per epoch (one line per run) side by side,
and below them, across the width, the train loss split into its terms (identity, triplet,
SupCon) so that a SupCon weight ramp reads as one term growing, not as divergence.

Drawn with matplotlib's Agg canvas (antialiased lines and text; no pyplot state, no display,
no browser per trial; about 0.3 s and 80 kB): 880 x 640 px with fonts that stay legible down
to half that width. ``hpo dashboard`` shows it at its width on the trial page, where an image
artifact is shown inline (an HTML artifact would only be a download link).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

WIDTH, HEIGHT, DPI = 880, 640, 100
# the colours plotly draws traces in, so a run looks the same here and in the report
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
TERMS = (("id", "identity"), ("tri", "triplet"), ("supcon", "SupCon"))
TERM_COLOURS = ("#444444", "#8c564b", "#e377c2")  # apart from the runs' colours
Series = Sequence[tuple[str, list[tuple[int, float]]]]  # (name, [(epoch, value)]) per line


def _panel(ax, title: str, lines: Series, max_epoch: int, colours: Sequence[str]) -> None:
    """One panel: a line (with its points) per series, whole epochs on x."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, loc="left", fontsize=13)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=11)
    ax.set_xlabel("epoch", fontsize=11)
    ax.set_xlim(0.7, max(max_epoch, 1) + 0.3)
    if max_epoch <= 10:
        ax.set_xticks(range(1, max(max_epoch, 1) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    drawn = False
    for i, (_, pts) in enumerate(lines):
        xy = [(e, v) for e, v in pts if math.isfinite(v)]
        if not xy:
            continue
        drawn = True
        xs, ys = zip(*xy, strict=True)
        ax.plot(xs, ys, color=colours[i % len(colours)], linewidth=2, marker="o", markersize=4)
    if not drawn:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="#777")
        ax.set_yticks([])


def curves_png(title: str, epochs: Sequence[dict], runs: Sequence[dict]) -> bytes:
    """PNG bytes: val mAP (left) and train loss (right) per epoch, one line per run, and the
    loss terms of the first run below.

    ``epochs`` are history entries (keys run, epoch, mAP, loss, and the terms id, tri,
    supcon); ``runs`` name the runs (keys run, fold, seed) for the legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    names = {r["run"]: _run_name(r, len(runs)) for r in runs}
    order = sorted({e["run"] for e in epochs} | set(names))
    series = {
        key: [
            (
                names.get(run, f"run {run}"),
                [(e["epoch"], _num(e.get(key))) for e in epochs if e["run"] == run],
            )
            for run in order
        ]
        for key in ("mAP", "loss")
    }
    max_epoch = max([e["epoch"] for e in epochs] + [1])
    first = order[0] if order else 0
    terms = [
        (name, [(e["epoch"], _num(e.get(key))) for e in epochs if e["run"] == first])
        for key, name in TERMS
        if any(e.get(key) is not None for e in epochs)
    ]
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, x=0.01, ha="left", fontsize=15)
    grid = fig.add_gridspec(2, 2)
    top = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    _panel(top[0], "val mAP", series["mAP"], max_epoch, COLOURS)
    _panel(top[1], "train loss", series["loss"], max_epoch, COLOURS)
    where = f", {names.get(first, f'run {first}')}" if len(order) > 1 else ""
    below = fig.add_subplot(grid[1, :])
    _panel(below, f"train loss terms{where}", terms, max_epoch, TERM_COLOURS)
    if terms:
        below.legend([name for name, _ in terms], fontsize=11, loc="best")
    if order:  # one entry per run, below the panels (above, it would share the title's row)
        marks = [
            Line2D([], [], color=COLOURS[i % len(COLOURS)], linewidth=3)
            for i, _ in enumerate(order)
        ]
        labels = [names.get(run, f"run {run}") for run in order]
        fig.legend(marks, labels, loc="outside lower center", ncols=min(len(order), 5), fontsize=11)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return out.getvalue()


def _run_name(run: dict, n: int) -> str:
    if n == 1:
        return f"seed {run['seed']}"
    return f"fold {run['fold']}, seed {run['seed']}"


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan
