"""One read model of a study, loaded once and handed to every view.

``load_view(study, store)`` reads the study and its companion of confirm runs from their
storage in one pass into an in-memory copy (``StudyView.study``: an ``optuna.Study`` on an
``InMemoryStorage``, so the record and decision functions below this layer read it unchanged),
and keeps what the views ask for: the trials, the search space, the identity lists of the
splits, the confirm summary, the floors and the final evaluations. A view never reaches back
into the storage: ``hpo show`` and the report show one moment of a study that other workers
may be changing, and every number on a page comes from the same moment. Epoch histories live
in the artifact store, not the storage, and are read on demand (once each) through
``StudyView.history``.

Writing (notes, figures, artifacts) goes to the real study, never to the copy.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.errors import UserError
from hpo.decide.confirm import current
from hpo.decide.floors import stored
from hpo.records.companion import load_companion
from hpo.records.configs import study_space
from hpo.records.optuna_internals import copy_study_into, study_record
from hpo.records.space import SearchSpace


@dataclass(frozen=True, eq=False)
class StudyView:
    """A study as every view reads it. ``study`` is the in-memory copy (with the companion
    beside it in the same storage); writes go to the study it was read from, never here."""

    study: optuna.Study
    trials: tuple[FrozenTrial, ...]
    space: SearchSpace | None
    identities: dict[str, Any] | None
    confirm: dict[str, Any] | None
    floors: dict[str, Any] | None
    final: dict[str, Any] | None
    companion_trials: tuple[FrozenTrial, ...]
    store: Any = None
    _histories: dict[int, list[dict]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.study.study_name

    def completed(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    def trial(self, number: int) -> FrozenTrial | None:
        return next((t for t in self.trials if t.number == number), None)

    def history(self, trial: FrozenTrial | int, store=None) -> list[dict]:
        """The trial's epoch entries (``hpo.records.history.load_history``) from the view's
        artifact store, read once; from ``store`` instead when another one is named."""
        from hpo.records.history import load_history

        number = trial if isinstance(trial, int) else trial.number
        if store is not None and store is not self.store:
            return load_history(self.study, number, store)
        if number not in self._histories:
            self._histories[number] = load_history(self.study, number, self.store)
        return self._histories[number]


# the copies this module made, so a view handed its own copy (``view.study``) finds its view
_VIEWS: weakref.WeakKeyDictionary[optuna.Study, StudyView] = weakref.WeakKeyDictionary()


def _space(study: optuna.Study) -> SearchSpace | None:
    """The stored space, or None when there is none or it no longer parses: views that only
    show the study still work; ``hpo export`` reads it again strictly (``trial_config``)."""
    try:
        return study_space(study)
    except UserError:
        return None


def load_view(study: optuna.Study, store=None) -> StudyView:
    """Read ``study`` (and its confirm companion) once; ``store`` is the artifact store that
    holds the trials' histories (None: histories come from intermediate values)."""
    storage = optuna.storages.InMemoryStorage()
    copy = copy_study_into(study, storage)
    companion = load_companion(study)
    companion_copy = copy_study_into(companion, storage) if companion is not None else None
    view = StudyView(
        study=copy,
        trials=tuple(copy.get_trials(deepcopy=False)),
        space=_space(copy),
        identities=study_record(copy, "identities"),
        confirm=current(copy),
        floors=stored(copy),
        final=study_record(copy, "final"),
        companion_trials=tuple(companion_copy.get_trials(deepcopy=False))
        if companion_copy is not None
        else (),
        store=store,
    )
    _VIEWS[copy] = view
    return view


def as_view(study_or_view: StudyView | optuna.Study, store=None) -> StudyView:
    """The view itself, the view a copy belongs to, or a study read now."""
    if isinstance(study_or_view, StudyView):
        return study_or_view
    known = _VIEWS.get(study_or_view)
    if known is not None:
        return known
    return load_view(study_or_view, store)


__all__ = ["StudyView", "as_view", "load_view"]
