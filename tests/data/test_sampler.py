from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from handreid.data.sampler import PKSampler

# 10 identities with 1 to 10 images each (label i has i + 1 images).
LABELS = np.repeat(np.arange(10), np.arange(1, 11))


def test_batches_are_p_identities_times_k():
    sampler = PKSampler(LABELS, p=4, k=3, seed=0)
    batches = list(sampler)
    assert len(sampler) == len(LABELS) // 12 == len(batches)
    for batch in batches:
        assert batch.dtype == torch.long and batch.shape == (12,)
        labels = LABELS[batch.numpy()]
        counts = Counter(labels.tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}
        # k images of one identity are consecutive
        assert all(len(set(labels[i : i + 3])) == 1 for i in range(0, 12, 3))


def test_identity_with_fewer_than_k_images_is_drawn_with_replacement():
    labels = np.array([0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    seen_single = False
    for epoch in range(20):
        sampler = PKSampler(labels, p=2, k=3, seed=1)
        sampler.set_epoch(epoch)
        for batch in sampler:
            ids = labels[batch.numpy()]
            if 0 in ids:
                seen_single = True
                assert batch.numpy()[ids == 0].tolist() == [0, 0, 0]
    assert seen_single


def test_deterministic_for_seed_and_epoch():
    def run(seed, epoch):
        sampler = PKSampler(LABELS, p=3, k=2, seed=seed)
        sampler.set_epoch(epoch)
        return torch.cat(list(sampler))

    assert torch.equal(run(0, 0), run(0, 0))
    assert not torch.equal(run(0, 0), run(0, 1))
    assert not torch.equal(run(0, 0), run(1, 0))


def test_fewer_identities_than_p_uses_all():
    labels = [5, 5, 5, 9, 9, 9, 9]
    sampler = PKSampler(labels, p=8, k=2)
    batches = list(sampler)
    assert len(sampler) == 1 == len(batches)
    assert batches[0].shape == (4,)
    assert sorted(Counter(np.array(labels)[batches[0].numpy()].tolist()).values()) == [2, 2]


def test_epoch_visits_most_images():
    labels = np.repeat(np.arange(16), 8)  # 128 images, 16 ids
    sampler = PKSampler(labels, p=4, k=4, seed=0)
    visited = set(torch.cat(list(sampler)).tolist())
    assert len(sampler) == 8
    assert len(visited) == 128  # chunks of k cover every image exactly once here
