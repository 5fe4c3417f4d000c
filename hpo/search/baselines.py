"""Baselines that a study gave up on: every try failed or was interrupted until the retry cap
(``hpo.fleet.recovery``), so nothing queues them again. ``hpo run`` and ``hpo show`` say so, and
``hpo run --retry-baselines`` queues each one again, with a fresh retry count."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.common.attrs import attrs_of

RETRY_FLAG = "--retry-baselines"


def dropped_baselines(trials: list[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Baseline label -> its tries, for the baselines whose every try failed (none complete,
    pruned, running or waiting)."""
    by_name: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        name = attrs_of(t).get("baseline")
        if name:
            by_name.setdefault(str(name), []).append(t)
    return {
        name: tries
        for name, tries in by_name.items()
        if all(t.state == TrialState.FAIL for t in tries)
    }


def dropped_lines(trials: list[FrozenTrial]) -> list[str]:
    lines = []
    for name, tries in dropped_baselines(trials).items():
        numbers = ", ".join(str(t.number) for t in tries)
        lines.append(
            f"baseline {name} was dropped: its {len(tries)} tries (trials {numbers}) failed or "
            f"were interrupted, and it is not queued again; re-run with {RETRY_FLAG} to queue "
            "it again"
        )
    return lines


def queue_dropped(study: optuna.Study) -> list[str]:
    """Queue each dropped baseline again (a new chain of tries); returns their labels."""
    from hpo.fleet.recovery import _params

    queued = []
    for name, tries in dropped_baselines(study.get_trials(deepcopy=False)).items():
        study.enqueue_trial(_params(tries[0]), user_attrs={"baseline": name})
        queued.append(name)
    return queued
