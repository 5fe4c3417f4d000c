"""What ``hpo show`` and ``hpo trials`` print: a study's summary, its trials and a trial's epochs,
as text for people and as JSON-ready dicts for programs (the same content in both). Each takes
the study's read model (``hpo.views.model``) or a study to read."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.common.lines import (
    STATES,
    TOP,
    _packed,
    _param_items,
    fit,
    number,
    param_text,
    params_text,
    pm,
    runs_text,
    trial_seconds,
    value_text,
    width,
)
from hpo.decide.floors import floor_lines
from hpo.views.model import StudyView, as_view


# ---- records (JSON-ready)
def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf as None, datetimes as ISO text and tuples as lists, so that
    ``json.dumps(..., allow_nan=False)`` writes standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat(timespec="seconds")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as ``hpo trials --json`` lists it."""
    a = attrs_of(trial)
    record = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "value_se": a.get("value_se"),
        "value_sd": a.get("value_sd"),
        "runs": runs_text(a) if trial.state == TrialState.COMPLETE else None,
        "fold_values": a.get("fold_values"),
        "n_folds": a.get("n_folds"),
        "n_repeats": a.get("n_repeats"),
        "seconds": trial_seconds(trial),
        "epochs": a.get("epochs_run"),
        "best_epoch": a.get("best_epoch"),
        "metrics": {k: a[k] for k in ("rank1", "rank5", "rank10", "mAP") if k in a},
        "pruned_at": a.get("pruned_at"),
        "prune_reason": a.get("prune_reason"),
        "error": a.get("error"),
        "status": a.get("status"),
        "baseline": a.get("baseline"),
        "retry_of": a.get("retry_of"),
        "progress": a.get("progress") if trial.state == TrialState.RUNNING else None,
        "started": trial.datetime_start,
        "finished": trial.datetime_complete,
        "params": dict(trial.params),
    }
    return json_ready(record)


def select(
    study: StudyView | optuna.Study, states: Iterable[str] | None = None
) -> list[FrozenTrial]:
    """The study's trials in the given states (``STATES``; all when None), by number."""
    trials = as_view(study).trials
    if not states:
        return list(trials)
    wanted = {TrialState[s.upper()] for s in states}
    return [t for t in trials if t.state in wanted]


def counts_of(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for t in trials:
        out[t.state.name.lower()] += 1
    return out


def top_trials(trials: Sequence[FrozenTrial], n: int = TOP) -> list[FrozenTrial]:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return sorted(done, key=lambda t: t.value, reverse=True)[:n]


def comparison_record(study: StudyView | optuna.Study) -> dict[str, Any] | None:
    """The best trial against the baseline (``hpo.decide.compare``) as plain data."""
    from hpo.decide.compare import compare_to_baseline

    view = as_view(study)
    c = compare_to_baseline(view.study)
    if c is None:
        return None
    finite = math.isfinite(c.diff_se)
    lo, hi = c.diff_ci() if finite else (None, None)
    return json_ready(
        {
            "best": c.best.number,
            "baseline": c.baseline.number,
            "baseline_name": attrs_of(c.baseline).get("baseline"),
            "same_trial": c.same_trial,
            "diff": c.diff,
            "diff_se": c.diff_se if finite else None,
            "ci95": [lo, hi] if finite else None,
            "p": c.p_value() if finite else None,
            "paired": c.paired,
            "changes": [
                {"name": ch.name, "baseline": _absent(ch.baseline), "best": _absent(ch.best)}
                for ch in c.changes
            ],
            "text": c.value_line(confirmed=view.confirm is not None),
        }
    )


def _absent(value: Any) -> Any:
    from hpo.decide.compare import _ABSENT

    return None if value is _ABSENT else value


def study_summary(study: StudyView | optuna.Study, top: int = TOP) -> dict[str, Any]:
    """``hpo show --json``: counts, best trial, top trials, baseline comparison, confirmation,
    floors and the final table."""
    from hpo.decide.confirm import verdict
    from hpo.decide.floors import floors_summary
    from hpo.views.headline import headline

    view = as_view(study)
    trials = view.trials
    best = top_trials(trials, 1)
    confirm = view.confirm
    return json_ready(
        {
            "study": view.name,
            "direction": view.study.direction.name.lower(),
            "counts": {**counts_of(trials), "total": len(trials)},
            "best": trial_record(best[0]) if best else None,
            "top": [trial_record(t) for t in top_trials(trials, top)],
            "baselines": [t.number for t in trials if attrs_of(t).get("baseline")],
            "baseline_comparison": comparison_record(view),
            "confirm": confirm,
            "confirm_verdict": verdict(confirm) if confirm else None,
            "headline": headline(view),
            "floors": floors_summary(view.study),
            "final": (view.final or {}).get("table"),  # hpo final's table, or None
        }
    )


# ---- text
def summary_lines(study: StudyView | optuna.Study) -> list[str]:
    """Counts and the best trial with its parameters, as ``hpo run`` ends and ``hpo show``
    starts."""
    view = as_view(study)
    trials = view.trials
    c = counts_of(trials)
    lines = [
        f"study {printable(view.name)}: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['fail']} failed, {c['running']} running"
    ]
    best = top_trials(trials, 1)
    if not best:
        return [*lines, "no completed trial yet"]
    b = best[0]
    label = f" (baseline {attrs_of(b)['baseline']})" if attrs_of(b).get("baseline") else ""
    rank1 = f", rank1 {attrs_of(b)['rank1']:.3f}" if "rank1" in attrs_of(b) else ""
    value = value_text(b.value, attrs_of(b).get("value_se"))
    lines.append(f"best trial {b.number}{label}: val mAP {value} ({runs_text(attrs_of(b))}){rank1}")
    width = max((len(k) for k in b.params), default=10)
    # 4 significant figures to read; `hpo export` and `show --json` keep every digit
    lines += [f"  {k:<{width}}  {number(v, 4)}" for k, v in b.params.items()]
    lines += floor_lines(view.study)
    if view.confirm is None:
        lines.append(
            "the best value is the maximum of noisy estimates: `hpo confirm` re-trains the top "
            "trials and the baseline on fresh seeds before you export"
        )
    return lines


def top_lines(trials: Sequence[FrozenTrial], n: int = TOP, columns: int | None = None) -> list[str]:
    """The best ``n`` complete trials, value ± SE, baselines marked, parameters whole (on
    indented lines below when they do not fit beside)."""
    columns = columns or width()
    top = top_trials(trials, n)
    if not top:
        return []
    labels = [
        f"baseline {attrs_of(t)['baseline']}" if attrs_of(t).get("baseline") else "" for t in top
    ]
    label_width = max(len(x) for x in labels)
    lines = [f"top trials (val mAP {pm()} SE):"]
    for t, label in zip(top, labels, strict=True):
        head = (
            f"  #{t.number:<5} {value_text(t.value, attrs_of(t).get('value_se')):<14} "
            f"{'(' + runs_text(attrs_of(t)) + ')':<11}"
        )
        if label_width:
            head += f" {label:<{label_width}}"
        rest = params_text(t.params)
        if len(head.rstrip()) + 2 + len(rest) <= columns:
            lines.append(f"{head}  {rest}".rstrip())
            continue
        lines.append(head.rstrip())
        lines += ["      " + r for r in _packed(_param_items(t.params), columns - 6)]
    return lines


def comparison_lines(study: StudyView | optuna.Study) -> list[str]:
    from hpo.decide.compare import compare_to_baseline

    view = as_view(study)
    c = compare_to_baseline(view.study)
    if c is None:
        return []
    lines = [c.value_line(confirmed=view.confirm is not None)]
    if not c.same_trial:
        changes = c.change_lines()
        lines.append("  parameters changed from the baseline:" if changes else "  same parameters")
        lines += [f"    {line}" for line in changes]
    return lines


def show_text(study: StudyView | optuna.Study, top: int = TOP) -> str:
    """``hpo show``: summary, top trials, best vs baseline, and the confirm table if any."""
    from hpo.decide.confirm import format_summary
    from hpo.search.baselines import dropped_lines
    from hpo.views.headline import headline

    view = as_view(study)
    trials = list(view.trials)
    lines = [headline(view), *summary_lines(view), *dropped_lines(trials)]
    lines += top_lines(trials, top) + comparison_lines(view)
    confirm = view.confirm
    if confirm:
        lines.append(format_summary(confirm))
    table = (view.final or {}).get("table")
    if table:
        from hpo.views.final_table import text

        lines.append(text(table))
    return fit("\n".join(lines))


# complete trials first (their values are comparable), then pruned ones (a value at the
# epoch they were stopped), then the rest by number
_TABLE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}


def trials_table(trials: Sequence[FrozenTrial], columns: int | None = None) -> str:
    """``hpo trials --table``: one row per trial, best first: number, state, val mAP, SE and
    the parameters that fit ``columns`` (the terminal's by default); the rightmost parameters
    that do not fit are left out, and a last line names them."""
    from hpo.common.table import Column, fitted, render, split_header

    columns = columns or width()

    def order(t: FrozenTrial):
        rank = _TABLE_ORDER.get(t.state, 2)
        value = t.value if rank < 2 and t.value is not None and math.isfinite(t.value) else None
        return (rank, value is None, -(value or 0.0), t.number)

    rows = sorted(trials, key=order)
    se = [attrs_of(t).get("value_se") for t in rows]
    names = list(dict.fromkeys(k for t in rows for k in t.params))
    table = [
        Column("trial", [str(t.number) for t in rows], right=True, keep=True),
        Column("state", [t.state.name for t in rows], keep=True),
        Column("val mAP", [value_text(t.value) for t in rows], right=True, keep=True),
        Column("SE", [_se_text(s) for s in se], right=True, keep=True),
    ]
    for name in names:
        cells = [_param_cell(t.params, name) for t in rows]
        table.append(Column(split_header(name, cells), cells, right=_numeric(rows, name)))
    shown = fitted(table, columns)
    lines = render(shown)
    left = [c.header.replace("\n", "") for c in table if all(c is not x for x in shown)]
    if left:
        many = f"{len(left)} parameter{'s' if len(left) > 1 else ''}"
        lines.append(
            fit(
                f"{many} left out to fit {columns} columns: {', '.join(left)} "
                "(`hpo trials --long` shows every parameter)",
                columns,
            )
        )
    return "\n".join(lines)


def _se_text(se: Any) -> str:
    return f"{se:.3f}" if isinstance(se, (int, float)) and math.isfinite(se) else "-"


def _param_cell(params: Mapping[str, Any], name: str) -> str:
    """A parameter's value in a table cell: a number with 3 significant figures, a string
    whole (quoted when it has spaces, as in a trial line); ``-`` when the trial has none."""
    if name not in params:
        return "-"
    return param_text(name, params[name]).removeprefix(f"{name}=")


def _numeric(rows: Sequence[FrozenTrial], name: str) -> bool:
    return all(
        isinstance(t.params[name], (int, float)) and not isinstance(t.params[name], bool)
        for t in rows
        if name in t.params
    )


def studies_table(storage, summaries: Sequence[Any], columns: int | None = None) -> str:
    """``hpo ls``: one row per study (``optuna.get_all_study_summaries``) with its trials, best
    val mAP, confirmed winner with its 95 % CI and how it compares with the baseline; each
    companion of confirm runs on a line under its parent. Columns that do not fit
    ``columns`` are left out from the right and named on a last line."""
    from hpo.common.table import Column, fitted, render
    from hpo.records.companion import companion_kind, parent_name
    from hpo.views.headline import decision

    columns = columns or width()
    names = {s.study_name for s in summaries}
    parents, children = [], {}
    for s in sorted(summaries, key=lambda s: s.study_name):
        parent = parent_name(s.study_name)
        if parent is not None and parent in names:
            children.setdefault(parent, []).append(s)
        else:
            parents.append(s)
    cells: list[list[str]] = []
    for s in parents:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        best = s.best_trial.value if s.best_trial is not None else None
        cells.append(
            [
                printable(s.study_name),
                str(s.n_trials),
                value_text(best),
                *_confirmed(decision(study)),
            ]
        )
    table = [
        Column("study", [c[0] for c in cells], keep=True),
        Column("trials", [c[1] for c in cells], right=True, keep=True),
        Column("best", [c[2] for c in cells], right=True, keep=True),
        Column("confirmed [95% CI]", [c[3] for c in cells], keep=True),
        Column("vs baseline", [c[4] for c in cells]),
    ]
    shown = fitted(table, columns)
    head, *rows = render(shown)
    lines = [head]
    for s, line in zip(parents, rows, strict=True):
        lines.append(line)
        for child in children.get(s.study_name, []):  # its runs, not a row of its own
            what = {"confirm": "confirm runs", "final": "final runs (test identities)"}
            kind = what[companion_kind(child.study_name)]
            lines.append(fit(f"  {printable(child.study_name)}: {child.n_trials} {kind}", columns))
    left = [c.header for c in table if all(c is not x for x in shown)]
    if left:
        lines.append(
            fit(
                f"left out to fit {columns} columns: {', '.join(left)} (`hpo show` has it)", columns
            )
        )
    return "\n".join(lines)


def _confirmed(d: Mapping[str, Any]) -> list[str]:
    """The ``confirmed [95% CI]`` and ``vs baseline`` cells of a study's ``hpo ls`` row."""
    from hpo.common.lines import interval_text

    if not d["confirmed"]:
        return ["not confirmed", "-"]
    versus = d["vs_baseline"] or "-"
    if d["winner"] == d["reference_baseline"]:
        versus = "is the baseline"
    versus = versus.removesuffix(" than").removesuffix(" from")
    if d["partial"]:
        versus += " (partial)"
    return [f"#{d['winner']} {d['mean']:.3f} {interval_text(*d['ci'])}", versus]


def printable(name: str) -> str:
    """A name for the terminal: escaped when it holds control characters (a name chosen by
    another user of a shared database must not move the cursor or clear the screen)."""
    return name if name.isprintable() else repr(name)


# ---- one trial's epochs
def find_trial(study: StudyView | optuna.Study, number: int) -> FrozenTrial:
    view = as_view(study)
    found = view.trial(number)
    if found is not None:
        return found
    n = len(view.trials)
    span = f"trials 0..{n - 1}" if n else "no trials yet"
    raise UserError(f"study {view.name!r} has no trial {number} ({span})")


def epoch_rows(
    study: StudyView | optuna.Study, trial: FrozenTrial, store=None
) -> list[dict[str, Any]]:
    """Per-epoch rows of a trial (``hpo.records.history.load_history``): its ``history.json``
    artifact when the view's store (or ``store``) holds one (loss terms, learning rates,
    Rank-1/5/10, seconds too), else its intermediate values as run, fold, epoch, step, mAP."""
    return as_view(study, store).history(trial, store)


# (key, header, format) of the columns a row may have, in table order
_COLUMNS = (
    ("mAP", "val mAP", ".3f"),
    ("rank1", "rank1", ".3f"),
    ("rank5", "rank5", ".3f"),
    ("rank10", "rank10", ".3f"),
    ("loss", "loss", ".4g"),
    ("id", "id", ".4g"),
    ("tri", "tri", ".4g"),
    ("supcon", "supcon", ".4g"),
)


def epoch_table(rows: Sequence[Mapping[str, Any]], columns: int | None = None) -> str:
    """A trial's epochs as a table, one row per validated epoch; ``*`` marks each run's best
    val mAP. Rows hold ``run, fold, epoch, step, mAP`` and may hold ``loss, id, tri, supcon,
    lr_*, rank1, rank5, rank10, seconds`` (a column appears when any row has it)."""
    if not rows:
        return "no validated epoch recorded"
    runs = sorted({int(r.get("run", 0)) for r in rows})
    folds = sorted({int(r.get("fold", 0)) for r in rows})
    cols: list[tuple[str, str, Any]] = []
    if len(runs) > 1 or folds != [0]:
        cols.append(("fold", "fold", lambda v: str(int(v) + 1)))
    if len(runs) > len(folds):
        cols.append(("run", "run", lambda v: str(int(v) + 1)))
    cols.append(("epoch", "epoch", str))
    for key, header, fmt in _COLUMNS:
        if any(r.get(key) is not None for r in rows):
            cols.append((key, header, lambda v, f=fmt: format(float(v), f)))
    lrs = sorted({k for r in rows for k in r if k.startswith("lr_")})
    cols += [(k, k, lambda v: number(float(v), 2)) for k in lrs]
    if any(r.get("seconds") is not None for r in rows):
        cols.append(("seconds", "s", lambda v: f"{float(v):.1f}"))
    best = {}
    for r in rows:
        run = int(r.get("run", 0))
        if r.get("mAP") is not None and (run not in best or r["mAP"] > best[run]["mAP"]):
            best[run] = r
    from hpo.common.table import Column, render, split_header

    marks = ["*" if best.get(int(r.get("run", 0))) is r else "" for r in rows]
    table = [Column(h, [_cell(r.get(k), f) for r in rows], right=True) for k, h, f in cols]
    limit = columns or width()
    keys = [c for c, (k, _, _) in zip(table, cols, strict=True) if k in ("fold", "run", "epoch")]
    rest = [c for c in table if all(c is not k for k in keys)]
    star = Column("", marks)
    if _width([*table, star]) > limit:  # long names (lr_clip_visual) on two lines first
        rest = [Column(split_header(c.header, c.cells), c.cells, right=True) for c in rest]
    # columns that still do not fit go to a second table below, keyed the same way; every
    # part ends with the best-epoch mark, so that each reads on its own
    parts, part = [], list(keys)
    for c in rest:
        if len(part) > len(keys) and _width([*part, c, star]) > limit:
            parts.append([*part, star])
            part = list(keys)
        part.append(c)
    parts.append([*part, star])
    text = []
    for n, part in enumerate(parts):
        text += [""] if n else []
        text += render(part)
    return "\n".join([*text, "* best val mAP of the run"])


def _width(columns) -> int:
    return sum(c.width + 2 for c in columns) - 2


def _cell(value: Any, fmt) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # a diverged loss says so
    return fmt(value)


__all__ = [
    "STATES",
    "comparison_record",
    "epoch_rows",
    "epoch_table",
    "find_trial",
    "json_ready",
    "printable",
    "select",
    "show_text",
    "studies_table",
    "study_summary",
    "summary_lines",
    "trial_record",
    "trials_table",
]
