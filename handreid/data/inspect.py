"""``handreid inspect``: check a dataset folder and report what a training run would use."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from handreid.config import TrainConfig
from handreid.data import DATASETS, detect_layout, load_catalog, resolve_root
from handreid.data.base import special_kind
from handreid.data.hands11k import check_aspects
from handreid.data.splits import build_splits
from handreid.errors import DataError
from handreid.threads import thread_map


def inspect_data(
    root: str | Path, dataset: str = "auto", aspects: Sequence[str] = ("all",)
) -> dict[str, Any]:
    """Load, split and decode-check a dataset; returns a JSON-ready dict.

    Keys: ``root, layout, aspects, images_found, images_missing, images_unreadable`` (names),
    ``images_unreadable_used`` (those of them a run with these aspects would decode, which
    ``train`` refuses), ``images_used, split, split_reason, distractors, identities`` and
    ``images`` (each ``{"train", "val", "test"}``), and ``warnings`` (the loader's, e.g. rows
    skipped). Every image found is decoded, so broken files are named here rather than in
    the middle of a run. Splits use the trainer's defaults.
    """
    path = resolve_root(root)
    if dataset != "auto" and dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose 'auto' or one of {sorted(DATASETS)}")
    layout = detect_layout(path) if dataset == "auto" else dataset
    aspects = check_aspects(tuple(aspects)) if layout == "11k" else ()
    cfg = TrainConfig(dataset=layout, data_root=str(path), aspects=aspects or ("all",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalog = load_catalog(cfg, path)
    # the report carries the missing-image count itself
    notes = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and "are missing from" not in str(w.message)
    ]
    splits = build_splits(catalog, cfg)
    stats = splits.stats
    bad = unreadable(catalog.found)
    # any selected record may be drawn into a run (splits depend on the seed): all of them count
    used = {r.path.name for r in (*catalog.records, *catalog.distractors)}
    return {
        "root": str(path),
        "layout": layout,
        "aspects": list(aspects),
        "images_found": stats["images_found"],
        "images_missing": stats["images_missing"],
        "images_unreadable": bad,
        "images_unreadable_used": [name for name in bad if name in used],
        "images_used": stats["images_used"],
        "split": stats["split"],
        "split_reason": stats["split_reason"],
        "distractors": stats["distractors"],
        "identities": dict(stats["identities"]),
        "images": dict(stats["images"]),
        "warnings": notes,
    }


def check_batches(cfg: TrainConfig, train_labels: Sequence[Hashable]) -> None:
    """Refuse, before training, a ``batch_size`` the training identities cannot fill.

    The P x K sampler draws P = batch_size / num_instances distinct identities per batch
    (an identity short of K images is filled by drawing its images again). With fewer
    identities it would shrink every batch to all of them, so the run would not be the
    config it claims to be. ``train_labels``: one identity label per training image.
    """
    counts = Counter(train_labels)
    p = cfg.num_identities_per_batch
    if len(counts) < p:
        most = len(counts) * cfg.num_instances
        hint = (
            f"use batch_size <= {most} (a multiple of num_instances) or more training identities"
            if len(counts) >= 2
            else "use more training identities"
        )
        raise DataError(
            f"batch_size={cfg.batch_size} with num_instances={cfg.num_instances} needs {p} "
            f"training identities per batch (P x K), but the training split has {len(counts)} "
            f"({sum(counts.values())} images); {hint}"
        )


def unreadable(paths: Sequence[Path], workers: int = 0) -> list[str]:
    """Names of the images that fail to decode (a header check misses truncated files), or
    that are no regular file (never opened: a FIFO would block)."""

    def broken(path: Path) -> bool:
        if special_kind(path) is not None:
            return True
        try:
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, still reads every byte
                img.load()
            return False
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return True

    flags = thread_map(broken, paths, workers or None)
    return sorted(p.name for p, bad in zip(paths, flags, strict=True) if bad)


def format_inspect(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    ids, imgs = report["identities"], report["images"]
    aspects = ", ".join(report["aspects"]) or "-"
    lines = [
        f"data:        {report['root']} (layout {report['layout']}, aspects: {aspects})",
        f"images:      {report['images_found']} found, {report['images_missing']} listed but missing, "
        f"{len(report['images_unreadable'])} unreadable, {report['images_used']} used",
        f"split:       {report['split']} ({report['split_reason']})",
        f"identities:  train {ids['train']}, val {ids['val']}, test {ids['test']}"
        + (f", confirm {ids['confirm']} (held out)" if ids.get("confirm") else ""),
        f"images:      train {imgs['train']}, val {imgs['val']}, test {imgs['test']}",
    ]
    if report["distractors"]:
        lines.append(f"distractors: {report['distractors']} images in every test gallery")
    bad = report["images_unreadable"]
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        lines.append(f"unreadable:  {', '.join(bad[:10])}{more}")
    lines += [f"warning:     {w}" for w in report.get("warnings", ())]
    return "\n".join(lines)


__all__ = ["check_batches", "format_inspect", "inspect_data", "unreadable"]
