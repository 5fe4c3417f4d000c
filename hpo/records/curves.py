"""A trial's curves as a small PNG: val mAP and train loss per epoch (one line per run) side by
side, and below them, across the width, the train loss split into its terms (identity,
triplet, SupCon) so that a SupCon weight ramp reads as one term growing, not as divergence. The
layout is near 4:3 so that the dashboard's trial-page thumbnail stays legible.

Drawn with Pillow, already a dependency for the image cache: no browser (kaleido) per trial,
about 10 ms and 10-20 kB, and optuna-dashboard shows an image artifact inline on the trial
page, where an HTML artifact would only be a download link (and a self-contained plotly page
carries 3.5 MB of plotly.js).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PANEL_W, PANEL_H, TOP = 440, 300, 46
MARGIN = dict(left=58, right=14, top=28, bottom=40)
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


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round numbers spanning [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _panel(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    title: str,
    lines: Sequence[tuple[str, list[tuple[int, float]]]],
    max_epoch: int,
    *,
    width: int = PANEL_W,
    colours: Sequence[str] = COLOURS,
    named: bool = False,
) -> None:
    """One panel; ``named``: each line carries its name at its last point."""
    x0 = origin[0] + MARGIN["left"]
    y0 = origin[1] + MARGIN["top"]
    x1 = origin[0] + width - MARGIN["right"]
    y1 = origin[1] + PANEL_H - MARGIN["bottom"]
    small, font = _font(11), _font(13)
    draw.text((x0, origin[1] + 6), title, fill="#222", font=font)
    values = [v for _, pts in lines for _, v in pts if math.isfinite(v)]
    draw.rectangle((x0, y0, x1, y1), outline="#999")
    if not values:
        draw.text((x0 + 10, (y0 + y1) // 2), "no values", fill="#777", font=small)
        return
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.05
    lo, hi = lo - pad, hi + pad

    def px(epoch: float, value: float) -> tuple[float, float]:
        fx = (epoch - 1) / max(max_epoch - 1, 1)
        return x0 + 8 + fx * (x1 - x0 - 16), y1 - (value - lo) / (hi - lo) * (y1 - y0)

    for tick in _nice_ticks(lo, hi):
        y = px(1, tick)[1]
        draw.line((x0 - 4, y, x1, y), fill="#eee")
        draw.line((x0 - 4, y, x0, y), fill="#999")
        draw.text((x0 - 6, y), f"{tick:.3g}", fill="#444", font=small, anchor="rm")
    step = max(1, math.ceil(max_epoch / 10))
    for epoch in range(1, max_epoch + 1, step):
        x = px(epoch, lo)[0]
        draw.line((x, y1, x, y1 + 4), fill="#999")
        draw.text((x, y1 + 6), str(epoch), fill="#444", font=small, anchor="mt")
    draw.text(((x0 + x1) / 2, y1 + 22), "epoch", fill="#444", font=small, anchor="mt")
    for i, (name, pts) in enumerate(lines):
        colour = colours[i % len(colours)]
        xy = [px(e, v) for e, v in pts if math.isfinite(v)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)
        if named and xy:
            draw.text((xy[-1][0] - 4, xy[-1][1] - 6), name, fill=colour, font=font, anchor="rb")


def curves_png(title: str, epochs: Sequence[dict], runs: Sequence[dict]) -> bytes:
    """PNG bytes: val mAP (left) and train loss (right) per epoch, one line per run.

    ``epochs`` are history entries (keys run, epoch, mAP, loss); ``runs`` name the runs
    (keys run, fold, seed) for the legend.
    """
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
    image = Image.new("RGB", (2 * PANEL_W, 2 * PANEL_H + TOP), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN["left"], 6), title, fill="#111", font=_font(15))
    x = MARGIN["left"]
    for i, run in enumerate(order):  # the legend: one coloured mark and name per run
        label = names.get(run, f"run {run}")
        colour = COLOURS[i % len(COLOURS)]
        draw.line((x, 34, x + 16, 34), fill=colour, width=3)
        draw.text((x + 20, 34), label, fill="#333", font=_font(12), anchor="lm")
        x += 30 + int(draw.textlength(label, font=_font(12)))
    _panel(draw, (0, TOP), "val mAP", series["mAP"], max_epoch)
    _panel(draw, (PANEL_W, TOP), "train loss", series["loss"], max_epoch)
    where = f", {names.get(first, f'run {first}')}" if len(order) > 1 else ""
    _panel(
        draw,
        (0, TOP + PANEL_H),
        f"train loss terms{where}",
        terms,
        max_epoch,
        width=2 * PANEL_W,
        colours=TERM_COLOURS,
        named=True,
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _run_name(run: dict, n: int) -> str:
    if n == 1:
        return f"seed {run['seed']}"
    return f"fold {run['fold']}, seed {run['seed']}"


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan
