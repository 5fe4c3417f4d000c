"""Records and splits shared by every dataset loader.

Every loader (11k Hands, HD, folder) turns its layout into ``Record``s and hands them to
``handreid.data.splits`` which builds one ``DataSplits``: training records, and validation and
test ``Partition``s, each with seeded query/gallery splits.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handreid.errors import DataError

_SPECIAL = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True)
class Record:
    """One image.

    ``identity`` is the re-ID label: the subject id alone for a single aspect, or
    ``"<subject>|<aspect>"`` when several aspects are loaded (the four views of one person are
    four identities, as in the published evaluation). ``aspect`` is one of
    ``handreid.config.ASPECTS`` or ``""`` for datasets without aspects (HD, folder).
    """

    path: Path
    identity: str
    subject: str
    aspect: str = ""


@dataclass(frozen=True)
class Partition:
    """Images evaluated together, with ``num_splits`` query/gallery splits.

    ``splits[i] = (query_idx, gallery_idx)``: int64 index arrays into ``records``, disjoint,
    one gallery image per identity (plus every distractor in the gallery).
    """

    records: tuple[Record, ...]
    splits: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def identities(self) -> list[str]:
        return sorted({r.identity for r in self.records})

    @property
    def digest(self) -> str:
        """12 hex digits of the images (identity and file name, in order) and the splits: two
        partitions with one digest are scored on the same images in the same way. File names,
        not paths, so a copy of the data moved elsewhere keeps its digest."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.identity}\0{r.path.name}\n".encode())
        for query, gallery in self.splits:
            h.update(np.asarray(query, dtype=np.int64).tobytes() + b"|")
            h.update(np.asarray(gallery, dtype=np.int64).tobytes() + b"\n")
        return h.hexdigest()[:12]


@dataclass(frozen=True)
class DataSplits:
    """Training records plus validation (for model selection) and test (for reporting) sets.

    Validation identities are carved from the training identities; test identities never
    appear in ``train`` or ``val``.
    """

    train: tuple[Record, ...]
    val: Partition
    test: Partition
    aspects: tuple[str, ...]
    stats: dict = field(default_factory=dict)  # images_found, images_missing, split used, ...

    @property
    def train_identities(self) -> list[str]:
        return sorted({r.identity for r in self.train})

    def identity_lists(self) -> dict:
        """Validation and test identities with a short digest, so anyone can check which
        identities a number was measured on (and that another run used the same ones)."""
        val, test = self.val.identities, sorted({r.identity for r in self.test.records})
        text = json.dumps({"val": val, "test": test, "train": self.train_identities})
        return {
            "digest": hashlib.sha256(text.encode()).hexdigest()[:12],
            "val": val,
            "test": test,
            "train_count": len(self.train_identities),
        }


# ---- image files: regular files only --------------------------------------------------------
def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists but is no regular file (``"a FIFO (named pipe)"``, ...);
    None for a regular file, a link to one, or a path that cannot be stat'ed (missing files
    are named where they are read). ``os.stat`` never blocks, where ``open()`` on a FIFO
    waits for a writer forever."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _SPECIAL if test(mode)), "no regular file")


def check_image_files(paths: Iterable[Path]) -> None:
    """Refuse, before anything opens them, image paths that are not regular files."""
    for path in paths:
        kind = special_kind(path)
        if kind is not None:
            raise DataError(
                f"{path} is {kind}, not an image file; reading it would block or fail, so "
                "replace it with the image or remove it"
            )
