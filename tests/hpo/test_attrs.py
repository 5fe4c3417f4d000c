"""Which trial attributes ``optuna trials`` prints: the metrics ``hpo`` shows in its own views
(best epoch, Rank-1/5/10) are bookkeeping now, and still read from studies made before."""

from __future__ import annotations

import optuna

from hpo.common.attrs import BOOKKEEPING, RECORD_PREFIX, attrs_of
from hpo.records.optuna_internals import set_attr

MOVED = {"best_epoch": 3, "rank1": 0.37341772151898733, "rank5": 0.835, "rank10": 0.989}


def test_best_epoch_and_rank_k_are_kept_out_of_the_user_attributes():
    assert set(MOVED) <= BOOKKEEPING
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for key, value in {**MOVED, "value_se": 0.04, "baseline": "default"}.items():
        set_attr(trial, key, value)  # as the objective records them
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    assert frozen.user_attrs == {"value_se": 0.04, "baseline": "default"}
    assert {k: frozen.system_attrs[RECORD_PREFIX + k] for k in MOVED} == MOVED
    assert attrs_of(frozen) == {**MOVED, "value_se": 0.04, "baseline": "default"}


def test_a_trial_recorded_before_the_move_is_read_as_it_was():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={**MOVED, "value_se": 0.04}))
    assert attrs_of(study.trials[0])["rank1"] == MOVED["rank1"]
    assert attrs_of(study.trials[0])["best_epoch"] == 3
