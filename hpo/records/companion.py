"""A study's confirm runs live in a companion study, ``<study>.confirm``, in the same storage:
its name, and opening it. What the runs mean is ``hpo.decide.confirm``'s business."""

from __future__ import annotations

import optuna

from hpo.records.optuna_internals import storage_of

SUFFIX = ".confirm"


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


def is_companion(name: str) -> bool:
    return name.endswith(SUFFIX)


def parent_name(name: str) -> str | None:
    """The study whose confirm runs a study named ``name`` would hold; None when the name is
    not a companion's. (Whether that study exists is the caller's to check.)"""
    return name.removesuffix(SUFFIX) if is_companion(name) and name != SUFFIX else None


def open_companion(study: optuna.Study, storage) -> optuna.Study:
    """The companion study of confirm runs in ``storage`` (created on first use)."""
    return optuna.create_study(
        study_name=companion_name(study.study_name),
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(),  # every run is queued with fixed params
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def load_companion(study: optuna.Study) -> optuna.Study | None:
    """The companion study of ``study``'s confirm runs, or None when it has none yet."""
    try:
        return optuna.load_study(
            study_name=companion_name(study.study_name), storage=storage_of(study)
        )
    except KeyError:
        return None
