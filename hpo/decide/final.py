"""``hpo final``: the numbers a paper reports, measured once on the test identities.

After a study has been confirmed, its winner and its reference baseline (and any extra trainer
YAML, e.g. a hand-tuned version) are trained on every training-side identity, the published
protocol's final model (``refit``), on ``M`` fresh seeds, for each aspect asked for, and each
model is evaluated once on the test identities over the protocol's query/gallery splits.

- **Runs** are trials of a companion study ``<study>.final`` in the same storage, queued once
  per (config, aspect, seed), taken by any number of workers and resumable like confirm runs:
  finished runs are never trained again, a killed run is failed and queued again. Each run
  keeps its checkpoint under ``studies/<study>/final/models/`` (``handreid evaluate`` on it
  gives the run's row) and records its per-split test metrics.
- **Test identities used once**: the study's ``final`` record lists every final evaluation
  (configs, their digests, seeds, aspects, time). Configs evaluated before are re-used, not
  trained again; a config first evaluated after others were is marked with how many configs had
  seen the test identities by then, and the table says so.
- **Statistics**: a row's value is the mean over seeds and query/gallery splits; seeds and
  splits are crossed random effects (every seed's model is evaluated on the same splits), so
  its 95 % interval comes from the two-way analysis of variance with Satterthwaite's df
  (``hpo.decide.verdict.seeds_by_splits``). The difference to the baseline is paired by seed
  and split and analysed the same way. Floors (raw pixels; the backbone without fine-tuning)
  have no seed: their interval is over splits alone.

Nothing in ``hpo run`` or ``hpo confirm`` reads what this module records.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from handreid.config import ASPECTS, TrainConfig
from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.common.paths import study_dir
from hpo.decide import confirm as cf
from hpo.decide.verdict import seeds_by_splits
from hpo.records.companion import FINAL_SUFFIX, load_companion, open_companion
from hpo.records.configs import trial_config
from hpo.records.optuna_internals import enqueue, set_attr, set_study_record, study_record

METRICS = ("rank1", "rank5", "rank10", "mAP")
FINAL_SEED = 1_000_000  # final seed s trains with seed + 1,000,000 + s: no study or confirm seed
LEVEL = 0.95
MARKER = "final_key"  # the attribute every queued final run carries
# What defines the test identities and how they are scored: every row of a table shares them
# (an extra --config's own values for these keys are replaced by the study's).
PROTOCOL = (
    "data_root",
    "dataset",
    "exclude_accessories",
    "split",
    "split_seed",
    "test_fraction",
    "num_splits",
    "eval_ap",
)
RECORD = "final"  # the study record: ledger, late marks, floors, the last table
DIGEST_VERSION = 1
# keys a config's digest leaves out: set by every final run, or not changing the model trained
NOT_IN_DIGEST = frozenset(
    {
        "seed",
        "aspects",
        "refit",
        "confirm_run",
        "confirm_fraction",
        "val_folds",
        "val_fold",
        "val_fraction",
        "val_repeats",
        "early_stop_patience",
        "cache_dir",
        "decode_workers",
        "eval_batch_size",
        "compile",
    }
)


@dataclass
class Entry:
    """One row of the table: a config trained with the final protocol."""

    label: str
    role: str  # winner, baseline or config
    source: str  # "trial 12" or the YAML's path
    config: dict[str, Any]  # the trainer config, before aspect and seed are set
    epochs: int

    @property
    def digest(self) -> str:
        """What the row trains and where it is tested, less what each run sets (seed, aspect,
        the final protocol) and what does not change the model (caches, batch sizes for
        evaluation, threads), so a cosmetic edit or a new default elsewhere is no new config."""
        body = {k: v for k, v in self.config.items() if k not in NOT_IN_DIGEST}
        body["epochs"] = self.epochs
        text = json.dumps({"v": DIGEST_VERSION, **body}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Aspect:
    """One section of the table: ``aspects`` to train and test on (None: the study's)."""

    name: str
    aspects: tuple[str, ...] | None


@dataclass
class FinalPlan:
    entries: list[Entry]
    aspects: list[Aspect]
    seeds: list[int]  # 1-based
    tuned_on: str  # the study's aspects, as a caption says them
    layout: str
    notes: list[str] = field(default_factory=list)

    def runs(self) -> list[tuple[Entry, Aspect, int]]:
        return [(e, a, s) for a in self.aspects for e in self.entries for s in self.seeds]


def run_key(entry: Entry, aspect: Aspect, seed: int) -> str:
    return f"{entry.digest}|{aspect.name}|{seed}"


def key_of(trial) -> str | None:
    """The run key a final run's trial carries."""
    return attrs_of(trial).get(MARKER)


def run_config(entry: Entry, aspect: Aspect, seed: int) -> TrainConfig:
    """The trainer config of one final run: all training-side identities, fixed epochs, no
    validation, a fresh seed."""
    cfg = TrainConfig.from_dict(entry.config, source=entry.source)
    changes: dict[str, Any] = dict(
        refit=True,
        confirm_run=False,
        val_folds=1,
        val_fold=0,
        early_stop_patience=0,
        epochs=entry.epochs,
        seed=cfg.seed + FINAL_SEED + seed,
    )
    if aspect.aspects is not None:
        changes["aspects"] = aspect.aspects
    return cfg.replace(**changes)


# ---- the plan ---------------------------------------------------------------------------------
def aspect_words(aspects: tuple[str, ...]) -> str:
    return "all aspects" if tuple(aspects) == ASPECTS else ", ".join(aspects)


def parse_aspects(text: str, study_cfg: TrainConfig, layout: str) -> list[Aspect]:
    """``study`` (the study's aspects: one section), ``each`` (every aspect of the data, one
    section each) or a comma-separated list of 11k aspects."""
    text = text.strip()
    if text == "study":
        name = aspect_words(study_cfg.aspects) if layout == "11k" else layout.upper()
        return [Aspect(name, None)]
    if layout != "11k":
        if text == "each":
            return [Aspect(layout.upper(), None)]  # HD or a folder: one set of identities
        raise UserError(
            f"--aspects {text!r}: the study's data is the {layout!r} layout, which has no "
            "aspects; use --aspects study"
        )
    if text == "each":
        return [Aspect(a, (a,)) for a in ASPECTS]
    names = [a.strip().lower() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in ASPECTS]
    if unknown or not names:
        shown = unknown[0] if unknown else text
        raise UserError(
            f"--aspects: unknown aspect {shown!r}; choose from {', '.join(ASPECTS)}, "
            "'each' or 'study'"
        )
    return [Aspect(a, (a,)) for a in dict.fromkeys(names)]


def _confirmed(study: optuna.Study) -> dict[str, Any]:
    summary = cf.current(study)
    if not summary or summary.get("winner") is None:
        raise UserError(
            f"study {study.study_name!r} has no confirmed winner; run `hpo confirm --study "
            f"{study.study_name}` first (the final table trains the confirmed winner and its "
            "baseline)"
        )
    if summary.get("reference_baseline") is None:
        raise UserError(
            f"study {study.study_name!r}: its confirm has no baseline to compare with; the "
            "search space needs a baseline"
        )
    if not summary.get("complete", True):
        raise UserError(
            f"study {study.study_name!r}: its confirm is partial; `{summary.get('command')}` "
            "finishes it before the final table"
        )
    return summary


def _entry(study: optuna.Study, summary: dict, number: int, role: str) -> Entry:
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    cfg = trial_config(study, trial)
    row = next((r for r in summary.get("rows", []) if r["trial"] == number), {})
    epochs = int(row.get("epochs") or cfg.epochs)
    name = attrs_of(trial).get("baseline")
    labels = {
        "winner": f"winner (trial {number})",
        "baseline": f"baseline {name}" if name else f"baseline (trial {number})",
        "both": f"winner = baseline {name or f'(trial {number})'}",
    }
    return Entry(labels[role], "baseline" if role == "both" else role, f"trial {number}",
                 cfg.to_dict(), epochs)  # fmt: skip


def extra_entry(path: str, study_cfg: TrainConfig) -> tuple[Entry, list[str]]:
    """A row from a trainer YAML: its model keys as written, the study's test protocol."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config {path}: no such file")
    cfg = TrainConfig.from_yaml(p)
    if cfg.model != study_cfg.model:
        raise UserError(
            f"--config {path}: model {cfg.model!r}, but the study tuned {study_cfg.model!r}; "
            "a final table compares configs of one backbone"
        )
    aligned = [k for k in PROTOCOL if getattr(cfg, k) != getattr(study_cfg, k)]
    cfg = cfg.replace(aspects=study_cfg.aspects, **{k: getattr(study_cfg, k) for k in PROTOCOL})
    return Entry(p.stem, "config", str(p), cfg.to_dict(), cfg.epochs), aligned


def plan(
    study: optuna.Study, seeds: int, configs: list[str] = (), aspects: str = "study"
) -> FinalPlan:
    """Everything checked before anything is queued: a confirmed study, readable configs of
    its backbone, aspects its data has."""
    from handreid.data import detect_layout, resolve_root

    if seeds < 2:
        raise UserError(f"--seeds={seeds}: at least 2 (an interval needs a second seed)")
    summary = _confirmed(study)
    same = summary["reference_baseline"] == summary["winner"]
    winner = _entry(study, summary, summary["winner"], "both" if same else "winner")
    entries = [winner]
    if not same:
        entries.append(_entry(study, summary, summary["reference_baseline"], "baseline"))
    study_cfg = TrainConfig.from_dict(winner.config)
    notes = []
    for path in configs:
        entry, aligned = extra_entry(path, study_cfg)
        if any(e.digest == entry.digest for e in entries):
            notes.append(f"--config {path} trains the same as {entry.label}; listed once")
            continue
        entries.append(entry)
        if aligned:
            notes.append(
                f"--config {path}: {', '.join(aligned)} set to the study's, so every row is "
                "measured on the same test identities"
            )
    layout = detect_layout(resolve_root(study_cfg.data_root))
    return FinalPlan(
        entries=entries,
        aspects=parse_aspects(aspects, study_cfg, layout),
        seeds=list(range(1, seeds + 1)),
        tuned_on=aspect_words(study_cfg.aspects) if layout == "11k" else layout.upper(),
        layout=layout,
        notes=notes,
    )


# ---- the ledger: test identities used once ---------------------------------------------------
def record(study: optuna.Study) -> dict[str, Any]:
    return dict(study_record(study, RECORD) or {})


def _save(study: optuna.Study, rec: dict[str, Any]) -> None:
    set_study_record(study, RECORD, rec)


def evaluated(study: optuna.Study, companion: optuna.Study | None = None) -> dict[str, str]:
    """digest -> label of every config with a finished final run: its test results exist."""
    companion = companion if companion is not None else load_runs(study)
    out: dict[str, str] = {}
    if companion is None:
        return out
    for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = attrs_of(t)
        if a.get(MARKER):
            out.setdefault(a[MARKER].split("|")[0], a.get("final_label", "?"))
    return out


def register(study: optuna.Study, p: FinalPlan, command: str, companion=None) -> list[str]:
    """Add this ``hpo final`` to the ledger before anything trains; returns the warning lines:
    configs new to test identities whose results for other configs exist already."""
    rec = record(study)
    before = evaluated(study, companion)
    late = dict(rec.get("late", {}))
    new = [e for e in p.entries if e.digest not in before]
    warnings_ = []
    if before and new:
        for e in new:
            late.setdefault(e.digest, len(before))
        warnings_.append(
            f"warning: the test identities have already been used for {plural(len(before))} "
            f"({', '.join(sorted(before.values()))}); "
            f"{', '.join(e.label for e in new)} "
            f"{'are' if len(new) > 1 else 'is'} marked in the table: chosen after test results "
            "were seen, a row is no clean hold-out"
        )
    use = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "seeds": p.seeds,
        "aspects": [a.name for a in p.aspects],
        "configs": [
            {"label": e.label, "digest": e.digest, "role": e.role, "source": e.source}
            for e in p.entries
        ],
    }
    rec["ledger"] = [*rec.get("ledger", []), use]
    rec["late"] = late
    _save(study, rec)
    return warnings_


# ---- the runs ---------------------------------------------------------------------------------
def open_runs(study: optuna.Study, storage) -> optuna.Study:
    return open_companion(study, storage, FINAL_SUFFIX)


def load_runs(study: optuna.Study) -> optuna.Study | None:
    return load_companion(study, FINAL_SUFFIX)


def queue(companion: optuna.Study, p: FinalPlan) -> list[str]:
    """Queue every run that is not complete, running or queued; returns their keys."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    taken = {attrs_of(t).get(MARKER) for t in companion.get_trials(deepcopy=False, states=states)}
    added = []
    for entry, aspect, seed in p.runs():
        key = run_key(entry, aspect, seed)
        if key in taken:
            continue
        attrs = {
            MARKER: key,
            "final_label": entry.label,
            "final_role": entry.role,
            "final_aspect": aspect.name,
            "final_seed": seed,
            "final_config": run_config(entry, aspect, seed).to_dict(),
        }
        enqueue(companion, {}, attrs)
        added.append(key)
    return added


def model_path(study_name: str, key: str, label: str, number: int) -> Path:
    """Where a run's checkpoint is kept: ``studies/<study>/final/models/<aspect>/<label>-
    <digest>/seed<s>-run<n>.pt`` (n: the run's trial number, so a retry never writes over
    the file of a run still going)."""
    digest, aspect, seed = key.split("|")
    slug = lambda s: "".join(c if c.isalnum() else "-" for c in s).strip("-") or "x"  # noqa: E731
    return (
        study_dir(study_name)
        / "final"
        / "models"
        / slug(aspect)
        / f"{slug(label)}-{digest}"
        / f"seed{seed}-run{number}.pt"
    )


class FinalRun:
    """The objective of a final run: train its config, evaluate the model once on the test
    identities (every query/gallery split), keep the checkpoint. The value is the test mAP."""

    def __init__(self, study_name: str, device=None, data=None, fit_fn=None, on_epoch=None):
        from handreid.engine import fit

        self.study_name = study_name
        self.device = device
        self.data = data
        self.fit_fn = fit_fn or fit
        self.on_epoch = on_epoch

    def __call__(self, trial: optuna.Trial) -> float:
        from handreid.checkpoint import save_checkpoint
        from handreid.engine import test_report

        attrs = attrs_of(trial)
        cfg = TrainConfig.from_dict(attrs["final_config"], source=f"final run {trial.number}")
        data = self.data.get(cfg) if self.data is not None else None
        start = time.perf_counter()
        callbacks = []
        if self.on_epoch is not None:
            callbacks.append(lambda epoch, m: self.on_epoch(trial, cfg, epoch, m))
        result = self.fit_fn(cfg, device=self.device, data=data, callbacks=callbacks)
        if result.status == "diverged":  # a result too: kept, counted, never trained again
            set_attr(trial, "error", "training diverged (non-finite loss); no model to test")
            raise optuna.TrialPruned("diverged")
        test = test_report(result.model, result.data, cfg, self.device, per_split=True)
        path = model_path(self.study_name, attrs[MARKER], attrs["final_label"], trial.number)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            path,
            result.model,
            cfg,
            num_classes=result.data.num_classes,
            aspects=result.data.aspects,
            test={k: v for k, v in test.items() if k != "splits"},
        )
        splits = [{k: round(float(s[k]), 6) for k in METRICS} for s in test["splits"]]
        set_attr(trial, "final_test", {"splits": splits, "test_set": test["test_set"]})
        set_attr(trial, "final_checkpoint", str(path))
        set_attr(trial, "final_data", _data_facts(result.data))
        set_attr(trial, "seconds", round(time.perf_counter() - start, 1))
        return round(float(test["mAP"]), 6)


def _data_facts(data) -> dict[str, Any]:
    stats = data.splits.stats
    return {
        "split": stats.get("split"),
        "split_reason": stats.get("split_reason"),
        "test_identities": stats["identities"]["test"],
        "train_identities": stats["identities"]["train"],
        "test_subjects": sorted({r.subject for r in data.splits.test.records}),
    }


def work(companion: optuna.Study, objective, on_run=None) -> int:
    """Run queued final runs until none is left (``hpo.decide.confirm.work``'s loop)."""
    return cf.work(companion, objective, on_run, marker=MARKER, what="final run")


# ---- floors -----------------------------------------------------------------------------------
def floors_for(cfg: TrainConfig, data, device=None) -> dict[str, Any]:
    """Per-split test metrics of raw pixels and of the backbone without fine-tuning."""
    from handreid.engine import evaluate_features, resolve_device
    from handreid.floors import backbone_features, backbone_label, build_backbone, pixel_features

    device = resolve_device(device)
    encoder = build_backbone(cfg, device)
    test = data.test.to(device)
    out = {}
    for kind, label, make in (
        ("pixels", "raw pixels", pixel_features),
        (
            "backbone",
            backbone_label(cfg),
            lambda x: backbone_features(encoder, x, cfg.eval_batch_size, device),
        ),
    ):
        r = evaluate_features(make(data.test.images).to(device), test, cfg.eval_ap, per_split=True)
        out[kind] = {
            "label": label,
            "splits": [{k: round(float(s[k]), 6) for k in METRICS} for s in r["splits"]],
        }
    return out


def ensure_floors(study: optuna.Study, p: FinalPlan, pool, device=None) -> dict[str, Any]:
    """The floors of every aspect of the plan, computed once per test set and kept."""
    rec = record(study)
    floors = dict(rec.get("floors", {}))
    changed = False
    for aspect in p.aspects:
        cfg = run_config(p.entries[0], aspect, p.seeds[0])
        data = pool.get(cfg)
        key = f"{aspect.name}|{data.splits.test.digest}|{cfg.model}|{cfg.pretrained}"
        if floors.get(aspect.name, {}).get("key") == key:
            continue
        floors[aspect.name] = {"key": key, **floors_for(cfg, data, device)}
        changed = True
    if changed:
        rec = record(study)
        rec["floors"] = floors
        _save(study, rec)
    return floors


# ---- the table --------------------------------------------------------------------------------
def _cell(matrix: np.ndarray, bounds: tuple[float, float], trained: bool = True) -> dict:
    """Mean and 95 % interval of a (seeds, splits) table. A trained config needs 2 seeds for an
    interval: the splits of one model cannot show what a new seed does (a floor, which has no
    seed, is measured over its splits alone)."""
    if trained and matrix.shape[0] < 2:
        mean = float(matrix.mean())
        return {"mean": mean, "se": math.nan, "df": 0.0, "ci": [math.nan, math.nan]}
    mean, se, df, (lo, hi) = seeds_by_splits(matrix, LEVEL, bounds)
    return {"mean": mean, "se": se, "df": df, "ci": [lo, hi]}


def _matrix(runs: dict[int, list[dict]], seeds: list[int], metric: str) -> np.ndarray:
    return np.array([[s[metric] for s in runs[seed]] for seed in seeds], dtype=float)


def published_rows(aspect: Aspect, cfg: TrainConfig, facts: dict | None) -> list[dict]:
    """Published results on this aspect (``published.yaml``), each said to be comparable only
    when our data protocol is theirs (their backbone may differ: that is the comparison)."""
    text = resources.files("hpo.decide").joinpath("published.yaml").read_text(encoding="utf-8")
    out = []
    aspects = aspect.aspects if aspect.aspects is not None else cfg.aspects
    for row in yaml.safe_load(text)["results"]:
        proto = row["protocol"]
        if proto["dataset"] != cfg.dataset or list(aspects) != [proto["aspect"]]:
            continue
        ours = {
            "split": (facts or {}).get("split"),
            "num_splits": cfg.num_splits,
            "exclude_accessories": cfg.exclude_accessories,
        }
        differs = [k for k in ours if ours[k] != proto[k]]
        out.append(
            {
                "label": f"{row['method']} ({row['source']})",
                "backbone": row["backbone"],
                "metrics": {  # published as percentages
                    k: (row["metrics"][k] / 100 if k in row["metrics"] else None) for k in METRICS
                },
                "comparable": not differs,
                "differs": differs,
                "protocol": proto,
                "cite": row.get("cite", ""),
            }
        )
    return out


def collect(companion: optuna.Study | None) -> dict[str, FrozenTrial]:
    """Finished final runs by key: complete ones (the first to finish, should a retry have
    finished too), and diverged ones (pruned), which have no test result."""
    out: dict[str, FrozenTrial] = {}
    if companion is None:
        return out
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    for t in sorted(companion.get_trials(deepcopy=False, states=states), key=_finished_first):
        key = attrs_of(t).get(MARKER)
        if key and ("final_test" in attrs_of(t) or t.state == TrialState.PRUNED):
            out.setdefault(key, t)
    return out


def _finished_first(t: FrozenTrial) -> tuple:
    return (t.state != TrialState.COMPLETE, t.datetime_complete or t.datetime_start, t.number)


def summarize(study: optuna.Study, p: FinalPlan, companion: optuna.Study | None) -> dict:
    """The table as a JSON-ready record: per aspect, each config's mean and 95 % interval of
    every metric, its paired difference to the baseline, the floors and published rows, and
    what is missing."""
    runs = collect(companion)
    rec = record(study)
    late = rec.get("late", {})
    floors = rec.get("floors", {})
    study_subjects = _study_subjects(study, p)
    base = next((e for e in p.entries if e.role == "baseline"), None)
    sections, missing_all = [], []
    for aspect in p.aspects:
        facts = None
        per_entry: dict[str, dict[int, list[dict]]] = {}
        checkpoints: dict[str, list[str]] = {}
        diverged: dict[str, list[int]] = {}
        for e in p.entries:
            got = {}
            for s in p.seeds:
                t = runs.get(run_key(e, aspect, s))
                if t is None:
                    missing_all.append(f"{aspect.name}: {e.label} seed {s}")
                    continue
                if t.state == TrialState.PRUNED:
                    diverged.setdefault(e.digest, []).append(s)
                    continue
                got[s] = attrs_of(t)["final_test"]["splits"]
                checkpoints.setdefault(e.digest, []).append(attrs_of(t)["final_checkpoint"])
                facts = facts or attrs_of(t).get("final_data")
            per_entry[e.digest] = got
        rows = []
        for e in p.entries:
            got = per_entry[e.digest]
            row = {
                "label": e.label,
                "role": e.role,
                "source": e.source,
                "digest": e.digest,
                "seeds": sorted(got),
                "late": late.get(e.digest, 0),
                "diverged": diverged.get(e.digest, []),
                "checkpoints": checkpoints.get(e.digest, []),
                "metrics": {},
                "vs_baseline": None,
            }
            if got:
                seeds = sorted(got)
                row["metrics"] = {m: _cell(_matrix(got, seeds, m), (0.0, 1.0)) for m in METRICS}
            if base is not None and e is not base and got:
                shared = sorted(set(got) & set(per_entry[base.digest]))
                if shared:
                    row["vs_baseline"] = {
                        m: _cell(
                            _matrix(got, shared, m) - _matrix(per_entry[base.digest], shared, m),
                            (-1.0, 1.0),
                        )
                        for m in METRICS
                    }
            rows.append(row)
        floor_rows = []
        for kind in ("pixels", "backbone"):
            f = floors.get(aspect.name, {}).get(kind)
            if f:
                matrix = {0: f["splits"]}
                floor_rows.append(
                    {
                        "label": f["label"],
                        "kind": kind,
                        "metrics": {
                            m: _cell(_matrix(matrix, [0], m), (0.0, 1.0), trained=False)
                            for m in METRICS
                        },
                    }
                )
        cfg = run_config(p.entries[0], aspect, p.seeds[0])
        overlap = None
        if facts is not None and study_subjects is not None:
            overlap = len(set(facts.get("test_subjects", [])) & study_subjects)
        sections.append(
            {
                "aspect": aspect.name,
                "split": (facts or {}).get("split"),
                "num_splits": cfg.num_splits,
                "test_identities": (facts or {}).get("test_identities"),
                "train_identities": (facts or {}).get("train_identities"),
                "study_subjects_in_test": overlap,
                "rows": rows,
                "floors": floor_rows,
                "published": published_rows(aspect, cfg, facts),
            }
        )
    configs_used = len(evaluated(study, companion))
    planned = {run_key(e, a, s) for e, a, s in p.runs()}
    others = sum(1 for k, t in runs.items() if k not in planned and t.state == TrialState.COMPLETE)
    return {
        "study": study.study_name,
        "tuned_on": p.tuned_on,
        "seeds": p.seeds,
        "level": LEVEL,
        "aspects": sections,
        "missing": missing_all,
        "complete": not missing_all,
        "configs_on_test": configs_used,
        "other_runs": others,  # finished runs of configs or aspects this table leaves out
        "uses": len(rec.get("ledger", [])),
        "notes": p.notes,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _study_subjects(study: optuna.Study, p: FinalPlan) -> set[str] | None:
    """Subjects on the study's training side (trained, validated or confirmed on), to count
    those a per-aspect test set holds; None when the study's data cannot be read."""
    from handreid.data import load_splits

    cfg = TrainConfig.from_dict(p.entries[0].config).replace(
        refit=True, confirm_run=False, val_folds=1, val_fold=0
    )
    try:
        with warnings.catch_warnings():  # missing images were reported when the data was read
            warnings.simplefilter("ignore", UserWarning)
            splits = load_splits(cfg)
    except (UserError, OSError):
        return None
    return {r.subject for r in splits.train}


def store(study: optuna.Study, table: dict[str, Any]) -> None:
    rec = record(study)
    rec["table"] = table
    _save(study, rec)


def current(study: optuna.Study) -> dict[str, Any] | None:
    """The last final table of ``study``, if any."""
    return record(study).get("table")


def plural(n: int, word: str = "config") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


__all__ = [
    "METRICS",
    "Aspect",
    "Entry",
    "FinalPlan",
    "FinalRun",
    "collect",
    "current",
    "ensure_floors",
    "evaluated",
    "load_runs",
    "open_runs",
    "parse_aspects",
    "plan",
    "queue",
    "register",
    "run_config",
    "store",
    "summarize",
    "work",
]
