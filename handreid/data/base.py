"""Records and splits shared by every dataset loader.

Every loader (11k Hands, HD, folder) turns its layout into ``Record``s and hands them to
``handreid.data.splits`` which builds one ``DataSplits``: training records, and validation and
test ``Partition``s, each with seeded query/gallery splits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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
