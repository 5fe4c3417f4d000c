"""Short texts for terminals and logs: a trial in one line, an epoch in one line, numbers with
3-4 significant figures and durations as ``3m05s``.

``hpo run``, ``hpo confirm``, ``hpo show`` and ``hpo trials`` print trials with these, so a
trial reads the same wherever it appears.
"""

from __future__ import annotations

import datetime
import math
import re
import shutil
import textwrap
from collections.abc import Mapping
from typing import Any

from handreid.errors import one_line
from handreid.text import pm  # the sign every hpo line uses
from hpo.common.attrs import attrs_of

# the trial states a listing filters on, and how many of the best trials it lists by default;
# here, not in hpo.views.listing, so that building the command line imports no view
STATES = ("complete", "pruned", "fail", "running", "waiting")
TOP = 5

WIDTH = 80  # the line width when the terminal's is unknown (a pipe, a 0-column TTY)
MIN_WIDTH = 40
ERROR_CHARS = 110


def width() -> int:
    """The terminal's columns (``COLUMNS`` first, as ``shutil`` reads it); ``WIDTH`` when the
    size is unknown or 0 (``script`` without a size, some CI consoles)."""
    columns = shutil.get_terminal_size((WIDTH, 24)).columns
    return max(columns, MIN_WIDTH) if columns > 0 else WIDTH


def fit(text: str, columns: int | None = None) -> str:
    """Each line of ``text`` wrapped at spaces to ``columns`` (the terminal's by default),
    continuation lines indented two more than the line; a word is never cut."""
    columns = columns or width()
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= columns:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out += textwrap.wrap(
            line,
            columns,
            initial_indent="",
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [line]
    return "\n".join(out)


def number(value: Any, digits: int = 3) -> str:
    """``0.52``, ``3.1e-4``, ``64``: floats with ``digits`` significant figures, compactly."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or value == 0:
        return str(value) if value else "0"
    if 1e-2 <= abs(value) < 1e4:
        return f"{value:.{digits}g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def duration(seconds: float | None) -> str:
    """``4.2s``, ``45s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def param_text(name: str, value: Any) -> str:
    """``lr_modules=3.1e-4``; a string with spaces is quoted, and shown whole (two prompt
    templates that differ at their end must read apart)."""
    if isinstance(value, str):
        return f"{name}={value!r}" if (" " in value or not value) else f"{name}={value}"
    return f"{name}={number(value)}"


def _param_items(params: Mapping[str, Any]) -> list[str]:
    return [param_text(k, v) for k, v in params.items()]


def params_text(params: Mapping[str, Any]) -> str:
    return " ".join(_param_items(params))


def _packed(items: list[str], width: int) -> list[str]:
    """``items`` joined by spaces into lines of at most ``width`` characters; an item is split
    only when it alone is wider, and then at spaces (a prompt template is never cut)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        elif len(item) > width:  # a template longer than the line: wrapped at spaces, whole
            lines += textwrap.wrap(
                item, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
            )
        else:
            lines.append(item)
    return lines


def runs_text(attrs: Mapping[str, Any]) -> str:
    """``3 folds``, ``2 seeds``, ``3 folds x 2 seeds`` or ``1 split``: what a value averages."""
    folds = int(attrs.get("n_folds") or 1)
    repeats = int(attrs.get("n_repeats") or 1)
    if attrs.get("on_confirm_ids"):  # a confirm run: one seed, measured on confirm identities
        return "1 run"
    if folds == 1 and repeats == 1:
        runs = len(attrs.get("fold_values") or [1])
        return "1 split" if runs == 1 else f"{runs} seeds"
    parts = ([f"{folds} folds"] if folds > 1 else []) + (
        [f"{repeats} seeds"] if repeats > 1 else []
    )
    return " x ".join(parts)


def value_text(value: float | None, se: float | None = None) -> str:
    """``0.612 ± 0.031``: a val mAP with its standard error (3 decimals: 3 significant figures
    for the values a useful trial reaches)."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}" + (f" {pm()} {se:.3f}" if se is not None and math.isfinite(se) else "")


# One vocabulary for every view: a val mAP with 3 decimals, ``±`` only before a standard
# error, a 95 % interval always as ``[lo, hi]``, a difference signed, a p-value with 2
# significant digits.
def interval_text(lo: float | None, hi: float | None, *, signed: bool = False) -> str:
    """``[0.601, 0.733]`` (a value's 95 % interval) or ``[-0.012, +0.034]`` (a difference's)."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "[-]"
    sign = "+" if signed else ""
    return f"[{lo:{sign}.3f}, {hi:{sign}.3f}]"


def diff_text(diff: float) -> str:
    """``+0.034``: a difference of two val mAPs."""
    return f"{diff:+.3f}" if math.isfinite(diff) else "-"


def p_text(p: float | None) -> str:
    """``p=0.29``, ``p=0.047``, ``p<0.001``: 2 significant digits."""
    if p is None or not math.isfinite(p):
        return "p=-"
    return "p<0.001" if p < 0.001 else f"p={float(f'{p:.2g}'):g}"


def trial_seconds(trial) -> float | None:
    """Wall time of a trial: the objective's own count (all its runs), else Optuna's start
    and end (a trial that failed before the objective recorded it)."""
    seconds = attrs_of(trial).get("seconds")
    if seconds is not None:
        return float(seconds)
    return trial.duration.total_seconds() if trial.duration is not None else None


def trial_label(trial) -> str:
    """``trial 12`` or ``trial 0 (baseline default)``."""
    name = attrs_of(trial).get("baseline")
    return f"trial {trial.number}" + (f" (baseline {name})" if name else "")


def confirm_label(trial) -> str:
    """``confirm trial 5 seed 2``: a run of ``hpo confirm`` (a trial of the companion study)."""
    attrs = attrs_of(trial)
    return f"confirm trial {attrs.get('candidate', '?')} seed {attrs.get('confirm_seed', '?')}"


_BETWEEN_RUNS = re.compile(r"best trial (\d+) on the same runs .*p=([0-9.]+)")


def prune_text(attrs: Mapping[str, Any], values: Mapping[int, float]) -> str:
    """``at fold 2/3, epoch 4 (val mAP 0.410)`` or ``after fold 2/3 (mean val mAP 0.402)``,
    plus why, when the reason adds to where; ``values``: the trial's intermediate values."""
    where = str(attrs.get("pruned_at") or "")
    runs = attrs.get("fold_values") or []
    if where.startswith("after") and runs:
        text = f"{where} (mean val mAP {value_text(sum(runs) / len(runs))})"
    else:
        text = f"at {where}" if where else ""
        if values:
            text += f" (val mAP {value_text(values[max(values)])})"
    reason = str(attrs.get("prune_reason") or "")
    if reason.startswith("loss diverged"):
        text += ": loss diverged"
    elif match := _BETWEEN_RUNS.search(reason):
        text += f": below trial {match[1]} on the same runs (p={match[2]})"
    elif reason and not reason.startswith("pruned at"):
        text += f": {_shortened(one_line(reason), 60)}"
    return text.strip()


def _shortened(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def trial_line(
    trial, *, label: str | None = None, params: bool = True, columns: int | None = None
) -> str:
    """One trial for a terminal or a log, in lines of at most ``columns`` characters (the
    terminal's by default): its facts joined by `` · `` and its parameters on indented lines
    when the whole does not fit, each parameter whole. Works for every state (a RUNNING trial shows its last
    epoch when it recorded ``progress``)."""
    attrs = attrs_of(trial)
    state = trial.state.name
    head = f"{label or trial_label(trial)} {state}"
    if state == "COMPLETE":
        metric = "confirm mAP" if attrs.get("on_confirm_ids") else "val mAP"
        head += f" {metric} {value_text(trial.value, attrs.get('value_se'))} ({runs_text(attrs)})"
    elif state == "PRUNED":
        head += " " + prune_text(attrs, trial.intermediate_values)
    elif (
        state == "RUNNING"
        and isinstance(attrs.get("progress"), Mapping)
        and attrs["progress"].get("epoch")
    ):
        head += " · " + epoch_text(None, attrs["progress"])
    parts = [head.rstrip()]
    if attrs.get("epochs_run") is not None:
        epochs = attrs["epochs_run"]
        parts.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    if state == "RUNNING" and trial.datetime_start is not None:
        elapsed = datetime.datetime.now() - trial.datetime_start
        parts.append(f"{duration(elapsed.total_seconds())} so far")
    elif state != "WAITING" and (seconds := trial_seconds(trial)) is not None:
        parts.append(duration(seconds))
    columns = columns or width()
    if state == "FAIL" and attrs.get("error"):
        room = max(min(ERROR_CHARS, columns - 11), 20)
        parts.append("error: " + _shortened(one_line(str(attrs["error"])), room))
    if state == "WAITING" and attrs.get("retry_of") is not None:
        parts.append(f"retry of trial {attrs['retry_of']}")
    line = " · ".join(parts)
    shown = params_text(trial.params) if params and trial.params else ""
    if len(line) + (3 + len(shown) if shown else 0) <= columns:
        return f"{line} · {shown}" if shown else line
    head = [fit(parts[0], columns)]  # the head wraps at spaces, the other facts stay whole
    # the short facts (epochs, duration) stay together: beside the head, else on one line of
    # their own, never one alone; an error goes beside them when it fits, else on its own line
    short = [p for p in parts[1:] if not p.startswith("error: ")]
    for group in [" · ".join(short), *(p for p in parts[1:] if p.startswith("error: "))]:
        if not group:
            continue
        last = head[-1].split("\n")[-1]
        if len(last) + 3 + len(group) <= columns:
            head[-1] += " · " + group
        else:
            head.append(fit("    " + group, columns))
    rows = _packed(_param_items(trial.params), columns - 4) if shown else []
    return "\n".join([*head, *("    " + r for r in rows)])


def epoch_text(label: str | None, progress: Mapping[str, Any]) -> str:
    """``trial 3 · fold 2/3 · epoch 4/8 · val mAP 0.412 · loss 2.31 · 3.1 s/epoch`` from a
    progress record (``hpo.fleet.progress.progress_record``); ``label`` None leaves out the trial."""
    parts = [label] if label else []
    if progress.get("where"):
        parts.append(str(progress["where"]))
    parts.append(f"epoch {progress.get('epoch', '?')}/{progress.get('epochs', '?')}")
    if progress.get("mAP") is not None:
        parts.append(f"{progress.get('metric', 'val mAP')} {value_text(progress['mAP'])}")
    if progress.get("loss") is not None:
        parts.append(f"loss {number(float(progress['loss']))}")
    if progress.get("seconds") is not None:
        parts.append(f"{float(progress['seconds']):.1f} s/epoch")
    return " · ".join(parts)


__all__ = [
    "confirm_label",
    "duration",
    "epoch_text",
    "fit",
    "number",
    "params_text",
    "pm",
    "prune_text",
    "runs_text",
    "trial_label",
    "trial_line",
    "value_text",
    "width",
]
