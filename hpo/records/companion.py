"""A study's confirm runs and final runs live in companion studies, ``<study>.confirm`` and
``<study>.final``, in the same storage: their names, and opening them. What the runs mean is
``hpo.decide.confirm``'s and ``hpo.decide.final``'s business."""

from __future__ import annotations

import optuna

from hpo.records.optuna_internals import storage_of

SUFFIX = ".confirm"
FINAL_SUFFIX = ".final"  # hpo final: the test-set runs behind the paper's table
SUFFIXES = (SUFFIX, FINAL_SUFFIX)


def companion_name(study_name: str, suffix: str = SUFFIX) -> str:
    return study_name + suffix


def is_companion(name: str) -> bool:
    return name.endswith(SUFFIXES)


def companion_kind(name: str) -> str | None:
    """``"confirm"`` or ``"final"`` for a companion's name, else None."""
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name != suffix:
            return suffix[1:]
    return None


def parent_name(name: str) -> str | None:
    """The study whose confirm (or final) runs a study named ``name`` would hold; None when the
    name is not a companion's. (Whether that study exists is the caller's to check.)"""
    kind = companion_kind(name)
    return name.removesuffix("." + kind) if kind else None


def open_companion(study: optuna.Study, storage, suffix: str = SUFFIX) -> optuna.Study:
    """The companion study of confirm (or final) runs in ``storage`` (created on first use)."""
    return optuna.create_study(
        study_name=companion_name(study.study_name, suffix),
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(),  # every run is queued with fixed params
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def load_companion(study: optuna.Study, suffix: str = SUFFIX) -> optuna.Study | None:
    """The companion study of ``study``'s confirm (or final) runs, or None when it has none."""
    try:
        return optuna.load_study(
            study_name=companion_name(study.study_name, suffix), storage=storage_of(study)
        )
    except KeyError:
        return None
