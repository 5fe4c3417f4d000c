"""The best trial against the baseline: what changed, parameter by parameter, and by how much
the value moved, with the uncertainty of that difference.

The best trial is the largest of n noisy values, chosen on those very values, so a plain
interval on its lead would sit above 0 in 9-28 % of studies where nothing beats the baseline.
The interval here is adjusted for that choice: simultaneous over the n - 1 trials that could
have been the best (Dunnett's many-to-one critical value, ``hpo.decide.verdict``), so the one
that was chosen is covered too. Even so it is about the identities the study validated on, so
the line calls the difference unconfirmed until ``hpo confirm`` has measured it on new ones.

Shared by ``hpo show``, the study note and the report, so they say the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from handreid.stats import mean_se, two_sided_p
from hpo.common.attrs import attrs_of
from hpo.common.lines import diff_text, interval_text

_ABSENT = object()


@dataclass(frozen=True)
class ParamChange:
    name: str
    baseline: Any  # _ABSENT -> shown as "-" (inactive in that trial, e.g. ArcFace keys)
    best: Any

    def texts(self) -> tuple[str, str]:
        """(baseline, best) as shown: 4 significant figures, "-" where the key was inactive."""
        return _show(self.baseline), _show(self.best)


@dataclass(frozen=True)
class BaselineComparison:
    """The best complete trial against the best complete baseline trial of a study."""

    best: FrozenTrial
    baseline: FrozenTrial
    changes: list[ParamChange] = field(default_factory=list)
    diff: float = math.nan  # best.value - baseline.value
    diff_se: float = math.nan  # from the trials' SEs (independent runs; no pairing assumed)
    paired: bool = False  # True when both recorded per-run values on the same folds
    units: int = 0  # folds the paired difference averages (its df is units - 1)
    trials: int = 2  # complete trials the best was chosen from (the baseline's included)

    @property
    def same_trial(self) -> bool:
        return self.best.number == self.baseline.number

    def value_line(self, confirmed: bool = False) -> str:
        """One line: the difference with a 95 % interval, or that the baseline is the best;
        ``confirmed``: a confirmation exists, so the line does not advise one."""
        name = attrs_of(self.baseline).get("baseline", "")
        if self.same_trial:
            return f"the baseline {name} (trial {self.baseline.number}) is the best trial"
        text = (
            f"best trial {self.best.number} vs baseline {name} (trial {self.baseline.number}): "
            f"{diff_text(self.diff)} val mAP"
        )
        if math.isfinite(self.diff_se):
            lo, hi = self.diff_ci()
            kind = "paired by fold and seed" if self.paired else "from the trials' SEs"
            chosen = (
                f", adjusted for the choice among {self.trials} trials" if self.trials > 2 else ""
            )
            text += f" ({interval_text(lo, hi, signed=True)}{chosen}, {kind})"
        if confirmed:
            return text + ": unconfirmed here; the confirmed verdict says what holds"
        return text + ": unconfirmed; `hpo confirm` measures it on new identities"

    def diff_ci(self) -> tuple[float, float]:
        """The difference's 95 % interval, simultaneous over the trials the best was chosen
        from (a plain t interval for two)."""
        from hpo.decide.verdict import critical_value

        if not math.isfinite(self.diff_se):
            return (math.nan, math.nan)
        q = critical_value(max(self.trials - 1, 1), float(self._df()))
        return (max(self.diff - q * self.diff_se, -1.0), min(self.diff + q * self.diff_se, 1.0))

    def p_value(self) -> float:
        """Two-sided p, adjusted like ``diff_ci`` for the choice among the trials."""
        if self.trials <= 2:
            return two_sided_p(self.diff, self.diff_se, self._df())
        from hpo.decide.verdict import max_abs_t_cdf

        if not (math.isfinite(self.diff_se) and self.diff_se > 0):
            return math.nan
        t = abs(self.diff) / self.diff_se
        return 1.0 - max_abs_t_cdf(t, self.trials - 1, float(self._df()))

    def _df(self) -> int:
        return max(self.units - 1, 1) if self.paired else 1000  # unpaired SEs: a normal interval

    def change_lines(self) -> list[str]:
        """``name: baseline -> best`` for every parameter that differs."""
        return [f"{c.name}: {_show(c.baseline)} -> {_show(c.best)}" for c in self.changes]


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def compare_to_baseline(study: optuna.Study) -> BaselineComparison | None:
    """None when the study has no complete trial or no complete baseline trial."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    baselines = [t for t in complete if attrs_of(t).get("baseline")]
    if not complete or not baselines:
        return None
    best = max(complete, key=lambda t: t.value)
    base = max(baselines, key=lambda t: t.value)
    names = list(dict.fromkeys([*base.params, *best.params]))
    changes = [
        ParamChange(n, base.params.get(n, _ABSENT), best.params.get(n, _ABSENT))
        for n in names
        if base.params.get(n, _ABSENT) != best.params.get(n, _ABSENT)
    ]
    diff = best.value - base.value
    a, b = _fold_means(best), _fold_means(base)
    if a is not None and b is not None and len(a) == len(b) and len(a) > 1:
        # same folds and seeds for every trial: the per-fold differences carry the pairing
        _, se = mean_se([x - y for x, y in zip(a, b, strict=True)])
        return BaselineComparison(best, base, changes, diff, se, True, len(a), len(complete))
    # one split (repeats share its identities, whose sampling the run spread cannot show):
    # the trials' own SEs, which include it, unpaired and so on the safe side
    se_a, se_b = attrs_of(best).get("value_se"), attrs_of(base).get("value_se")
    se = math.hypot(se_a, se_b) if se_a is not None and se_b is not None else math.nan
    return BaselineComparison(best, base, changes, diff, se, False, trials=len(complete))


def _fold_means(trial: FrozenTrial) -> list[float] | None:
    """The trial's run values averaged per fold (run i validates on fold i mod K, as
    ``hpo.search.objective.run_configs`` orders them): the fold is the unit of replication, since
    the repeats of a fold share its validation identities. None for a one-split trial."""
    runs = attrs_of(trial).get("fold_values")
    if not runs:
        return None
    folds = int(attrs_of(trial).get("n_folds", len(runs)))
    if folds < 2 or len(runs) % folds:
        return None
    return [sum(runs[k::folds]) / len(runs[k::folds]) for k in range(folds)]


__all__ = ["BaselineComparison", "ParamChange", "compare_to_baseline"]
