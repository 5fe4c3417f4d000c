"""A study's floors (``handreid.floors``): computed once, stored on the study, shown beside
every value, and named in words when the winner does not clear them.

The record is the study user attribute ``floors`` (well under 200 characters), keyed by a
digest of the split (every fold's identity digest, the query/gallery splits, the input size
and the backbone): a second worker, a resumed run or a rerun finds it and computes nothing.

The winner's interval is the confirmed 95 % CI of ``hpo confirm``'s winner when a confirm
exists, else the best trial's value ± 2 SE. It *clears* the floors when its lower end is above
the higher validation floor; otherwise every place that shows the floors says so. A confirm
measured on the study's confirm identities is checked against the floors measured there
(``confirm`` in the record, added once by ``hpo confirm``: ``ensure_confirm_floors``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.common.lines import interval_text

ATTR = "floors"
_KINDS = ("pixels", "backbone")


CONFIRM_RECORD = "confirm_floors"  # a study record: {"key": the floors' key, "values": [p, b]}


def stored(study: optuna.Study) -> dict[str, Any] | None:
    """The study's floors record, or None (studies made before floors existed); with
    ``confirm``, the floors on the confirm identities, when measured for the same split."""
    from hpo.records.optuna_internals import study_record

    record = study.user_attrs.get(ATTR)
    if not (isinstance(record, dict) and "pixels" in record):
        return None
    extra = study_record(study, CONFIRM_RECORD)
    if isinstance(extra, dict) and extra.get("key") == record.get("key"):
        record = {**record, "confirm": extra["values"]}
    return record


def ensure_floors(study: optuna.Study, cfg, data_for, device=None) -> tuple[dict, bool]:
    """The study's floors for ``cfg`` (its base config): the stored record when its key
    matches, else computed now and stored. Returns ``(record, computed)``.

    The key needs only the identity splits (read from the CSV, no image decoded), so a worker
    that finds the record does no inference at all.
    """
    from handreid.data import load_splits
    from handreid.floors import compute_floors, floors_key, fold_configs

    with warnings.catch_warnings():  # missing images were reported when the data was prepared
        warnings.simplefilter("ignore", UserWarning)
        digests = [load_splits(c).identity_lists()["digest"] for c in fold_configs(cfg)]
    key = floors_key(cfg, digests)
    record = stored(study)
    if record is not None and record.get("key") == key:
        return record, False
    record = compute_floors(cfg, data_for, device).record()
    study.set_user_attr(ATTR, record)
    return record, True


def ensure_confirm_floors(study: optuna.Study, cfg, data_for, device=None) -> dict | None:
    """Add the floors on the study's confirm identities to its record (``confirm``: pixel and
    backbone mAP there), once: a confirm measured there is checked against them, not against
    the validation folds' floors. Nothing to do without a record or confirm identities."""
    from handreid.floors import compute_floors
    from hpo.records.optuna_internals import set_study_record

    record = stored(study)
    if record is None or cfg.confirm_fraction <= 0 or cfg.refit or "confirm" in record:
        return record
    with warnings.catch_warnings():  # missing images were reported when the data was prepared
        warnings.simplefilter("ignore", UserWarning)
        floors = compute_floors(cfg.replace(confirm_run=True, val_folds=1, val_fold=0), data_for,
                                device)  # fmt: skip
    values = [round(float(v[0]), 4) for v in (floors.pixels, floors.backbone)]
    # out of the user attributes, which `optuna studies` prints in one line per study
    set_study_record(study, CONFIRM_RECORD, {"key": record.get("key"), "values": values})
    return {**record, "confirm": values}


def higher_floor(record: dict, on_confirm_ids: bool = False) -> tuple[str, float] | None:
    """(kind, value) of the higher validation floor (of the floors on the confirm identities,
    ``on_confirm_ids``, where the record has them); None when neither has a value."""
    if on_confirm_ids and record.get("confirm"):
        return max(zip(_KINDS, record["confirm"], strict=True), key=lambda kv: kv[1])
    vals = [(k, record[k][0]) for k in _KINDS if record.get(k) and record[k][0] is not None]
    return max(vals, key=lambda kv: kv[1]) if vals else None


def confirmed_on_ids(study: optuna.Study) -> bool:
    """Whether the study's confirm measured on its confirm identities (``confirm mAP``)."""
    from hpo.decide.confirm import current, on_new_ids

    summary = current(study)
    return bool(summary) and on_new_ids(summary)


def winner_interval(study: optuna.Study) -> dict[str, Any] | None:
    """The interval the floors are checked against: ``{trial, source, value, lo, hi}``.

    ``source`` is ``confirmed`` (the confirm winner's 95 % CI) or ``best trial`` (the study's
    best value ± 2 SE; a value without SE is its own interval)."""
    from hpo.decide.confirm import current  # the confirm summary is a study record

    summary = current(study) or {}
    winner = summary.get("winner")
    for row in summary.get("rows") or []:
        ci = row.get("ci")
        if row.get("trial") == winner and ci and None not in ci:
            lo, hi = (float(v) for v in ci)
            if math.isfinite(lo) and math.isfinite(hi):
                value = float(row.get("mean", (lo + hi) / 2))
                return {"trial": winner, "source": "confirmed", "value": value, "lo": lo, "hi": hi}
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    best = max(done, key=lambda t: t.value)
    se = attrs_of(best).get("value_se")
    se = float(se) if isinstance(se, (int, float)) and math.isfinite(se) else 0.0
    return {
        "trial": best.number,
        "source": "best trial",
        "value": best.value,
        "lo": best.value - 2 * se,
        "hi": best.value + 2 * se,
    }


def floor_name(kind: str, record: dict) -> str:
    """The one name a floor has in every view: ``pixel floor`` (raw pixels ranked as they are)
    or ``backbone floor (untrained tiny-vit)`` (the backbone as loaded, not fine-tuned)."""
    if kind == "pixels":
        return "pixel floor"
    return f"backbone floor ({record.get('backbone_label') or 'backbone, not fine-tuned'})"


# what being below a floor means, said once wherever a winner is below one
_THAN = {
    "pixels": "no better than raw pixels do, with no training at all",
    "backbone": "no better than the backbone does before any fine-tuning",
}


def floors_text(record: dict) -> str:
    """``floors (no training; val / test mAP): pixel floor 0.827 / 0.820, backbone floor
    (untrained tiny-vit) 0.730 / 0.722``."""

    def pair(values) -> str:
        val, test = values
        return f"{'-' if val is None else f'{val:.3f}'} / {test:.3f}"

    return (
        f"floors (no training; val / test mAP): {floor_name('pixels', record)} "
        f"{pair(record['pixels'])}, {floor_name('backbone', record)} {pair(record['backbone'])}"
    )


def check(study: optuna.Study, record: dict | None = None) -> str | None:
    """One sentence when the winner's interval does not clear the higher validation floor,
    e.g. ``the confirmed winner, trial 4 (val mAP [0.781, 0.812]), is below the pixel floor
    (0.827): ...``; None when it clears it or there is nothing to compare."""
    record = record if record is not None else stored(study)
    if record is None:
        return None
    win = winner_interval(study)
    on_ids = win is not None and win["source"] == "confirmed" and confirmed_on_ids(study)
    floor = higher_floor(record, on_ids)
    if floor is None or win is None or win["lo"] > floor[1]:
        return None
    kind, value = floor
    span = interval_text(win["lo"], win["hi"])
    if win["source"] == "confirmed":
        metric = "confirm mAP" if on_ids else "val mAP"
        who = f"the confirmed winner, trial {win['trial']} ({metric} {span}),"
    else:
        who = f"the best trial {win['trial']} (val mAP {win['value']:.3f}, ± 2 SE {span})"
    name = floor_name(kind, record)  # "backbone floor (untrained tiny-vit)": one pair of ()
    floor = f"the {name[:-1]}, {value:.3f})" if name.endswith(")") else f"the {name} ({value:.3f})"
    if on_ids and record.get("confirm"):
        floor += " on the confirm identities"
    if win["hi"] < value:
        return f"{who} is below {floor}: it ranks these hands {_THAN[kind]}"
    return (
        f"{who} does not clear {floor}: its interval reaches below it, so it may rank these "
        f"hands {_THAN[kind]}"
    )


def floor_lines(study: optuna.Study) -> list[str]:
    """The floors line, and the warning when the winner does not clear them; [] without floors."""
    record = stored(study)
    if record is None:
        return []
    warning = check(study, record)
    lines = [floors_text(record)]
    if record.get("confirm"):
        lines.append(confirm_floors_text(record))
    return lines + ([f"warning: {warning}"] if warning else [])


def _higher(floor: tuple[str, float] | None, on_confirm_ids: bool) -> dict | None:
    if floor is None:
        return None
    out: dict[str, Any] = {"kind": floor[0], "val": floor[1]}
    if on_confirm_ids:
        out["on_confirm_ids"] = True  # the floor measured on the confirm identities
    return out


def confirm_floors_text(record: dict) -> str:
    """``floors on the confirm identities (no training; confirm mAP): pixel floor 0.812,
    backbone floor (untrained tiny-vit) 0.741``."""
    pixels, backbone = record["confirm"]
    return (
        f"floors on the confirm identities (no training; confirm mAP): "
        f"{floor_name('pixels', record)} {pixels:.3f}, {floor_name('backbone', record)} "
        f"{backbone:.3f}"
    )


def floors_summary(study: optuna.Study) -> dict[str, Any] | None:
    """``hpo show --json``'s ``floors``: the record, the winner's interval, whether it clears
    the higher floor, and the same words as the text."""
    record = stored(study)
    if record is None:
        return None
    win = winner_interval(study)
    on_ids = win is not None and win["source"] == "confirmed" and confirmed_on_ids(study)
    floor = higher_floor(record, on_ids)
    warning = check(study, record)
    values = {k: {"val": record[k][0], "test": record[k][1]} for k in _KINDS}
    for kind, value in zip(_KINDS, record.get("confirm") or (), strict=False):
        values[kind]["confirm"] = value  # on the confirm identities, where measured
    return {
        **values,
        "backbone_label": record.get("backbone_label"),
        "key": record.get("key"),
        "seconds": record.get("seconds"),
        "higher": _higher(floor, on_ids and bool(record.get("confirm"))),
        "winner": win,
        "clears": None if floor is None or win is None else warning is None,
        "text": floors_text(record),
        "warning": warning,
    }


__all__ = [
    "ATTR",
    "CONFIRM_RECORD",
    "check",
    "confirm_floors_text",
    "confirmed_on_ids",
    "ensure_confirm_floors",
    "ensure_floors",
    "floor_lines",
    "floor_name",
    "floors_summary",
    "floors_text",
    "higher_floor",
    "stored",
    "winner_interval",
]
