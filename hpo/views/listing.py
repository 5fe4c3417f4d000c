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
from hpo.common.lines import (
    STATES,
    TOP,
    _packed,
    _param_items,
    fit,
    number,
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
    a = trial.user_attrs
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
            "baseline_name": c.baseline.user_attrs.get("baseline"),
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
    """``hpo show --json``: counts, best trial, top trials, baseline comparison, confirmation."""
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
            "baselines": [t.number for t in trials if t.user_attrs.get("baseline")],
            "baseline_comparison": comparison_record(view),
            "confirm": confirm,
            "confirm_verdict": verdict(confirm) if confirm else None,
            "headline": headline(view),
            "floors": floors_summary(view.study),
        }
    )


# ---- text
def summary_lines(study: StudyView | optuna.Study) -> list[str]:
    """Counts and the best trial with its parameters, as ``hpo run`` ends and ``hpo show``
    starts."""
    from hpo.views.export import value_text as se_text

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
    label = f" (baseline {b.user_attrs['baseline']})" if b.user_attrs.get("baseline") else ""
    rank1 = f" (rank1 {b.user_attrs['rank1']:.4f})" if "rank1" in b.user_attrs else ""
    lines.append(f"best trial {b.number}{label}: val mAP {se_text(b)}{rank1}")
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
        f"baseline {t.user_attrs['baseline']}" if t.user_attrs.get("baseline") else "" for t in top
    ]
    label_width = max(len(x) for x in labels)
    lines = [f"top trials (val mAP {pm()} SE):"]
    for t, label in zip(top, labels, strict=True):
        head = (
            f"  #{t.number:<5} {value_text(t.value, t.user_attrs.get('value_se')):<14} "
            f"{'(' + runs_text(t.user_attrs) + ')':<11}"
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
    return fit("\n".join(lines))


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
    cells = [[h for _, h, _ in cols] + [""]]
    for r in rows:
        line = [_cell(r.get(k), f) for k, _, f in cols]
        line.append("*" if best.get(int(r.get("run", 0))) is r else "")
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols) + 1)]
    # columns that do not fit the terminal go to a second table below, keyed the same way
    keys = [i for i, (k, _, _) in enumerate(cols) if k in ("fold", "run", "epoch")]
    rest = [i for i in range(len(cols) + 1) if i not in keys]
    limit, parts, part = columns or width(), [], list(keys)
    for i in rest:
        if len(part) > len(keys) and sum(widths[j] + 2 for j in [*part, i]) - 2 > limit:
            parts.append(part)
            part = list(keys)
        part.append(i)
    parts.append(part)
    text = []
    for n, part in enumerate(parts):
        text += [""] if n else []
        text += ["  ".join(line[i].rjust(widths[i]) for i in part).rstrip() for line in cells]
    return "\n".join([*text, "* best val mAP of the run"])


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
    "study_summary",
    "summary_lines",
    "trial_record",
]
