"""The trainer config a study's trial trained: the study's stored space (its fixed keys) plus
the trial's params, checked against the config digest the trial recorded."""

from __future__ import annotations

import optuna

from handreid.config import TrainConfig
from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.records.artifacts import config_attrs
from hpo.records.optuna_internals import study_record
from hpo.records.space import SearchSpace, parse_space


def study_space(study: optuna.Study) -> SearchSpace | None:
    """The search space (with its fixed keys) the study was created with, if it stored one."""
    space_dict = study_record(study, "space")
    if space_dict is None:
        return None
    return parse_space(space_dict, source=f"study {study.study_name}")


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> TrainConfig:
    """The study's fixed keys + the trial's params, checked against the config it trained."""
    space = study_space(study)
    if space is None:
        if "config" not in attrs_of(trial):
            raise UserError(
                f"study {study.study_name!r} stored neither its search space nor trial "
                f"{trial.number}'s config; it cannot be exported"
            )
        return TrainConfig.from_dict(attrs_of(trial)["config"], source=f"trial {trial.number}")
    cfg = space.config(trial.params)
    recorded = attrs_of(trial).get("config")  # studies before the digest kept the whole config
    digest = attrs_of(trial).get("config_sha256")
    if (recorded is not None and TrainConfig.from_dict(recorded) != cfg) or (
        digest is not None and config_attrs(cfg).attrs["config_sha256"] != digest
    ):
        raise UserError(f"trial {trial.number}: its recorded config differs from base + params")
    return cfg
