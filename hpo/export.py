"""Best (or chosen) trial -> one complete trainer YAML that ``handreid train`` runs unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from handreid.config import TrainConfig
from handreid.errors import UserError
from hpo.paths import atomic_write_text
from hpo.space import parse_space


def pick_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise UserError(
                f"study {study.study_name!r} has no completed trial yet; nothing to export"
            )
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


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> TrainConfig:
    """The study's fixed keys + the trial's params, checked against the config it trained."""
    space_dict = study.user_attrs.get("space")
    if space_dict is None:
        return TrainConfig.from_dict(trial.user_attrs["config"], source=f"trial {trial.number}")
    cfg = parse_space(space_dict, source=f"study {study.study_name}").config(trial.params)
    recorded = trial.user_attrs.get("config")
    if recorded is not None and TrainConfig.from_dict(recorded) != cfg:
        raise UserError(f"trial {trial.number}: its recorded config differs from base + params")
    return cfg


def export_trial(
    study: optuna.Study, out: str | Path, number: int | None = None, storage: str = ""
) -> tuple[Path, optuna.trial.FrozenTrial]:
    """Write base + params as YAML with a header, atomically (see ``atomic_write_text``)."""
    trial = pick_trial(study, number)
    cfg = trial_config(study, trial)
    params = ", ".join(f"{k}={v!r}" for k, v in trial.params.items())
    header = "\n".join(
        [
            f"handreid trainer config exported from study {study.study_name!r}"
            + (f" ({storage})" if storage else ""),
            f"trial {trial.number}: validation mAP {trial.value:.4f}"
            + (f", rank1 {trial.user_attrs['rank1']:.4f}" if "rank1" in trial.user_attrs else ""),
            f"tuned: {params}",
            f"exported {time.strftime('%Y-%m-%d %H:%M:%S')}; run with: handreid train --config <this file>",
        ]
    )
    path = atomic_write_text(out, cfg.to_yaml(header))
    return path, trial
