"""Best (or chosen) trial -> one complete trainer YAML that ``handreid train`` runs unchanged,
read from the study's read model (``hpo.views.model``)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.common.lines import interval_text
from hpo.common.paths import atomic_write_text, check_target
from hpo.records.configs import trial_config
from hpo.views.model import StudyView, as_view


def pick_trial(
    study: StudyView | optuna.Study, number: int | None = None
) -> optuna.trial.FrozenTrial:
    view = as_view(study)
    study, trials = view.study, list(view.trials)
    if number is None:
        complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
        if not complete:
            raise UserError(
                f"study {study.study_name!r} has no completed trial yet; nothing to export"
            )
        winner = (view.confirm or {}).get("winner")
        if winner in complete:  # raced on fresh seeds: a better pick than the noisy maximum
            return complete[winner]
        return study.best_trial
    by_number = {t.number: t for t in trials}
    if number not in by_number:
        raise UserError(
            f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})"
        )
    trial = by_number[number]
    if trial.state != TrialState.COMPLETE:
        raise UserError(
            f"trial {number} is {trial.state.name}; only a COMPLETE trial can be exported"
        )
    return trial


def value_text(trial: optuna.trial.FrozenTrial) -> str:
    """``0.612 ± 0.031 (SE, 3 folds)``: a trial's value with its standard error."""
    se = attrs_of(trial).get("value_se")
    if not isinstance(se, (int, float)) or not math.isfinite(se):  # unknown: no "± nan"
        return f"{trial.value:.3f}"
    from hpo.common.lines import pm, runs_text

    return f"{trial.value:.3f} {pm()} {se:.3f} (SE, {runs_text(attrs_of(trial))})"


def floor_warning(study: StudyView | optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
    """One sentence when ``trial``'s interval does not clear the study's higher validation
    floor (``hpo.decide.floors``): its confirmed 95 % CI when ``hpo confirm`` raced it, else its
    value ± 2 SE. The confirmed winner or best trial gets the floors' own sentence
    (``hpo.decide.floors.check``); any other trial, exported with ``--trial N``, its own."""
    from hpo.common.lines import interval_text
    from hpo.decide.floors import (
        check,
        confirmed_on_ids,
        floor_name,
        higher_floor,
        winner_interval,
    )

    view = as_view(study)
    record = view.floors
    floor = higher_floor(record) if record else None
    if floor is None:
        return None
    win = winner_interval(view.study)
    if win is not None and win["trial"] == trial.number:
        return check(view.study, record)
    rows = {r["trial"]: r for r in (view.confirm or {}).get("rows", [])}
    row = rows.get(trial.number)
    on_ids = False
    if row is not None and row.get("ci") and None not in row["ci"]:
        lo, hi = (float(v) for v in row["ci"])
        on_ids = confirmed_on_ids(view.study)
        metric = "confirm mAP" if on_ids else "val mAP"
        who = f"the exported trial {trial.number} (confirmed {metric} {interval_text(lo, hi)})"
        floor = higher_floor(record, on_ids)
    else:
        se = attrs_of(trial).get("value_se")
        se = float(se) if isinstance(se, (int, float)) and math.isfinite(se) else 0.0
        lo, hi = trial.value - 2 * se, trial.value + 2 * se
        who = (
            f"the exported trial {trial.number} (val mAP {trial.value:.3f}, "
            f"± 2 SE {interval_text(lo, hi)})"
        )
    kind, value = floor
    if lo > value:
        return None
    name = floor_name(kind, record)  # "backbone floor (untrained tiny-vit)": one pair of ()
    named = f"the {name[:-1]}, {value:.3f})" if name.endswith(")") else f"the {name} ({value:.3f})"
    if on_ids and record.get("confirm"):
        named += " on the confirm identities"
    if hi < value:
        return f"{who} is below {named}, which needs no training"
    return f"{who} does not clear {named}, which needs no training: its interval reaches below it"


def export_header(
    study: StudyView | optuna.Study, trial: optuna.trial.FrozenTrial, storage: str
) -> list[str]:
    """What the exported values mean: the objective, the confirmation, the refit command."""
    from hpo.decide.confirm import on_new_ids, verdict
    from hpo.decide.floors import floors_text

    view = as_view(study)
    study = view.study  # the read model's copy

    params = ", ".join(f"{k}={v!r}" for k, v in trial.params.items())
    label = f" (baseline {attrs_of(trial)['baseline']})" if attrs_of(trial).get("baseline") else ""
    lines = [
        f"handreid trainer config exported from study {study.study_name!r}"
        + (f" ({storage})" if storage else ""),
        f"trial {trial.number}{label}: objective (best-epoch validation mAP) {value_text(trial)}",
        f"tuned: {params}",
    ]
    summary = view.confirm or {}
    rows = {r["trial"]: r for r in summary.get("rows", [])}
    epochs = None
    if trial.number in rows:
        r = rows[trial.number]
        lo, hi = r["ci"]
        epochs = r.get("epochs")
        at = f" at epoch {epochs}" if epochs else ""
        seeds = summary["seeds"]
        if not summary.get("complete", True) and "complete_seeds" in summary:
            done = summary["complete_seeds"]
            seeds = f"{done} (partial: {len(done)} of {len(seeds)} seeds)"
        where = (
            f"mean mAP{at} on {summary.get('identities', '?')} confirm identities (no study "
            "trial trained or validated on them)"
            if on_new_ids(summary)
            else f"mean validation mAP{at} on the study's own validation identities"
        )
        lines.append(
            f"confirmed on fresh training seeds {seeds}: {where} "
            f"{r['mean']:.3f} {interval_text(lo, hi)} (95 %, {r['n']} runs)"
        )
        if summary.get("winner") == trial.number:
            lines.append(verdict(summary))
    elif summary:
        lines.append(f"not among the confirmed trials; `hpo show` lists them ({verdict(summary)})")
    else:
        lines.append(
            "not confirmed: the objective is the maximum of noisy estimates; "
            "`hpo confirm` re-trains the top trials on fresh seeds"
        )
    if view.floors:  # the exported trial's own warning, not the winner's
        lines.append(floors_text(view.floors))
        if warning := floor_warning(view, trial):
            lines.append(f"warning: {warning}")
    lines.append(
        f"exported {time.strftime('%Y-%m-%d %H:%M:%S')}; run with: handreid train --config <this file>"
    )
    why = "the epochs its confirm runs trained and were measured at"
    if epochs is None and attrs_of(trial).get("best_epochs"):
        from hpo.decide.confirm import fixed_epochs

        epochs = fixed_epochs(trial, view.space)
        why = "the trial's median best epoch, what `hpo confirm` would train"
    if epochs:
        lines.append(
            "final model on all training identities (published protocol): handreid train "
            f"--config <this file> --refit --set epochs={epochs} ({why})"
        )
    return lines


def check_export_targets(out: str | Path, checkpoint: bool) -> None:
    """Everything about where ``hpo export`` writes, checked before it writes either file: the
    YAML path and, with ``checkpoint``, the model's path beside it (``.yaml`` -> ``.pt``)."""
    out = Path(out)
    yaml_target = check_target(out, "--out")
    if not checkpoint:
        return
    model = out.with_suffix(".pt")
    if out.suffix.lower() == ".pt" or check_target(model, "checkpoint") == yaml_target:
        raise UserError(
            f"--out {out}: with --checkpoint the model is written to {model}, the YAML's name "
            "with .pt, and would replace the YAML; give the YAML a .yaml name"
        )


def export_trial(
    study: StudyView | optuna.Study, out: str | Path, number: int | None = None, storage: str = ""
) -> tuple[Path, optuna.trial.FrozenTrial]:
    """Write base + params as YAML with a header, atomically (see ``atomic_write_text``)."""
    view = as_view(study)
    trial = pick_trial(view, number)
    cfg = trial_config(view.study, trial)
    header = "\n".join(export_header(view, trial, storage))
    path = atomic_write_text(out, cfg.to_yaml(header))
    return path, trial
