"""P x K batches: P distinct identities, K images each, so every anchor has positives.

Without this the seed trainer's batch-hard triplet loss saw mostly anchors with no positive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


class PKSampler:
    """Yields ``torch.LongTensor`` index batches of ``p * k`` indices into ``labels``.

    Each epoch cuts every identity's shuffled images into chunks of ``k`` (an identity with
    fewer than ``k`` images, or a short last chunk, is filled by drawing its images with
    replacement) and builds each batch from one chunk of ``p`` distinct identities, favouring
    identities with more chunks left, so an epoch visits about every image once. When the
    chunks of enough identities run out, those identities are refilled, so there are always
    ``len(self)`` batches of the full size. With fewer than ``p`` identities in total every
    batch holds all of them (``num_identities * k`` indices).

    Deterministic for ``(seed, epoch)``; call ``set_epoch`` before each epoch.
    Usable as ``DataLoader(batch_sampler=...)`` or iterated directly.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, p: int, k: int, seed: int = 0) -> None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) == 0:
            raise ValueError("PKSampler needs at least one label")
        if p < 1 or k < 1:
            raise ValueError(f"PKSampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        _, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        self._members = np.split(order.astype(np.int64), bounds)  # indices of each identity
        self.p = min(p, len(self._members))
        self.k = k
        self.seed = seed
        self.epoch = 0
        self.num_images = len(labels)

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.num_images // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks: list[list[np.ndarray]] = [[] for _ in self._members]
        for _ in range(len(self)):
            if sum(bool(c) for c in chunks) < self.p:
                for ident, c in enumerate(chunks):
                    if not c:
                        c.extend(self._chunks(ident, rng))
            left = np.array([len(c) for c in chunks], dtype=np.float64)
            picked = rng.choice(len(chunks), size=self.p, replace=False, p=left / left.sum())
            batch = np.concatenate([chunks[i].pop() for i in picked])
            yield torch.from_numpy(batch)

    def _chunks(self, ident: int, rng: np.random.Generator) -> list[np.ndarray]:
        members = rng.permutation(self._members[ident])
        short = -len(members) % self.k
        if short:
            members = np.concatenate([members, rng.choice(self._members[ident], size=short)])
        return list(members.reshape(-1, self.k))


__all__ = ["PKSampler"]
