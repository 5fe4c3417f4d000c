"""The study's decision in one line: the confirmed winner with its confirmed value, interval
and difference to the baseline in words, or that the best trial is not confirmed yet.

``hpo show`` starts with it, ``hpo ls`` ends each row with its short form, and the dashboard
note, the report and ``hpo export`` lead with it, so that every place names the same winner.
Each function takes the study's read model (``hpo.views.model``) or a study to read.
"""

from __future__ import annotations

from typing import Any

import optuna

from hpo.common.attrs import attrs_of
from hpo.common.lines import diff_text, interval_text
from hpo.decide.confirm import metric, on_new_ids, scope
from hpo.views.model import StudyView, as_view

WORDS = ("better than", "not distinguishable from", "worse than")


def versus_baseline(row: dict[str, Any]) -> str | None:
    """``better than`` / ``not distinguishable from`` / ``worse than`` the reference baseline,
    from the row's paired interval; None without one."""
    d = row.get("vs_baseline")
    if not d:
        return None
    lo, hi = d["ci"]
    return WORDS[0] if lo > 0 else WORDS[2] if hi < 0 else WORDS[1]


def decision(study: StudyView | optuna.Study) -> dict[str, Any]:
    """The parts of the headline as data (``hpo show --json`` and tests read them)."""
    view = as_view(study)
    summary = view.confirm
    rows = {r["trial"]: r for r in (summary or {}).get("rows", [])}
    winner = (summary or {}).get("winner")
    if winner is None or winner not in rows:
        done = view.completed()
        best = max(done, key=lambda t: t.value) if done else None
        return {"confirmed": False, "best": best.number if best else None}
    row, ref = rows[winner], summary.get("reference_baseline")
    out = {
        "confirmed": True,
        "partial": not summary.get("complete", True),
        "winner": winner,
        "baseline_name": row.get("baseline") or None,
        "mean": row["mean"],
        "ci": list(row["ci"]),
        "n": row["n"],
        "reference_baseline": ref,
        "vs_baseline": None,
        "diff": None,
    }
    if winner == ref:
        others = [r for r in rows.values() if r["role"] != "baseline" and r.get("vs_baseline")]
        if others:
            best = max(others, key=lambda r: r["mean"])
            out |= {"best_candidate": best["trial"], "diff": best["vs_baseline"]}
            out["vs_baseline"] = versus_baseline(best)
    elif row.get("vs_baseline"):
        out |= {"diff": row["vs_baseline"], "vs_baseline": versus_baseline(row)}
    return out


def headline(study: StudyView | optuna.Study) -> str:
    """``confirmed winner: trial 5, val mAP 0.671 [0.650, 0.692] (3 runs); better than the
    baseline (trial 0) by +0.021 [+0.004, +0.038]``, or what is known before a confirmation."""
    view = as_view(study)
    d = decision(view)
    if not d["confirmed"]:
        if d["best"] is None:
            return "no completed trial yet"
        best = view.trial(d["best"])
        from hpo.common.lines import runs_text, value_text

        se = attrs_of(best).get("value_se")
        return (
            f"not confirmed yet: best trial {best.number}, val mAP {value_text(best.value, se)} "
            f"({runs_text(attrs_of(best))}); `hpo confirm` re-trains the top trials and the "
            "baseline on fresh seeds"
        )
    who = f"trial {d['winner']}"
    if d["baseline_name"]:
        who = f"the baseline, trial {d['winner']} ({d['baseline_name']})"
    summary = view.confirm or {}
    text = (
        f"confirmed winner: {who}, {metric(summary)} {d['mean']:.3f} {interval_text(*d['ci'])} "
        f"({d['n']} runs)"
    )
    if d["diff"] is not None:
        diff = f"{diff_text(d['diff']['diff'])} {interval_text(*d['diff']['ci'], signed=True)}"
        if d["winner"] == d["reference_baseline"]:
            text += (
                f"; the best candidate, trial {d['best_candidate']}, is {d['vs_baseline']} "
                f"it{scope(summary)} ({diff})"
            )
        else:
            text += (
                f"; {d['vs_baseline']} the baseline (trial {d['reference_baseline']})"
                f"{scope(summary)} by {diff}"
            )
    elif d["reference_baseline"] is None:
        text += "; no baseline was confirmed to compare with"
    if d["partial"]:
        text += " (partial: some runs are missing; re-run `hpo confirm`)"
    return text


def short(study: StudyView | optuna.Study) -> str:
    """The ``hpo ls`` form: ``confirmed trial 0 0.665 [0.601, 0.730]`` or ``not confirmed``
    (``±`` is kept for a standard error; an interval is always ``[lo, hi]``)."""
    d = decision(study)
    if not d["confirmed"]:
        return "not confirmed"
    words = f", {d['vs_baseline']} baseline" if d["vs_baseline"] else ""
    if words and not on_new_ids(as_view(study).confirm or {}):
        words += " on its own val ids"
    if d["winner"] == d["reference_baseline"]:
        words = ", the baseline"
    return f"confirmed trial {d['winner']} {d['mean']:.3f} {interval_text(*d['ci'])}{words}"


__all__ = ["decision", "headline", "short", "versus_baseline"]
