"""Identity splits (train / validation / test) and seeded query/gallery splits.

Loaders turn a layout into a ``Catalog``; ``build_splits`` turns a catalog into ``DataSplits``.

Rules, the same for every layout:

- Only identities with at least 2 images can be evaluated (one gallery image plus at least one
  query). Identities with fewer stay in training and never enter a validation or test partition.
- ``split="random"`` draws test *subjects* (every aspect of a person together, so one person
  never sits on both sides) from the subjects that can be evaluated: ``test_fraction`` of them.
  A single-image view of a validation or test subject is therefore dropped, not trained on
  (this only happens with several aspects, where an identity is a subject's view).
- ``split="published"`` uses the catalog's published rule (11k Hands id thresholds).
- ``split="auto"`` uses the published rule when the catalog has one, at least 90% of the images
  the CSV lists for the selected aspects are present (the rule defines the protocol of the full
  release; a partial copy would carry the name without being comparable), and both sides hold at
  least 2 identities with 2 or more images. Otherwise it falls back to the random split and
  ``stats["split_reason"]`` says why.
- Validation identities are ``val_fraction`` of the training identities (grouped by subject,
  drawn from those that can be evaluated) and are removed from training.
- With ``val_folds = K > 1`` the training-side subjects that can be evaluated are dealt into K
  disjoint folds instead (``val_fraction`` is unused); a run validates on fold ``val_fold``
  and trains on the rest, so K runs rotate the validation role over every such subject.
- ``confirm_fraction`` sets aside that share of the training side's evaluable subjects (at
  least ``CONFIRM_MIN``) as confirm identities, drawn before validation: no run trains or
  validates on them, so a decision measured there is about hands no earlier decision has seen.
  A ``confirm_run`` trains on every other training-side identity and validates on the confirm
  identities only (``hpo confirm``).
- ``refit`` trains on every training-side identity and has no validation partition: the
  published protocol's final model, reported on the test identities only. The decisions are
  made by then, so confirm identities train too.
- Every query/gallery split puts one randomly chosen image of each identity in the gallery and
  the rest in the queries; distractors (HD ids 502-712) join every test gallery, never queries.
- All randomness derives from ``cfg.split_seed``: the same split seed gives identical splits,
  whatever the training ``seed``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handreid.config import TrainConfig
from handreid.data.base import DataSplits, Partition, Record
from handreid.errors import DataError

MIN_COVERAGE = 0.9  # share of listed images that must exist before "auto" picks the published split
_TAG_TEST, _TAG_VAL, _TAG_QUERY, _TAG_FOLDS = 1, 2, 3, 4  # random streams from cfg.split_seed
_TAG_CONFIRM = 5
CONFIRM_MIN = 4  # confirm subjects at least: fewer cannot show how configs vary over people


@dataclass
class Catalog:
    """What a loader found: usable records plus facts for the split and for ``inspect``."""

    layout: str
    records: list[Record]
    found: list[Path]  # every image file present (before aspect/accessory filters)
    missing: int = 0  # listed images whose file does not exist
    coverage: float = 1.0  # present / listed, for the selected aspects and filters
    aspects: tuple[str, ...] = ("",)
    distractors: list[Record] = field(default_factory=list)
    published: Callable[[Record], bool] | None = None  # True: record is on the training side


def build_splits(catalog: Catalog, cfg: TrainConfig) -> DataSplits:
    """Split ``catalog`` into training records and validation/test partitions."""
    by_id = _group(catalog.records)
    eligible = {ident for ident, recs in by_id.items() if len(recs) >= 2}
    if not eligible:
        raise DataError(
            f"no identity has 2 or more images ({len(by_id)} identities, "
            f"{len(catalog.records)} images); at least one gallery and one query image are needed"
        )
    mode, reason = _choose_mode(catalog, cfg, by_id, eligible)
    if mode == "published":
        # the protocol's training side is fixed by id; test-side ids with one image are unused
        test_ids = {i for i in eligible if not catalog.published(by_id[i][0])}
        train_ids = {i for i in by_id if catalog.published(by_id[i][0])}
    else:
        test_ids = _draw_test(by_id, eligible, cfg)
        train_ids = set(by_id) - test_ids
    confirm_ids: set[str] = set()
    if cfg.confirm_fraction > 0 and not cfg.refit:
        confirm_ids = draw_confirm(by_id, train_ids, eligible & train_ids, cfg)
        train_ids -= confirm_ids
    if cfg.refit:
        val_ids: set[str] = set()
    elif cfg.confirm_run:
        val_ids = confirm_ids
    elif cfg.val_folds > 1:
        val_ids = validation_folds(by_id, eligible & train_ids, cfg)[cfg.val_fold]
    else:
        val_ids = _draw_val(by_id, train_ids, eligible & train_ids, cfg)
    train_ids -= val_ids
    # keep people disjoint: other views of evaluated subjects never train (the published
    # protocol fixes its test side per aspect, so there only validation subjects are dropped)
    held = val_ids | confirm_ids
    evaluated = {by_id[i][0].subject for i in (held | test_ids if mode == "random" else held)}
    dropped = {i for i in train_ids if by_id[i][0].subject in evaluated}
    train_ids -= dropped
    _check_sizes(train_ids, val_ids, test_ids, cfg.refit)

    train = tuple(r for i in sorted(train_ids) for r in by_id[i])
    # fold k > 0 gets its own query/gallery stream; K = 1 keeps the single validation stream;
    # the confirm identities have theirs
    tag = 9 if cfg.confirm_run else 0 if cfg.val_folds == 1 else 10 + cfg.val_fold
    val = _partition(by_id, val_ids, [], cfg, tag=tag)
    test = _partition(by_id, test_ids, catalog.distractors, cfg, tag=1)
    n_dropped = _count(set(by_id) - train_ids - val_ids - test_ids - confirm_ids, by_id)
    stats = {
        "layout": catalog.layout,
        "split": mode,
        "split_reason": reason,
        "images_found": len(catalog.found),
        "images_missing": catalog.missing,
        "images_used": len(catalog.records) - n_dropped,
        "images_dropped": n_dropped,
        "distractors": len(catalog.distractors),
        "identities": {"train": len(train_ids), "val": len(val_ids), "test": len(test_ids)},
        "images": {"train": len(train), "val": len(val.records), "test": _count(test_ids, by_id)},
    }
    if confirm_ids and not cfg.confirm_run:
        stats["identities"]["confirm"] = len(confirm_ids)  # held out of this run
    return DataSplits(train=train, val=val, test=test, aspects=catalog.aspects, stats=stats)


def _count(ids: set[str], by_id: dict[str, list[Record]]) -> int:
    return sum(len(by_id[i]) for i in ids)


def _group(records: Sequence[Record]) -> dict[str, list[Record]]:
    by_id: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_id[r.identity].append(r)
    return {i: sorted(rs, key=lambda r: str(r.path)) for i, rs in sorted(by_id.items())}


def _choose_mode(
    catalog: Catalog, cfg: TrainConfig, by_id: dict[str, list[Record]], eligible: set[str]
) -> tuple[str, str]:
    if cfg.split == "random":
        return "random", "split=random"
    if catalog.published is None:
        if cfg.split == "published":
            raise DataError(
                f"split='published' is defined only for 11k Hands with numeric ids; "
                f"the {catalog.layout!r} data needs split 'random' or 'auto'"
            )
        return "random", f"no published split for the {catalog.layout!r} layout"
    if cfg.split == "published":
        return "published", "split=published"
    if catalog.coverage < MIN_COVERAGE:
        return "random", (
            f"only {catalog.coverage:.0%} of the listed images are present; the published split "
            "describes the full dataset"
        )
    train_side = sum(catalog.published(by_id[i][0]) for i in eligible)
    test_side = len(eligible) - train_side
    if min(train_side, test_side) < 2:
        return "random", (
            f"published thresholds put {train_side} evaluable identities on the training side and "
            f"{test_side} on the test side; each needs at least 2"
        )
    return "published", "full dataset with identities on both sides of the published thresholds"


def _subjects(by_id: dict[str, list[Record]], ids: set[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for ident in sorted(ids):
        groups[by_id[ident][0].subject].append(ident)
    return dict(sorted(groups.items()))


def validation_folds(
    by_id: dict[str, list[Record]], candidates: set[str], cfg: TrainConfig
) -> list[set[str]]:
    """``cfg.val_folds`` disjoint identity sets covering ``candidates``, grouped by subject.

    Subjects are shuffled with the split seed and dealt round-robin, so fold sizes differ by
    at most one subject.
    """
    groups = _subjects(by_id, candidates)
    k = cfg.val_folds
    if len(groups) < k:
        raise DataError(
            f"val_folds={k}: the training side has only {len(groups)} subjects with 2 or more "
            f"images; use at most {len(groups)} folds (or val_repeats on one split)"
        )
    names = list(groups)
    order = np.random.default_rng([cfg.split_seed, _TAG_FOLDS]).permutation(len(names))
    folds: list[set[str]] = [set() for _ in range(k)]
    for rank, idx in enumerate(order):
        folds[rank % k].update(groups[names[idx]])
    return folds


def _draw(groups: dict[str, list[str]], n: int, tag: int, seed: int) -> set[str]:
    rng = np.random.default_rng([seed, tag])
    names = list(groups)
    chosen = rng.choice(len(names), size=n, replace=False)
    return {ident for k in chosen for ident in groups[names[k]]}


def _draw_test(by_id: dict[str, list[Record]], eligible: set[str], cfg: TrainConfig) -> set[str]:
    groups = _subjects(by_id, eligible)
    if len(groups) < 2:
        raise DataError(
            f"only {len(groups)} subject has 2 or more images; a random split needs at least 2 "
            "(one for testing, one for validation)"
        )
    n = min(max(round(cfg.test_fraction * len(groups)), 1), len(groups) - 1)
    return _draw(groups, n, _TAG_TEST, cfg.split_seed)


def draw_confirm(
    by_id: dict[str, list[Record]], train_ids: set[str], candidates: set[str], cfg: TrainConfig
) -> set[str]:
    """The confirm identities: ``confirm_fraction`` of the training side's subjects, at least
    ``CONFIRM_MIN``, drawn from those that can be evaluated, with the split seed."""
    groups = _subjects(by_id, candidates)
    total = len(_subjects(by_id, train_ids))
    n = max(round(cfg.confirm_fraction * total), CONFIRM_MIN)
    # what stays must still train and validate: at least 2 subjects more than the folds
    keep = max(cfg.val_folds, 2) + 1
    if n > len(groups) or total - n < keep:
        raise DataError(
            f"confirm_fraction={cfg.confirm_fraction}: the training side has {total} subjects "
            f"({len(groups)} with 2 or more images); {n} confirm subjects would leave fewer "
            f"than {keep} to train and validate on. Use more data or confirm_fraction: 0"
        )
    return _draw(groups, n, _TAG_CONFIRM, cfg.split_seed)


def _draw_val(
    by_id: dict[str, list[Record]], train_ids: set[str], candidates: set[str], cfg: TrainConfig
) -> set[str]:
    groups = _subjects(by_id, candidates)
    total = len(_subjects(by_id, train_ids))
    # Keep at least one training subject; take at least 2 validation subjects when possible.
    upper = min(len(groups), total - 1)
    n = min(max(round(cfg.val_fraction * total), 2), upper)
    if n < 1:
        raise DataError(
            f"cannot hold out validation identities: the training side has {total} subjects, "
            f"{len(groups)} of them with 2 or more images"
        )
    return _draw(groups, n, _TAG_VAL, cfg.split_seed)


def _check_sizes(
    train_ids: set[str], val_ids: set[str], test_ids: set[str], refit: bool = False
) -> None:
    if not (train_ids and (val_ids or refit) and test_ids):
        raise DataError(
            f"too few identities to split: train {len(train_ids)}, val {len(val_ids)}, "
            f"test {len(test_ids)}; each needs at least one"
        )


def _partition(
    by_id: dict[str, list[Record]],
    ids: set[str],
    distractors: Sequence[Record],
    cfg: TrainConfig,
    tag: int,
) -> Partition:
    records = [r for i in sorted(ids) for r in by_id[i]]
    starts = np.cumsum([0] + [len(by_id[i]) for i in sorted(ids)])
    extra = np.arange(len(records), len(records) + len(distractors), dtype=np.int64)
    splits = []
    for s in range(cfg.num_splits):
        rng = np.random.default_rng([cfg.split_seed, _TAG_QUERY, tag, s])
        counts = np.diff(starts)
        picks = starts[:-1] + (rng.random(len(counts)) * counts).astype(np.int64)
        is_query = np.ones(len(records), dtype=bool)
        is_query[picks] = False
        query = np.flatnonzero(is_query).astype(np.int64)
        gallery = np.concatenate([np.sort(picks).astype(np.int64), extra])
        splits.append((query, gallery))
    return Partition(records=tuple(records) + tuple(distractors), splits=tuple(splits))


__all__ = ["MIN_COVERAGE", "Catalog", "build_splits", "validation_folds"]
