"""Datasets, splits, P x K sampling, the decoded-image cache and batch augmentation.

``load_splits(cfg)`` is the one entry point the trainer needs: it reads the layout named by
``cfg.dataset`` and returns ``DataSplits`` (see ``handreid.data.splits`` for the rules).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from handreid.config import TrainConfig
from handreid.data import folder, hands11k, hd
from handreid.data.base import DataSplits, Partition, Record, check_image_files
from handreid.data.splits import Catalog, build_splits
from handreid.errors import DataError

Loader = Callable[[Path, TrainConfig], Catalog]

DATASETS: dict[str, Loader] = {
    "11k": hands11k.load_catalog,
    "hd": hd.load_catalog,
    "folder": folder.load_catalog,
}


def get_loader(name: str) -> Loader:
    """The loader registered under ``name``; unknown names list the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def resolve_root(root: str | Path | None) -> Path:
    """``root`` as an existing directory, or a one-line DataError."""
    if root is None or str(root) == "":
        raise DataError("no data root given; set data_root in the config or pass --data")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} does not exist or is not a folder")
    return path


def detect_layout(root: str | Path) -> str:
    """``"11k"`` (HandInfo.csv), ``"hd"`` (Original Images/) or ``"folder"`` (<id>/<image>)."""
    path = resolve_root(root)
    if (path / hands11k.CSV_NAME).is_file():
        return "11k"
    if (path / hd.IMAGE_DIR).is_dir():
        return "hd"
    for sub in path.iterdir():
        if sub.is_dir() and any(folder.is_image(p) for p in sub.iterdir()):
            return "folder"
    raise DataError(
        f"cannot tell the layout of {path}: expected {hands11k.CSV_NAME} + {hands11k.IMAGE_DIR}/ "
        f"(11k), '{hd.IMAGE_DIR}/' (hd) or <identity>/<image> subfolders (folder)"
    )


def load_catalog(cfg: TrainConfig, root: Path) -> Catalog:
    """Run the loader of ``cfg.dataset``; a layout mismatch names the layout that was found.
    Every image a run may use is a regular file (a FIFO would hang the decoder)."""
    loader = get_loader(cfg.dataset)
    try:
        catalog = loader(root, cfg)
    except DataError as exc:
        try:
            found = detect_layout(root)
        except DataError:
            raise exc from None
        if found != cfg.dataset:
            raise DataError(f"{exc} (the folder looks like the {found!r} layout)") from None
        raise
    check_image_files(r.path for r in (*catalog.records, *catalog.distractors))
    return catalog


def load_splits(cfg: TrainConfig, data_root: str | Path | None = None) -> DataSplits:
    """Training records and validation/test partitions for ``cfg``.

    ``data_root`` overrides ``cfg.data_root``. Uses ``cfg.dataset``, ``aspects``,
    ``exclude_accessories``, ``split``, ``test_fraction``, ``val_fraction``, ``num_splits``
    and ``seed``; the same config gives the same splits.
    """
    root = resolve_root(data_root if data_root not in (None, "") else cfg.data_root)
    return build_splits(load_catalog(cfg, root), cfg)


__all__ = [
    "DATASETS",
    "Catalog",
    "DataSplits",
    "Partition",
    "Record",
    "detect_layout",
    "get_loader",
    "load_splits",
]
