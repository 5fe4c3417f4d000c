"""The final table (``hpo final``) as a paper and a terminal show it: Markdown, LaTeX
(booktabs), CSV, a figure, and the lines ``hpo final`` and ``hpo show`` print.

Values are percentages, as hand re-ID papers print them: a row's value is its mean over seeds
and query/gallery splits, with the 95 % interval; the difference to the baseline is paired
by seed and split. The decision comes first, in the words every other view uses: "better than
the baseline", "worse than the baseline", "not distinguishable from the baseline", and
"below the pixel floor" when the pixels reach further.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from hpo.common.paths import atomic_write, atomic_write_text, study_dir

METRICS = ("rank1", "rank5", "rank10", "mAP")
NAMES = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP"}
NOT_COMPARABLE = "published; not comparable"
COMPARABLE = "published; same protocol"


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def cell(c: dict | None) -> str:
    """``85.9 [83.1, 88.4]``."""
    if not c:
        return "-"
    lo, hi = c["ci"]
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return pct(c["mean"])
    return f"{pct(c['mean'])} [{pct(lo)}, {pct(hi)}]"


def diff_cell(c: dict | None) -> str:
    """``+2.1 [-0.4, +4.6]``."""
    if not c:
        return "-"
    lo, hi = c["ci"]
    sign = lambda x: "-" if not math.isfinite(x) else f"{100 * x:+.1f}"  # noqa: E731
    return f"{sign(c['mean'])} [{sign(lo)}, {sign(hi)}]"


def words(d: dict | None) -> str:
    """What a paired difference says, in the project's words."""
    if not d:
        return "no baseline runs to compare with"
    lo, hi = d["ci"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval yet (one seed)"
    if lo > 0:
        return "better than the baseline"
    if hi < 0:
        return "worse than the baseline"
    return "not distinguishable from the baseline"


def _pixel_floor(section: dict) -> float | None:
    return next(
        (f["metrics"]["mAP"]["mean"] for f in section["floors"] if f["kind"] == "pixels"), None
    )


def headline(table: dict) -> list[str]:
    """One line per aspect: the winner's test mAP, what it says against the baseline, and the
    pixel floor when the winner does not clear it."""
    out = []
    for s in table["aspects"]:
        winner = next((r for r in s["rows"] if r["role"] in ("winner",)), None) or next(
            (r for r in s["rows"] if r["role"] == "baseline"), None
        )
        if winner is None or not winner["metrics"]:
            out.append(f"{s['aspect']}: no finished runs yet")
            continue
        m = winner["metrics"]["mAP"]
        text = f"{s['aspect']}: {winner['label']} test mAP {cell(m)} %"
        if winner["role"] == "winner" and winner["vs_baseline"]:
            d = winner["vs_baseline"]["mAP"]
            text += f", {diff_cell(d)} vs the baseline: {words(d)}"
        floor = _pixel_floor(s)
        if floor is not None and m["mean"] < floor:
            text += f"; below the pixel floor ({pct(floor)})"
        out.append(text)
    return out


def caption(table: dict, s: dict) -> str:
    seeds = len(table["seeds"])
    split = s.get("split") or "?"
    parts = [
        f"{s['aspect']}: test identities ({s.get('test_identities', '?')}, {split} split), "
        f"{s['num_splits']} query/gallery splits; each config trained on every training-side "
        f"identity on {seeds} fresh seeds; values in %, mean over seeds and splits with a 95 % "
        "interval per comparison (seeds and splits random; the splits redraw which images of "
        "these test identities form the gallery, so the intervals are about these people)"
    ]
    if s["aspect"] != table["tuned_on"]:
        parts.append(f"the study was tuned on {table['tuned_on']}, not on this aspect alone")
    if s.get("study_subjects_in_test"):
        parts.append(
            f"{s['study_subjects_in_test']} test subjects were on the study's training side"
        )
    if table.get("missing"):
        mine = [m for m in table["missing"] if m.startswith(s["aspect"] + ":")]
        if mine:
            parts.append(f"partial: {len(mine)} runs missing")
    late = [r for r in s["rows"] if r["late"]]
    for r in late:
        configs = f"{r['late']} config{'' if r['late'] == 1 else 's'}"
        parts.append(
            f"† {r['label']}: added after the test identities had been used for {configs}, "
            "so it is no clean hold-out"
        )
    return "; ".join(parts) + "."


def _label(r: dict) -> str:
    return r["label"] + (" †" if r.get("late") else "")


def _rows(s: dict, planned: int = 0) -> list[tuple[str, list[str], str, str]]:
    """(label, metric cells, difference cell, what) for every line of a section; a config with
    fewer than the ``planned`` seeds says how many it has."""
    out = []
    for r in s["rows"]:
        d = (r.get("vs_baseline") or {}).get("mAP")
        what = "baseline" if r["role"] == "baseline" else words(d)
        if r.get("diverged"):
            what += f" ({len(r['diverged'])} of {planned} seeds diverged)"
        if not r["seeds"]:
            what = "no test result yet" if not r.get("diverged") else "every seed diverged"
        elif len(r["seeds"]) + len(r.get("diverged", [])) < planned:
            what += f" (partial: {len(r['seeds'])} of {planned} seeds)"
        out.append(
            (
                _label(r),
                [cell(r["metrics"].get(m)) for m in METRICS],
                diff_cell(d) if r["role"] != "baseline" else "",
                what,
            )
        )
    for f in s["floors"]:
        out.append(
            (
                f"{f['label']} (floor)",
                [cell(f["metrics"].get(m)) for m in METRICS],
                "",
                "no training",
            )
        )
    for p in s["published"]:
        out.append(
            (
                p["label"],
                [pct(p["metrics"].get(m), 2) for m in METRICS],
                "",
                COMPARABLE if p["comparable"] else NOT_COMPARABLE,
            )
        )
    return out


def markdown(table: dict) -> str:
    lines = [f"# Final table: study {table['study']}", ""]
    lines += [f"- {h}" for h in headline(table)]
    lines.append("")
    for s in table["aspects"]:
        lines += [f"## {s['aspect']}", "", caption(table, s), ""]
        head = ["config", *(f"{NAMES[m]} (%)" for m in METRICS), "Δ mAP vs baseline", "note"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|" + "---:|" * 5 + "---|")
        for label, cells, diff, what in _rows(s, len(table["seeds"])):
            lines.append("| " + " | ".join([label, *cells, diff or "", what]) + " |")
        lines.append("")
    lines += _footer(table)
    return "\n".join(lines) + "\n"


def _footer(table: dict) -> list[str]:
    n = table["configs_on_test"]
    out = [
        f"Test identities used for {n} config{'' if n == 1 else 's'} over {table['uses']} "
        f"`hpo final` run(s); updated {table['updated']}."
    ]
    if table.get("other_runs"):
        out.append(
            f"{table['other_runs']} finished runs of other configs or aspects are kept in "
            f"{table['study']}.final; `hpo final` with those configs and aspects shows them."
        )
    if table["missing"]:
        out.append(
            f"Partial: {len(table['missing'])} runs missing ({'; '.join(table['missing'][:6])}"
            + (" ..." if len(table["missing"]) > 6 else "")
            + "); re-run `hpo final` to finish them."
        )
    out += [f"Note: {n}" for n in table.get("notes", [])]
    return out


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "†": r"$^\dagger$",
    "Δ": r"$\Delta$",
}


def _tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, one character at a time."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(table: dict) -> str:
    """One booktabs table per aspect (``\\usepackage{booktabs}``): values in %, the note
    column with each row's verdict, floors and published rows below a rule."""
    out = [f"% final table of study {table['study']} (hpo final); needs \\usepackage{{booktabs}}"]
    for s in table["aspects"]:
        text = caption(table, s)  # it says when runs are missing
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + _tex(text) + "}",
            r"\begin{tabular}{lrrrrrl}",
            r"\toprule",
            r"Config & Rank-1 (\%) & Rank-5 (\%) & Rank-10 (\%) & mAP (\%) & "
            r"$\Delta$mAP & Note \\",
            r"\midrule",
        ]
        rows = _rows(s, len(table["seeds"]))
        n_runs = len(s["rows"])
        for i, (label, cells, diff, what) in enumerate(rows):
            if i == n_runs:
                out.append(r"\midrule")
            out.append(" & ".join(_tex(x) for x in [label, *cells, diff, what]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def csv_text(table: dict) -> str:
    """Long format: one line per (aspect, row, metric); values in %, as in the other files."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "aspect",
            "row",
            "kind",
            "metric",
            "mean_pct",
            "ci_low_pct",
            "ci_high_pct",
            "df",
            "diff_vs_baseline_pct",
            "diff_low_pct",
            "diff_high_pct",
            "seeds",
            "late",
            "note",
        ]
    )
    num = lambda x: "" if x is None or not math.isfinite(x) else f"{100 * x:.4f}"  # noqa: E731
    plain = lambda x: "" if x is None or not math.isfinite(x) else f"{x:.2f}"  # noqa: E731
    for s in table["aspects"]:
        for r in s["rows"]:
            for m in METRICS:
                c = r["metrics"].get(m) or {"mean": None, "ci": [None, None], "df": None}
                d = (r.get("vs_baseline") or {}).get(m) or {"mean": None, "ci": [None, None]}
                w.writerow(
                    [
                        s["aspect"],
                        r["label"],
                        r["role"],
                        m,
                        num(c["mean"]),
                        num(c["ci"][0]),
                        num(c["ci"][1]),
                        plain(c["df"]),
                        num(d["mean"]),
                        num(d["ci"][0]),
                        num(d["ci"][1]),
                        len(r["seeds"]),
                        r["late"],
                        ""
                        if r["role"] == "baseline"
                        else words((r.get("vs_baseline") or {}).get(m)),
                    ]
                )
        for f in s["floors"]:
            for m in METRICS:
                c = f["metrics"][m]
                w.writerow(
                    [s["aspect"], f["label"], "floor", m, num(c["mean"]), num(c["ci"][0]),
                     num(c["ci"][1]), plain(c["df"]), "", "", "", 0, 0, "no training"]
                )  # fmt: skip
        for p in s["published"]:
            for m in METRICS:
                w.writerow(
                    [s["aspect"], p["label"], "published", m, num(p["metrics"].get(m)), "", "",
                     "", "", "", "", "", 0, COMPARABLE if p["comparable"] else NOT_COMPARABLE]
                )  # fmt: skip
    return buf.getvalue()


def text(table: dict, columns: int | None = None) -> str:
    """What ``hpo final`` and ``hpo show`` print: the decision first, then one line per row of
    each aspect, wrapped to the terminal (the CSV and Markdown files have every metric)."""
    from hpo.common.lines import fit, width

    columns = columns or width()
    lines = ["final table (test identities, used once; values in %):"]
    lines += [fit("  " + h, columns) for h in headline(table)]
    for s in table["aspects"]:
        lines.append(fit(caption(table, s), columns))
        for label, cells, diff, what in _rows(s, len(table["seeds"])):
            line = f"  {label}: mAP {cells[3]}, Rank-1 {cells[0]}"
            line += f"; {diff} vs the baseline: {what}" if diff else f"; {what}"
            lines.append(fit(line, columns))
    lines += [fit(x, columns) for x in _footer(table)]
    return "\n".join(lines)


def figure(table: dict, path: Path) -> Path:
    """Per aspect, each config's test mAP with its 95 % interval, the floors as lines."""
    body = figure_png(table)
    return atomic_write(path, lambda fh: fh.write(body), what="figure")


def figure_png(table: dict) -> bytes:
    """``figure``'s PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(table["aspects"])
    most = max((len(s["rows"]) for s in table["aspects"]), default=1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 1.6 + 0.45 * most), squeeze=False)
    for ax, s in zip(axes[0], table["aspects"], strict=True):
        rows = [r for r in s["rows"] if r["metrics"]]
        ys = list(range(len(rows)))
        for y, r in zip(ys, rows, strict=True):
            c = r["metrics"]["mAP"]
            lo, hi = c["ci"]
            err = (
                [[100 * (c["mean"] - lo)], [100 * (hi - c["mean"])]]
                if math.isfinite(lo) and math.isfinite(hi)
                else None
            )
            ax.errorbar(100 * c["mean"], y, xerr=err, fmt="o", capsize=3, color="#1f77b4")
        for f, style in zip(s["floors"], ("--", ":"), strict=False):
            ax.axvline(
                100 * f["metrics"]["mAP"]["mean"], ls=style, color="#7f7f7f", label=f["label"]
            )
        ax.set_yticks(ys, [_label(r) for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)  # the first row on top, as in the table
        ax.set_xlim(0, 100)
        ax.set_xlabel("test mAP (%), 95 % interval")
        ax.set_title(s["aspect"])
        if s["floors"]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.5), ncol=2,
                      frameon=False, title="floors (no training)", title_fontsize=7)  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def html_section(table: dict) -> list[str]:
    """The report's section: the decision, then each aspect's table and the figure."""
    import base64
    import html

    out = ["<h2>Final table: test identities, used once</h2>"]
    out += [f'<p class="headline"><b>{html.escape(h)}</b></p>' for h in headline(table)]
    for s in table["aspects"]:
        out.append(f"<h3>{html.escape(s['aspect'])}</h3><p>{html.escape(caption(table, s))}</p>")
        head = ["config", *(f"{NAMES[m]} (%)" for m in METRICS), "Δ mAP vs baseline", ""]
        out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        for label, cells, diff, what in _rows(s, len(table["seeds"])):
            tds = [label, *cells, diff, what]
            out.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in tds) + "</tr>")
        out.append("</table>")
    try:
        png = base64.b64encode(figure_png(table)).decode()
        out.append(f'<img alt="test mAP per config" src="data:image/png;base64,{png}">')
    except Exception as exc:  # a drawing problem never hides the table
        out.append(f'<p class="skip">figure skipped: {html.escape(str(exc))}</p>')
    out += [f'<p class="skip">{html.escape(x)}</p>' for x in _footer(table)]
    return out


def write_all(table: dict[str, Any]) -> dict[str, Path]:
    """``studies/<study>/final/table.{md,tex,csv}`` and ``figure.png``; each written whole."""
    folder = study_dir(table["study"]) / "final"
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "markdown": atomic_write_text(folder / "table.md", markdown(table), what="table"),
        "latex": atomic_write_text(folder / "table.tex", latex(table), what="table"),
        "csv": atomic_write_text(folder / "table.csv", csv_text(table), what="table"),
    }
    out["figure"] = figure(table, folder / "figure.png")
    return out


__all__ = ["csv_text", "figure", "headline", "latex", "markdown", "text", "words", "write_all"]
