"""Decision error rates under models the rules were not calibrated on (stress test).

``decisions_pruning.py`` and ``decisions_verdict.py`` measure each rule under the model it was
calibrated on (normal run noise, a fold or run as the unit). This module has its own
generators, written apart from theirs, with what those models leave out, and runs the real
code on them: ``hpo.decide.verdict.new_identities`` and ``linearized`` (the verdict on
confirm identities), ``hpo.decide.confirm.decide``/``decision`` (the same-fold verdict it
replaces), ``hpo.search.pruning.run_reference``/``prune_reason`` (between runs),
``hpo.search.study.make_pruner("median", ...)`` with ``hpo.search.objective.Objective`` (whole
studies, ``fit`` replaced by epoch curves), ``run_configs`` (which training seed each fold
run gets) and ``value_se`` (the ``± SE`` of a trial value). Every rate has its Monte Carlo SE.

Size: a real study. 11k Hands dorsal right on the published split (``handreid.data.hands11k``:
subject ids up to 1050 train) with the trainer's default ``exclude_accessories`` has 72
training-side subjects, every one with 2 or more images (962 images, 3 to 41 each), counted
in the official ``HandInfo.csv`` that ``shared/data/11k-mini-100px`` carries whole (the full
dataset has 190 subjects; 98 training-side ones with accessories). ``IMAGES_PER_ID`` holds
those 72 counts; a query is every image of an identity but its gallery one. Confirm share
``SHARE`` = 0.3: 22 confirm identities, and 50 for the study's 3 folds (16-17 each). The
share table measures 0.2, 0.3 and 0.4: a larger share narrows the verdict's interval (power)
and leaves noisier folds to select on; from 0.2 to 0.3 the interval narrows most (half-width
about 0.093 to 0.078) for a small loss in selection, from 0.3 to 0.4 it narrows less (0.071)
while the study's best is the truly better config less often.

Identity-level generator (``Hands``), for the verdict and the SE: the AP of one query is
``1 / (1 + N)`` with N ~ Poisson(exp(-eta)) impostors ranked above its one gallery match
(AP 1, 1/2, 1/3, ...), where

    eta = level + shift[c] + b[i] + z[query] + a[s]
          + scale[c] * (u[c, s] + v[c, i] + e[c, s, i])

b: how hard a person's hands are (shared by every config); z: each query image's difficulty;
a: what a training seed does to every config; u: a config's luck with a seed (config x seed,
over all its identities); v: how the config fares on this person (config x identity, redrawn
on new identities); e: the rest; scale: 1, or lognormal (sdlog 0.5) per config. This gives
bounded, skewed per-identity APs (10/50/90 % about 0.5/0.85/1.0), a mean mAP of 0.80 and, on a
19-identity fold, a config-level run SD of 0.03 (the run SD of ``decisions_pruning.py``) of
which half is config x identity (``share05``); the table prints the realised figures. The
"quiet" generator has a config-level SD of 0.022, nearer the sample's paired confirm runs
(pair SD 0.021-0.030). A config's true mAP on new identities is the model's expected AP
(Gauss-Hermite quadrature of the Poisson-logit-normal mean), so "equal on new identities"
holds exactly where configs' noise differs (each config's shift is solved for its scale). An
outlier run (5 % of runs) loses 0.15 (every AP of the run scaled by 1 - 0.15/0.80).

A study of n trials (40, 100; trial 0 the baseline) ranks its trials by their mean over 3 fold
runs on the study identities; confirm takes the top 5 and the baseline and trains each on 3
fresh seeds:

- new rule: every run measured on the confirm identities; ``new_identities`` on the runs'
  ``linearized`` terms gives simultaneous intervals against the baseline;
- old rule: every run measured on the study's own 3 folds (the config x identity luck that
  selected a config stays with it) and ``decide`` with folds.

"Better" is said of the winner (of the best candidate when the baseline wins) when its
interval lies above 0, as ``hpo.decide.confirm.decision`` words it. Power counts only that
verdict on the truly better config (selection by the study included); coverage is of that
config's interval for its true difference on new identities (the key), and of all five at
once. These studies prune nothing (a pruned trial could only drop out of the top 5).

Pruning sees run values only: ``mean + fold effect (shared) + config x seed luck (one draw
per distinct training seed of the trial) + run noise``, config-level SD 0.03; one stress at a
time; 2-5 complete trials; sequential studies where pruned trials leave the reference and,
with 4 workers, trials complete between a trial's looks. Through ``Objective``: sequential
studies of 40 equal trials with the default pruners (``make_pruner("median", 8, 1, 3)`` and
between runs), then trials 2 run SDs better than the best asked against each finished study
(its survivors and pruned trials, ``median_prune_better_2sd_k3``) and against studies whose
trials all completed (the calibration's setting).

Usage: ``python benchmarks/decisions_stress.py [--reps 300] [--studies 20] [--complete 10]
[--seed 0]``; the last line holds ``KEYS``.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import sys
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from unittest import mock

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpo.decide import confirm as cf  # noqa: E402
from hpo.decide import verdict as vd  # noqa: E402
from hpo.search.pruning import prune_reason, run_reference  # noqa: E402
from hpo.search.study import make_pruner  # noqa: E402

# the 72 training-side identities of 11k dorsal right (published split, no accessories)
IMAGES_PER_ID = (
    (3,) + (4,) * 4 + (5,) * 5 + (6,) * 5 + (7,) * 9 + (8,) * 3 + (9,) * 4 + (10,) * 6
    + (11,) * 5 + (12,) + (13,) * 3 + (14,) + (15,) * 3 + (16,) * 3 + (17,) * 3 + (19,) * 3
    + (20,) * 3 + (23, 24, 25, 26, 34, 35, 35, 40, 41, 41)
)  # fmt: skip
TRAIN_SIDE_IDS = len(IMAGES_PER_ID)
MEAN_MAP = 0.80
RUN_SD = 0.03  # config-level SD of one run value (11k sample)
SEED_LUCK_SD = 0.02  # config x seed part of RUN_SD in the pruning stress
FOLD_SD = 0.04  # what a fold's identities do to every config (cancels in the rules)
COLLAPSE_BY = 0.15
FOLDS, SEEDS, TOP = 3, 3, 5
SHARES = (0.2, 0.3, 0.4)
SHARE = 0.3  # the confirm share the keys use: the share table in ``table`` says why
EPOCHS, WARMUP = 8, 1
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)


# --- the identity-level generator -------------------------------------------------------------


@dataclass(frozen=True)
class Hands:
    """SDs on the logit scale of the Poisson rank model (module docstring)."""

    level: float = 1.45
    identity: float = 1.2  # b: a person's hands, shared by every config
    query: float = 1.0  # z: a query image, shared
    seed: float = 0.1  # a: a training seed, shared
    config_seed: float = 0.1  # u: config x seed luck
    config_identity: float = 0.55  # v: config x identity, redrawn on new identities
    residual: float = 0.3  # e
    sdlog: float = 0.0  # per-config scale of u, v, e: lognormal
    collapse: float = 0.0  # share of runs that lose COLLAPSE_BY

    def spread(self, scale: np.ndarray) -> np.ndarray:
        shared = self.identity**2 + self.query**2 + self.seed**2
        own = self.config_seed**2 + self.config_identity**2 + self.residual**2
        return np.sqrt(shared + np.asarray(scale) ** 2 * own)

    def expected(self, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """True mAP on new identities (and seeds) of configs with these shifts and scales."""
        shift, scale = np.broadcast_arrays(np.asarray(shift, float), np.asarray(scale, float))
        eta = self.level + shift[..., None] + self.spread(scale)[..., None] * _NODES
        m = (_expected_ap(np.exp(-eta)) * _WEIGHTS).sum(axis=-1)
        return m * (1 - self.collapse * COLLAPSE_BY / MEAN_MAP)

    def shift_for(self, target: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Shifts that give configs of these scales the true mAP ``target`` (Newton)."""
        target, scale = np.broadcast_arrays(np.asarray(target, float), np.asarray(scale, float))
        d = np.zeros(target.shape)
        h = 1e-4
        for _ in range(30):
            f = self.expected(d, scale) - target
            slope = (self.expected(d + h, scale) - self.expected(d - h, scale)) / (2 * h)
            d = d - f / slope
            if np.max(np.abs(f)) < 1e-12:
                break
        return d


def _expected_ap(lam: np.ndarray) -> np.ndarray:
    """E[1 / (1 + N)] for N ~ Poisson(lam)."""
    small = lam < 1e-8
    safe = np.where(small, 1.0, lam)
    return np.where(small, 1 - lam / 2, -np.expm1(-safe) / safe)


BASE = Hands()
STRESS = replace(BASE, sdlog=0.5, collapse=0.05)
NO_SEED_LUCK = replace(BASE, config_seed=0.0, seed=0.0)  # identity sampling dominates


@dataclass
class People:
    """One draw of the 72 training-side identities: their queries and difficulties."""

    queries: np.ndarray  # (72,)
    hard: np.ndarray  # (72,) b
    query_hard: list[np.ndarray]  # per identity: z of its queries

    @classmethod
    def draw(cls, rng: np.random.Generator, model: Hands) -> People:
        queries = np.array(IMAGES_PER_ID) - 1
        return cls(
            queries,
            rng.normal(0, model.identity, len(queries)),
            [rng.normal(0, model.query, q) for q in queries],
        )

    def layout(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the identities ``ids``: owner of each query, z of each, first query of each."""
        q = self.queries[ids]
        owner = np.repeat(np.arange(len(ids)), q)
        z = np.concatenate([self.query_hard[i] for i in ids])
        return owner, z, np.concatenate([[0], np.cumsum(q)[:-1]])


@dataclass
class Configs:
    """The configs of one simulated study on the logit scale."""

    shift: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)
    by_identity: np.ndarray  # (C, 72): v, redrawn for every identity
    extra: np.ndarray  # (C, 72): an advantage on some identities only (0 elsewhere)
    truth: np.ndarray  # (C,) true mAP on new identities


def draw_configs(
    rng: np.random.Generator,
    model: Hands,
    n: int,
    gain: float = 0.0,
    study_only: float = 0.0,
    study_ids: np.ndarray | None = None,
) -> Configs:
    """n configs equal on new identities, but config 1 ``gain`` better there (and everywhere),
    or ``study_only`` better on ``study_ids`` alone (an advantage new identities redraw)."""
    scale = np.exp(rng.normal(0, model.sdlog, n)) if model.sdlog else np.ones(n)
    target = np.full(n, float(model.expected(0.0, 1.0)))
    if gain:
        target[1] += gain
    shift = model.shift_for(target, scale)
    extra = np.zeros((n, TRAIN_SIDE_IDS))
    if study_only:
        # on the logit scale, the shift that gives config 1 +study_only on those identities
        base = model.expected(shift[1], scale[1])
        extra[1, study_ids] = model.shift_for(base + study_only, scale[1]) - shift[1]
    v = rng.normal(0, model.config_identity, (n, TRAIN_SIDE_IDS))
    return Configs(shift, scale, v, extra, model.expected(shift, scale))


def run_ap(
    rng: np.random.Generator,
    model: Hands,
    people: People,
    configs: Configs,
    rows: np.ndarray,
    ids: np.ndarray,
    seed_effect: float,
    luck: np.ndarray,
) -> np.ndarray:
    """AP sums (len(rows), len(ids)) of one run (one training seed) of configs ``rows``
    measured on identities ``ids``; ``seed_effect``: a (shared); ``luck``: u of each row."""
    owner, z, first = people.layout(ids)
    s = configs.scale[rows][:, None]
    own = luck[:, None] + configs.by_identity[np.ix_(rows, ids)]
    own = own + rng.normal(0, model.residual, (len(rows), len(ids)))
    eta = (
        model.level
        + configs.shift[rows][:, None]
        + people.hard[ids]
        + seed_effect
        + configs.extra[np.ix_(rows, ids)]
        + s * own
    )
    ap = 1.0 / (1.0 + rng.poisson(np.exp(-(eta[:, owner] + z))))
    sums = np.add.reduceat(ap, first, axis=1)
    if model.collapse:
        hit = rng.random(len(rows)) < model.collapse
        sums[hit] *= 1 - COLLAPSE_BY / MEAN_MAP
    return sums


def runs_on(
    rng: np.random.Generator,
    model: Hands,
    people: People,
    configs: Configs,
    rows: np.ndarray,
    plan: list[tuple[np.ndarray, int]],
) -> list[np.ndarray]:
    """AP sums of each run in ``plan`` ((identities, training seed) per run); runs that share
    a training seed share its effect and each config's luck with it."""
    seeds = sorted({s for _, s in plan})
    a = dict(zip(seeds, rng.normal(0, model.seed, len(seeds)), strict=True))
    u = {s: rng.normal(0, model.config_seed, len(rows)) for s in seeds}
    return [run_ap(rng, model, people, configs, rows, ids, a[s], u[s]) for ids, s in plan]


def split(rng: np.random.Generator, share: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Confirm identities and the study's folds, dealt by a split seed."""
    order = rng.permutation(TRAIN_SIDE_IDS)
    held = round(share * TRAIN_SIDE_IDS)
    return order[:held], np.array_split(order[held:], FOLDS)


@lru_cache(maxsize=8)
def fold_seeds(runs: int = FOLDS) -> tuple[int, ...]:
    """The training seed of each fold run of a trial, as ``run_configs`` assigns them now."""
    from hpo.search.objective import run_configs

    cfg = _space().config({"lr_modules": 1e-3})
    return tuple(c.seed for c in run_configs(cfg.replace(val_folds=runs)))


def mean_map(sums: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return sums.sum(axis=-1) / queries.sum()


# --- the verdict -----------------------------------------------------------------------------


def new_rule(terms: np.ndarray) -> tuple[int, str, dict[int, tuple[float, float]]]:
    """Config 0 the baseline: (compared config, "better"/..., every config's interval), as
    ``hpo confirm`` words it, from ``new_identities`` on the confirm identities' terms."""
    cis = {i: d.ci for i, d in vd.new_identities(terms, 0).items()}
    compared = _compared(terms.mean(axis=(1, 2)))
    return compared, _kind(cis.get(compared)), cis


def _kind(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "none"
    return "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "not distinguishable"


def _compared(means: np.ndarray) -> int:
    winner = int(np.argmax(means))
    return winner if winner != 0 else 1 + int(np.argmax(means[1:]))


def _mean_only(runs: cf.Runs, folds: int) -> dict:
    return {"mean": float(np.mean(runs.values)), "n": len(runs.values)}


def old_rule(values: np.ndarray, incumbent: int) -> tuple[int, str, dict[int, tuple]]:
    """The same-fold verdict: ``decide`` on values (configs, seeds, folds), config 0 the
    baseline, ``incumbent`` the study's best."""
    c, m, k = values.shape
    runs = {}
    for n in range(c):
        r = cf.Runs()
        for s in range(m):
            for i in range(k):
                r.values.append(float(values[n, s, i]))
                r.keys.append((s + 1, i))
                r.identity_ap.append({})
            r.seeds.add(s + 1)
        runs[n] = r
    info = {
        n: {"role": "baseline" if n == 0 else "candidate", "baseline": "b" if n == 0 else ""}
        for n in range(c)
    }
    # each row's own interval (``estimate``) is not part of the verdict and is most of its cost
    with mock.patch.object(cf, "estimate", _mean_only):
        summary = cf.decide(runs, info, list(range(1, m + 1)), k, k, [0], incumbent)
    cis = {r["trial"]: tuple(r["vs_baseline"]["ci"]) for r in summary["rows"] if r["trial"]}
    return _compared(values.mean(axis=(1, 2))), cf.decision(summary) or "none", cis


def confirm_once(
    rng: np.random.Generator,
    model: Hands,
    n: int,
    share: float,
    gain: float = 0.0,
    study_only: float = 0.0,
    old: bool = True,
) -> dict:
    """One study and its confirm: what each rule says and whether its interval covers."""
    people = People.draw(rng, model)
    held, folds = split(rng, share)
    study_ids = np.concatenate(folds)
    configs = draw_configs(rng, model, n, gain, study_only, study_ids)
    everyone = np.arange(n)
    seeds = fold_seeds()
    study = runs_on(rng, model, people, configs, everyone, list(zip(folds, seeds, strict=True)))
    values = np.stack([mean_map(s, people.queries[f]) for s, f in zip(study, folds, strict=True)])
    trial_values = values.mean(axis=0)
    ranked = np.argsort(-trial_values)
    top = [int(t) for t in ranked[:TOP]]
    rows = np.array([0] + [t for t in top if t != 0])
    truth = configs.truth[rows] - configs.truth[0]
    better = int(np.flatnonzero(rows == 1)[0]) if 1 in rows else -1  # the config with a gain

    fresh = [(held, 100 + s) for s in range(SEEDS)]
    sums = runs_on(rng, model, people, configs, rows, fresh)
    terms = np.stack(
        [
            np.stack([vd.linearized(_identity_ap(s[r], people.queries[held]), NAMES[: len(held)])
                      for s in sums])
            for r in range(len(rows))
        ]
    )  # fmt: skip
    out = {"in_top": 1 in top, "study_best": int(ranked[0]) == 1}
    out["new"] = _outcome(*new_rule(terms), truth, better)
    if old:
        plan = [(f, 100 + 10 * s + k) for s in range(SEEDS) for k, f in enumerate(folds)]
        if len(set(seeds)) == 1:  # one seed for every fold of a run, as in the study
            plan = [(f, 100 + 10 * s) for s in range(SEEDS) for f in folds]
        again = runs_on(rng, model, people, configs, rows, plan)
        y = np.array(
            [mean_map(s, people.queries[f]) for s, (f, _) in zip(again, plan, strict=True)]
        )
        y = y.T.reshape(len(rows), SEEDS, FOLDS)
        incumbent = int(np.flatnonzero(rows == top[0])[0])
        out["old"] = _outcome(*old_rule(y, incumbent), truth, better)
    return out


NAMES = [f"id{i}" for i in range(TRAIN_SIDE_IDS)]


def _identity_ap(sums: np.ndarray, queries: np.ndarray) -> dict:
    return {
        NAMES[i]: [float(s), int(q)] for i, (s, q) in enumerate(zip(sums, queries, strict=True))
    }


def _outcome(compared, kind, cis, truth, better) -> dict:
    ci = cis.get(compared)
    return {
        "better": kind == "better",
        "better_true": kind == "better" and compared == better,
        "covers": ci is not None and ci[0] <= truth[compared] <= ci[1],
        "family": len(cis) == len(truth) - 1
        and all(lo <= truth[i] <= hi for i, (lo, hi) in cis.items()),
        "half_width": (ci[1] - ci[0]) / 2 if ci is not None else math.nan,
    }


QUIET = replace(BASE, config_seed=0.07, config_identity=0.36, residual=0.15)

VERDICT_SETTINGS = {
    # name: (model, study size, confirm share, gain, study-only advantage, old rule too)
    "equal_n40": (BASE, 40, SHARE, 0.0, 0.0, True),
    "equal_n100": (BASE, 100, SHARE, 0.0, 0.0, True),
    "gain03_n40": (BASE, 40, SHARE, 0.03, 0.0, True),
    "gain05_n40": (BASE, 40, SHARE, 0.05, 0.0, True),
    "study_only03_n40": (BASE, 40, SHARE, 0.0, 0.03, True),
    "lognormal_equal_n40": (replace(BASE, sdlog=0.5), 40, SHARE, 0.0, 0.0, True),
    "outliers_equal_n40": (replace(BASE, collapse=0.05), 40, SHARE, 0.0, 0.0, True),
    "stress_equal_n40": (STRESS, 40, SHARE, 0.0, 0.0, True),
    "stress_gain05_n40": (STRESS, 40, SHARE, 0.05, 0.0, True),
    "quiet_gain05_n40": (QUIET, 40, SHARE, 0.05, 0.0, False),
}
for _share in SHARES:
    if _share != SHARE:
        for _name, _gain in (("gain03", 0.03), ("gain05", 0.05)):
            VERDICT_SETTINGS[f"{_name}_n40_share{_share}"] = (BASE, 40, _share, _gain, 0.0, False)


def simulate_verdicts(reps: int, rng: np.random.Generator) -> dict:
    """Rates over ``reps`` simulated studies and confirms for every ``VERDICT_SETTINGS`` row."""
    out = {}
    for name, (model, n, share, gain, study_only, old) in VERDICT_SETTINGS.items():
        got = [confirm_once(rng, model, n, share, gain, study_only, old) for _ in range(reps)]
        rates = {
            "in_top": _rate([g["in_top"] for g in got]),
            "study_best": _rate([g["study_best"] for g in got]),
        }
        for rule in ("new", "old") if old else ("new",):
            for key in ("better", "better_true", "covers", "family"):
                rates[f"{rule}_{key}"] = _rate([g[rule][key] for g in got])
            rates[f"{rule}_half_width"] = float(np.nanmedian([g[rule]["half_width"] for g in got]))
        out[name] = rates
    return out


def _rate(hits) -> tuple[float, float]:
    """(rate, its Monte Carlo SE) of a list of booleans."""
    x = np.asarray(hits, dtype=float)
    p = float(x.mean())
    q = min(max(p, 1 / len(x)), 1 - 1 / len(x))  # a rate of 0 or 1 still has an error
    return p, math.sqrt(q * (1 - q) / len(x))


def realised(model: Hands, rng: np.random.Generator, ids: int = 19, folds: int = 60) -> dict:
    """What the generator gives on one fold of ``ids`` identities: mean mAP, the config-level
    run SD and its config x identity share, the fold SD and per-identity AP quantiles."""
    configs, seeds = 40, 4
    comp, inter, maps, aps = [], [], [], []
    for _ in range(folds):
        people = People.draw(rng, model)
        chosen = rng.choice(TRAIN_SIDE_IDS, ids, replace=False)
        c = draw_configs(rng, replace(model, sdlog=0.0, collapse=0.0), configs)
        sums = runs_on(
            rng, model, people, c, np.arange(configs), [(chosen, s) for s in range(seeds)]
        )
        y = np.stack([mean_map(s, people.queries[chosen]) for s in sums], axis=1)  # (C, S)
        r = y - y.mean(0) - y.mean(1, keepdims=True) + y.mean()
        ms_i = float((r**2).sum()) / ((configs - 1) * (seeds - 1))
        ms_c = seeds * float(((y.mean(1) - y.mean()) ** 2).sum()) / (configs - 1)
        comp.append((ms_c - ms_i) / seeds)
        inter.append(ms_i)
        maps.append(float(y.mean()))
        aps.append(sums[0][0] / people.queries[chosen])
    v_c, v_i = float(np.mean(comp)), float(np.mean(inter))
    return {
        "mean_map": float(np.mean(maps)),
        "run_sd": math.sqrt(v_c + v_i),
        "identity_share": v_c / (v_c + v_i),
        "fold_sd": float(np.std(maps)),
        "identity_ap_q": np.quantile(np.concatenate(aps), [0.1, 0.5, 0.9]).tolist(),
    }


# --- pruning between runs (run values) --------------------------------------------------------


def _trials(x: np.ndarray) -> list:
    """Complete trials with these run values (rows), as the objective records them."""
    return [
        create_trial(
            state=TrialState.COMPLETE,
            value=float(np.mean(row)),
            user_attrs={"fold_values": [round(float(v), 6) for v in row]},
        )
        for row in x
    ]


@dataclass(frozen=True)
class Runs:
    """Run values of equal trials: fold effect + scale * (seed luck + noise) - collapses."""

    luck: float = 0.0  # config x seed SD, of RUN_SD in all
    seeds: tuple[int, ...] = (0, 1, 2)  # the training seed of each run
    sdlog: float = 0.0
    collapse: float = 0.0

    def draw(self, rng: np.random.Generator, fold: np.ndarray, count: int) -> np.ndarray:
        k = len(fold)
        distinct = sorted(set(self.seeds))
        index = [distinct.index(s) for s in self.seeds]
        u = rng.normal(0, self.luck, (count, len(distinct)))[:, index]
        e = rng.normal(0, math.sqrt(RUN_SD**2 - self.luck**2), (count, k))
        scale = np.exp(rng.normal(0, self.sdlog, (count, 1))) if self.sdlog else 1.0
        x = MEAN_MAP + fold + scale * (u + e)
        if self.collapse:
            x = x - COLLAPSE_BY * (rng.random((count, k)) < self.collapse)
        return x


def pruned(values: np.ndarray, ref, runs: int) -> bool:
    """Whether the between-run rule stops a trial with these run values at one of its looks."""
    return any(prune_reason(list(values[:m]), ref, runs) for m in range(1, runs))


def false_prunes(rng: np.random.Generator, reps: int, model: Runs, n: int) -> tuple[float, float]:
    """Share of studies of n equal complete trials in which an equal trial is pruned."""
    k = len(model.seeds)
    hits = []
    for _ in range(reps):
        fold = rng.normal(0, FOLD_SD, k)
        x = model.draw(rng, fold, n + 1)
        hits.append(pruned(x[-1], run_reference(_trials(x[:-1]), k), k))
    return _rate(hits)


def sequential(
    rng: np.random.Generator, studies: int, workers: int, n: int = 40, k: int = FOLDS
) -> tuple[float, float]:
    """Share of equal trials pruned in studies of n trials run by ``workers`` workers: a run
    takes one time unit, a trial looks after each run but its last with the complete trials
    of that moment (pruned trials never enter them)."""
    pruned_n, judged_n = [], []
    for _ in range(studies):
        fold = rng.normal(0, FOLD_SD, k)
        x = Runs().draw(rng, fold, n)
        done: list = []
        events = [(0.0, w, w, 0) for w in range(min(workers, n))]  # (time, order, trial, runs)
        heapq.heapify(events)
        started, cut, order = min(workers, n), 0, workers
        cached: tuple = (0, None)
        judged: set[int] = set()  # trials asked at least once with a reference
        while events:
            now, _, j, m = heapq.heappop(events)
            finished = False
            if m == k:
                done += _trials(x[j : j + 1])
                finished = True
            elif m > 0:
                if cached[0] != len(done):  # the reference moves only when a trial completes
                    cached = (len(done), run_reference(done, k))
                ref = cached[1]
                if ref is not None:
                    judged.add(j)
                if prune_reason(list(x[j, :m]), ref, k):
                    cut += 1
                    finished = True
            if not finished:
                order += 1
                heapq.heappush(events, (now + 1, order, j, m + 1))
            elif started < n:
                order += 1
                heapq.heappush(events, (now, order, started, 0))
                started += 1
        pruned_n.append(cut)
        judged_n.append(len(judged))
    return _ratio(pruned_n, judged_n)


def _ratio(hits, counts) -> tuple[float, float]:
    """sum(hits) / sum(counts) over clusters (studies), with its SE by the ratio estimator."""
    h, c = np.asarray(hits, float), np.asarray(counts, float)
    r = h.sum() / c.sum()
    if len(h) < 2:
        return float(r), float("nan")
    resid = h - r * c
    return float(r), float(math.sqrt(resid.var(ddof=1) / len(h)) / c.mean())


# --- a whole study through Objective ------------------------------------------------------------

OBJECTIVE_SPACE = {
    "base": {
        "model": "tiny-vit",
        "pretrained": "none",
        "image_size": [64, 64],
        "batch_size": 16,
        "epochs": EPOCHS,
        "warmup_epochs": WARMUP,
        "val_folds": FOLDS,
    },
    "space": {"lr_modules": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    "baselines": [{"name": "default", "lr_modules": 3e-3}],
}
RISE = 0.12  # an epoch-1 model is this far below its last epoch
TRIALS, PROBES = 40, 8


def _space():
    from hpo.records.space import parse_space

    return parse_space(OBJECTIVE_SPACE)


class _NoData:
    def get(self, cfg):
        return None


class FakeTraining:
    """A stand-in for ``handreid.engine.fit``: every config's runs end at the same true mAP
    (plus ``gain[lr_modules]``); a run's value is that + the fold's effect + the config's luck
    with the run's training seed (SD ``SEED_LUCK_SD``) + run noise, reached on a rising
    curve ``- RISE * ((epochs - epoch) / (epochs - 1)) ** 1.5`` with epoch jitter 0.01."""

    def __init__(self, study: int) -> None:
        self.study = study
        self.gain: dict[float, float] = {}

    def __call__(self, cfg, *, callbacks=(), device=None, data=None):
        from handreid.engine import FitResult

        key = [int(w) for w in np.frombuffer(np.float64(cfg.lr_modules).tobytes(), np.uint32)]
        fold = np.random.default_rng([self.study, 1, cfg.val_fold]).normal(0, FOLD_SD)
        luck = np.random.default_rng([self.study, 2, *key, cfg.seed]).normal(0, SEED_LUCK_SD)
        rng = np.random.default_rng([self.study, 3, *key, cfg.seed, cfg.val_fold])
        noise = rng.normal(0, math.sqrt(RUN_SD**2 - SEED_LUCK_SD**2))
        final = MEAN_MAP + self.gain.get(cfg.lr_modules, 0.0) + fold + luck + noise
        left = (cfg.epochs - np.arange(1, cfg.epochs + 1)) / max(cfg.epochs - 1, 1)
        curve = final - RISE * left**1.5 + rng.normal(0, 0.01, cfg.epochs)
        history = []
        for epoch, value in enumerate(curve.tolist()):
            metrics = dict.fromkeys(("mAP", "rank1", "rank5", "rank10"), value) | {"loss": 1.0}
            history.append(metrics)
            for cb in callbacks:
                cb(epoch, metrics)
        best = int(np.argmax(curve))
        return FitResult(history, best, history[best], "completed", 0.0, 0, object(), None)


def _fresh_study(space, training: FakeTraining, pruner) -> optuna.Study:
    """An in-memory study as ``hpo run`` makes one (baselines queued), sampled at random."""
    from hpo.search.study import create_or_resume

    return create_or_resume(
        optuna.storages.InMemoryStorage(),
        "stress",
        space,
        sampler=optuna.samplers.RandomSampler(seed=training.study),
        pruner=pruner,
        context={},
    )


def objective_between_runs(studies: int, seed: int = 0) -> tuple[float, float]:
    """``studies`` sequential studies of ``TRIALS`` equal trials through ``Objective`` with
    ``--pruner runs`` (the between-run rule alone): the share of judged trials it prunes, with
    its SE. Survivor feedback and trials completing between looks are as in a real study."""
    from hpo.search.objective import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gc.collect()
    gc.freeze()
    space = _space()
    out: dict = {"pruned": [], "judged": [], "by_epoch": 0}
    for s in range(studies):
        training = FakeTraining(seed * 1000 + s + 900)
        objective = Objective(space, data=_NoData(), fit_fn=training, device="cpu")
        study = _fresh_study(space, training, make_pruner("runs", EPOCHS, WARMUP, FOLDS))
        study.optimize(objective, n_trials=TRIALS)
        _count(study, out)
    gc.unfreeze()
    return _ratio(out["pruned"], out["judged"])


def objective_studies(studies: int, complete: int, seed: int = 0) -> dict:
    """Trials through ``Objective`` with the default pruners (the per-epoch
    ``make_pruner("median", ...)`` and between runs).

    ``studies`` sequential studies of ``TRIALS`` equal trials (the first the baseline): the
    share of them pruned; then ``PROBES`` trials 2 run SDs better than the best (all are
    equal), each asked against the finished study (its survivors and pruned trials). Then
    ``complete`` studies whose trials all completed (no pruner), as the calibration had them:
    ``PROBES`` equal and ``PROBES`` better trials each.
    """
    from hpo.search.objective import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gc.collect()
    gc.freeze()  # Objective collects garbage after every trial; leave the imports out of it
    space = _space()
    pruner = lambda: make_pruner("median", EPOCHS, WARMUP, FOLDS)  # noqa: E731
    out: dict = {"pruned": [], "judged": [], "by_epoch": 0}
    for case in ("sequential", "complete"):
        for s in range(studies if case == "sequential" else complete):
            training = FakeTraining(seed * 1000 + s + (500 if case == "complete" else 0))
            objective = Objective(space, data=_NoData(), fit_fn=training, device="cpu")
            study = _fresh_study(
                space,
                training,
                pruner() if case == "sequential" else optuna.pruners.NopPruner(),
            )
            if case == "sequential":
                study.optimize(objective, n_trials=TRIALS)
                _count(study, out)
            else:
                plain = Objective(
                    space, data=_NoData(), fit_fn=training, device="cpu", prune_between_runs=False
                )
                study.optimize(plain, n_trials=TRIALS)
            finished = study.get_trials(deepcopy=False)
            gains = [2 * RUN_SD] * PROBES + ([0.0] * PROBES if case == "complete" else [])
            for j, gain in enumerate(gains):
                probe = optuna.create_study(direction="maximize", pruner=pruner())
                probe.add_trials(finished)
                key = 0.05 + 1e-6 * (j + 1)
                training.gain[key] = gain
                probe.enqueue_trial({"lr_modules": key})
                probe.optimize(objective, n_trials=1)
                hit = probe.trials[-1].state == TrialState.PRUNED
                out.setdefault(f"{case}_{'better' if gain else 'equal'}", []).append(hit)
    gc.unfreeze()
    return {
        "false_prune": _ratio(out["pruned"], out["judged"]),
        "per_epoch_share": out["by_epoch"] / max(sum(out["pruned"]), 1),
        "better_2sd": _rate(out["sequential_better"]),
        "better_2sd_complete": _rate(out["complete_better"]),
        "equal_complete": _rate(out["complete_equal"]),
        "studies": studies,
        "complete": complete,
        "pruner": type(pruner()).__name__,
    }


def _count(study: optuna.Study, out: dict) -> None:
    """Pruned and judged trials of a finished study: every trial but the baseline that
    started after 3 trials had completed (before that neither pruner can act)."""
    complete = cut = judged = 0
    for t in study.get_trials(deepcopy=False):
        if complete >= 3 and not t.user_attrs.get("baseline"):
            judged += 1
            if t.state == TrialState.PRUNED:
                cut += 1
                out["by_epoch"] += str(t.user_attrs.get("prune_reason", "")).startswith("pruned at")
        complete += t.state == TrialState.COMPLETE
    out["pruned"].append(cut)
    out["judged"].append(judged)


# --- the ± SE of a trial value ----------------------------------------------------------------


def se_coverage(
    rng: np.random.Generator, reps: int, model: Hands, folds: int, ids: int, spread: int = 1500
) -> dict:
    """How ``value_se`` (what ``± SE`` shows) fares for one config's trial value against its
    true mAP on new identities: ``folds`` runs of ``ids`` identities each (seeds as
    ``run_configs`` assigns them). Coverage of ±2 SE over ``reps`` draws of identities and
    seeds; the true SD of the value over ``spread`` draws (its heavy tails need many); the
    seed-to-seed SD of one run on fixed identities, from a second seed."""
    from hpo.search.objective import RunResult, value_se

    model = replace(model, sdlog=0.0, collapse=0.0)
    seeds = fold_seeds(folds) if folds > 1 else (0,)
    errors, covered, ses, twice = [], [], [], []
    for rep in range(max(reps, spread)):
        people = People.draw(rng, model)
        chosen = rng.choice(TRAIN_SIDE_IDS, ids * folds, replace=False).reshape(folds, ids)
        configs = draw_configs(rng, model, 1)
        plan = list(zip(chosen, seeds, strict=True))
        sums = [s[0] for s in runs_on(rng, model, people, configs, np.arange(1), plan)]
        values = [float(mean_map(s, people.queries[f])) for s, f in zip(sums, chosen, strict=True)]
        error = float(np.mean(values)) - float(configs.truth[0])
        errors.append(error)
        if rep >= reps:
            continue
        runs = [
            RunResult(
                fold=k,
                seed=seeds[k],
                value=values[k],
                best_epoch=1,
                epochs_run=1,
                status="completed",
                metrics={},
                identity_ap=_identity_ap(sums[k], people.queries[chosen[k]]),
            )
            for k in range(folds)
        ]
        se = value_se(runs, folds)
        ses.append(se)
        covered.append(abs(error) <= 2 * se)
        again = runs_on(rng, model, people, configs, np.arange(1), [(chosen[0], -1)])[0][0]
        twice.append(float(mean_map(again, people.queries[chosen[0]])) - values[0])
    sd = float(np.sqrt(np.mean(np.square(errors))))
    rms = float(np.sqrt(np.mean(np.square(ses))))
    return {
        "coverage_2se": _rate(covered),
        "se_over_sd": rms / sd,
        "sd": sd,
        "rms_se": rms,
        "seed_sd": float(np.sqrt(np.mean(np.square(twice)) / 2)),
    }


SE_SETTINGS = {
    # name: (model, folds, identities per fold)
    "3 folds, identity sampling dominates (no seed luck)": (NO_SEED_LUCK, FOLDS, 19),
    "3 folds, with seed luck": (BASE, FOLDS, 19),
    "1 split, 1 run, with seed luck": (BASE, 1, 14),
    "1 split, 1 run, no seed luck": (NO_SEED_LUCK, 1, 14),
    "1 split, 1 run, strong seed luck": (replace(BASE, seed=0.2, config_seed=0.25), 1, 14),
}


# --- all of it ---------------------------------------------------------------------------------


def simulate_stress(reps: int, seed: int, studies: int = 20, complete: int = 10) -> dict:
    """Every stress figure: ``reps`` simulated studies per verdict row, twice that per
    between-run pruning row and a third per sequential row, 300 draws per SE row, and
    ``studies`` + ``complete`` studies through Objective."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng([seed, 24])
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timing[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    tree = fold_seeds()
    lap("imports")
    verdict = simulate_verdicts(reps, rng)
    lap("verdict")
    luck = Runs(luck=SEED_LUCK_SD, seeds=tree)
    many = 2 * reps
    prune = {
        "seed luck 0.02 of 0.03, seeds as run_configs gives them": false_prunes(
            rng, many, luck, 40
        ),
        "seed luck 0.02 of 0.03, one seed for every fold": false_prunes(
            rng, many, replace(luck, seeds=(0,) * FOLDS), 40
        ),
        "per-config noise, lognormal sdlog 0.5": false_prunes(rng, many, Runs(sdlog=0.5), 40),
        "outlier runs, 5 % lose 0.15": false_prunes(rng, many, Runs(collapse=0.05), 40),
        "the three at once": false_prunes(rng, many, replace(luck, sdlog=0.5, collapse=0.05), 40),
    }
    for n in (2, 3, 4, 5):
        prune[f"{n} complete trials"] = false_prunes(rng, many, Runs(), n)
    for workers in (1, 4):
        prune[f"sequential study of 40, {workers} worker(s)"] = sequential(
            rng, max(reps // 3, 2), workers
        )
    lap("pruning")
    objective = objective_studies(studies, complete, seed=seed)
    objective["between_runs_only"] = objective_between_runs(studies, seed=seed)
    lap("objective")
    se = {name: se_coverage(rng, 300, *setting) for name, setting in SE_SETTINGS.items()}
    lap("se")
    shape = {"base": realised(BASE, rng), "quiet": realised(QUIET, rng)}
    lap("generator")
    v = verdict
    # as ci_coverage_diff for the calibrated models: every interval of a confirm covers its
    # truth at once (the intervals are simultaneous; the winner's alone covers more often)
    cover = [v[s]["new_family"] for s in ("equal_n40", "gain03_n40", "gain05_n40")]
    keys = {
        "false_better_new_ids_share05_n40": v["equal_n40"]["new_better"],
        "false_better_new_ids_share05_n100": v["equal_n100"]["new_better"],
        "power_better_new_ids_0.03": v["gain03_n40"]["new_better_true"],
        "power_better_new_ids_0.05": v["gain05_n40"]["new_better_true"],
        "ci_coverage_new_ids": (
            float(np.mean([c[0] for c in cover])),
            math.sqrt(sum(c[1] ** 2 for c in cover)) / 3,
        ),
        "false_prune_seed_luck_k3_n40": prune[
            "seed luck 0.02 of 0.03, seeds as run_configs gives them"
        ],
        # the between-run rule's false prune (the per-epoch median pruner's is by design, and
        # reported beside it in the table)
        "false_prune_sequential_objective": objective["between_runs_only"],
        "median_prune_better_2sd_k3": objective["better_2sd"],
    }
    return {
        "keys": keys,
        "verdict": verdict,
        "pruning": prune,
        "objective": objective,
        "se": se,
        "realised": shape,
        "fold_seeds": tree,
        "reps": reps,
        "timing": timing,
    }


KEYS = (
    "false_better_new_ids_share05_n40",
    "false_better_new_ids_share05_n100",
    "power_better_new_ids_0.03",
    "power_better_new_ids_0.05",
    "ci_coverage_new_ids",
    "false_prune_seed_luck_k3_n40",
    "false_prune_sequential_objective",
    "median_prune_better_2sd_k3",
)


def _pm(x: tuple[float, float]) -> str:
    return f"{x[0]:.3f} ± {x[1]:.3f}"


def _generator_line(name: str, s: dict) -> str:
    q = "/".join(f"{x:.2f}" for x in s["identity_ap_q"])
    return (
        f"- {name}: mean mAP {s['mean_map']:.3f}; on a 19-identity fold a config-level run SD "
        f"{s['run_sd']:.4f}, of which config x identity {s['identity_share']:.2f}; fold SD "
        f"{s['fold_sd']:.3f}; per-identity AP 10/50/90 %: {q}"
    )


VERDICT_ROWS = {
    "equal_n40": "all equal on new ids, n=40",
    "equal_n100": "all equal on new ids, n=100",
    "gain03_n40": "one config +0.03 on new ids, n=40",
    "gain05_n40": "one config +0.05 on new ids, n=40",
    "study_only03_n40": "one config +0.03 on the study's ids only, n=40",
    "lognormal_equal_n40": "all equal, n=40, + per-config noise sdlog 0.5",
    "outliers_equal_n40": "all equal, n=40, + outlier runs (5 %, -0.15)",
    "stress_equal_n40": "all equal, n=40, + both",
    "stress_gain05_n40": "one config +0.05, n=40, + both",
}


def table(r: dict) -> str:
    v = r["verdict"]
    lines = [
        "Generators (logit-scale SDs in ``Hands``; realised on the mAP scale):",
        "",
        _generator_line("stress (keys)", r["realised"]["base"]),
        _generator_line("quiet (paired runs as on the 11k sample)", r["realised"]["quiet"]),
        f"- training seeds of a trial's {FOLDS} fold runs (run_configs): {list(r['fold_seeds'])}",
        "",
        f"Confirm verdict: {TRAIN_SIDE_IDS} training-side identities, confirm share {SHARE} "
        f"({round(SHARE * TRAIN_SIDE_IDS)} identities), top {TOP} + baseline, {SEEDS} seeds; "
        f"identity share 0.5 and seed luck; {r['reps']} studies per "
        "row, rate ± MC SE. New: runs measured on the confirm identities (new_identities); "
        "old: the same-fold confirm (decide with folds).",
        "",
        "| setting | new: says better | new: better, true config | new: CI covers | new: all "
        "5 cover | old: says better | old: better, true config | old: CI covers | old: all "
        "5 cover |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in VERDICT_ROWS.items():
        x = v[key]
        gain = "gain" in key
        cells = [
            _pm(x["new_better"]),
            _pm(x["new_better_true"]) if gain else "-",
            _pm(x["new_covers"]),
            _pm(x["new_family"]),
            _pm(x["old_better"]),
            _pm(x["old_better_true"]) if gain else "-",
            _pm(x["old_covers"]),
            _pm(x["old_family"]),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Confirm share (n=40, new rule): power, the interval's median half-width (the "
        "difference found half the time), and what the study's smaller folds cost the "
        "selection of a +0.05 config:",
        "",
        "| share | confirm ids | power +0.03 | power +0.05 | half-width | +0.05 config in "
        "top 5 | +0.05 config the study's best |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for share in SHARES:
        tail = "" if share == SHARE else f"_share{share}"
        g3, g5 = v[f"gain03_n40{tail}"], v[f"gain05_n40{tail}"]
        lines.append(
            f"| {share} | {round(share * TRAIN_SIDE_IDS)} | {_pm(g3['new_better_true'])} | "
            f"{_pm(g5['new_better_true'])} | {g5['new_half_width']:.3f} | {_pm(g5['in_top'])} "
            f"| {_pm(g5['study_best'])} |"
        )
    q5 = v["quiet_gain05_n40"]
    lines += [
        f"| {SHARE}, quiet generator | {round(SHARE * TRAIN_SIDE_IDS)} | - | "
        f"{_pm(q5['new_better_true'])} | "
        f"{q5['new_half_width']:.3f} | {_pm(q5['in_top'])} | {_pm(q5['study_best'])} |",
        "",
        f"Pruning between runs (K={FOLDS}, 40 equal complete trials unless the row says; share "
        f"of studies where an equal trial is pruned; {2 * r['reps']} studies per row, "
        f"{max(r['reps'] // 3, 2)} studies per sequential row):",
        "",
        "| model | false prune |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {_pm(x)} |" for name, x in r["pruning"].items()]
    o = r["objective"]
    lines += [
        "",
        f"Through Objective with the default pruners (make_pruner('median', {EPOCHS}, "
        f"{WARMUP}, {FOLDS}): {o['pruner']}, and between runs), {EPOCHS} epochs, seed luck "
        f"{SEED_LUCK_SD} of {RUN_SD}:",
        "",
        f"- {o['studies']} sequential studies of {TRIALS} equal trials: pruned "
        f"{_pm(o['false_prune'])} ({o['per_epoch_share']:.0%} of those by the per-epoch "
        "pruner); with `--pruner runs` (the between-run rule alone): "
        f"{_pm(o['between_runs_only'])}",
        f"- a trial 2 SD better than the best, asked against such a study: pruned "
        f"{_pm(o['better_2sd'])}",
        f"- against {o['complete']} studies of {TRIALS} complete trials (no survivor "
        f"selection): 2 SD better pruned {_pm(o['better_2sd_complete'])}, equal pruned "
        f"{_pm(o['equal_complete'])}",
        "",
        "The ± SE of a trial value (value_se) against its true mAP on new identities "
        "(coverage over 300 draws, the true SD over 1500):",
        "",
        "| setting | ±2 SE covers | RMS SE / true SD | true SD | RMS SE | seed-to-seed SD |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, x in r["se"].items():
        lines.append(
            f"| {name} | {_pm(x['coverage_2se'])} | {x['se_over_sd']:.2f} | {x['sd']:.4f} | "
            f"{x['rms_se']:.4f} | {x['seed_sd']:.4f} |"
        )
    lines += ["", "(" + ", ".join(f"{k} {t:.0f} s" for k, t in r["timing"].items()) + ")"]
    return "\n".join(lines)


def key_line(r: dict) -> str:
    """The keys, 4 decimals each, in ``KEYS`` order."""
    return " ".join(f"{k}={r['keys'][k][0]:.4f}" for k in KEYS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--complete", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    r = simulate_stress(args.reps, args.seed, args.studies, args.complete)
    print(table(r))
    print(key_line(r))


if __name__ == "__main__":
    main()
