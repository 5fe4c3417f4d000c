"""Re-identification metrics: cosine ranking, CMC (Rank-k) and mAP, averaged over splits.

Ranking rule, used everywhere (and by the reference implementation in the tests): for each
query the gallery is sorted by *descending* similarity with a *stable* sort, so equal
similarities keep gallery order (the earlier gallery item ranks first).

Everything runs on the similarity matrix's device with no Python loop over queries; the only
host transfer is the final handful of scalars. A NaN or infinite similarity is refused
(``NonFiniteError``): a stable sort puts NaN rows in gallery order, which scores like a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

AP_KINDS = ("standard", "trapezoid")
METRICS = ("rank1", "rank5", "rank10", "mAP")
_RANKS = (1, 5, 10)


class NonFiniteError(ValueError):
    """Features or similarities that are NaN or infinite (a diverged or broken model)."""


def check_finite(x: Tensor, what: str) -> None:
    """Raise ``NonFiniteError`` naming ``what`` when any value of ``x`` is NaN or infinite.

    x: any shape. One host sync."""
    bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
    if bad:
        raise NonFiniteError(_not_finite(what, bad, x.numel()))


def _not_finite(what: str, bad: int, total: int) -> str:
    return (
        f"{what}: {bad} of {total} values are not finite (NaN or inf), so any ranking of "
        "them is arbitrary"
    )


def l2_normalize(x: Tensor, dim: int = -1) -> Tensor:
    """Unit-length rows in float32, safe for very large or tiny values.

    x: (..., D) any float dtype -> (..., D) float32. Dividing by the largest magnitude first
    keeps the squared norm from overflowing (1e20 would give inf and an all-zero result).
    """
    x = x.float()
    scale = x.detach().abs().amax(dim=dim, keepdim=True).clamp_min(1e-30)
    return F.normalize(x / scale, dim=dim)


def cosine_similarity(query_feats: Tensor, gallery_feats: Tensor) -> Tensor:
    """Cosine similarity of every query to every gallery item.

    query_feats: (Q, D), gallery_feats: (G, D), any float dtype -> (Q, G) float32.
    Autocast is switched off so half-precision inputs are compared in float32.
    """
    if query_feats.dim() != 2 or gallery_feats.dim() != 2:
        raise ValueError(
            f"expected 2-D features, got query {tuple(query_feats.shape)} and "
            f"gallery {tuple(gallery_feats.shape)}"
        )
    if query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(
            f"feature widths differ: query has {query_feats.shape[1]}, "
            f"gallery has {gallery_feats.shape[1]}"
        )
    with torch.autocast(device_type=query_feats.device.type, enabled=False):
        return l2_normalize(query_feats) @ l2_normalize(gallery_feats).T


def evaluate_ranking(
    similarity: Tensor,
    query_ids: Tensor | Sequence[int],
    gallery_ids: Tensor | Sequence[int],
    ap: str = "standard",
    max_rank: int = 10,
    chunk_size: int | None = None,
    per_identity: bool = False,
) -> dict:
    """Rank-1/5/10, CMC and mAP of a query x gallery similarity matrix (higher = more similar).

    similarity: (Q, G); query_ids: (Q,) integer identities; gallery_ids: (G,).
    Ties: stable sort by descending similarity, so the earlier gallery item ranks first.
    ap: "standard" = non-interpolated AP, the mean of the precision at each true match;
        "trapezoid" = the Market-1501 ``compute_mAP`` variant used by MBA-Net and
        CLIP-HandID: with n true matches, the i-th (0-based) at 0-based rank r adds
        ``(1/n) * (p_before + p_at) / 2`` where ``p_at = (i+1)/(r+1)`` and
        ``p_before = i/r`` (the precision one rank earlier), or 1.0 when r == 0.
    max_rank: length of the returned ``cmc`` curve (cmc[k-1] = Rank-k).
    chunk_size: process this many queries at a time to bound memory (None = all at once).

    per_identity: also return ``identity_ap``, a dict ``{query id: (sum of AP, queries)}``
        over the evaluated queries, from which mAP over any subset of identities (e.g. a
        bootstrap resample) is ``sum(sums) / sum(queries)``.

    Queries with no true match in the gallery are left out of every metric and counted in
    ``num_excluded``. Returns floats in [0, 1]: rank1, rank5, rank10, mAP, cmc (list), and
    ints num_queries (evaluated) and num_excluded. Raises ValueError for mismatched shapes,
    an unknown ``ap``, or when no query has a match, and its subclass ``NonFiniteError`` when
    a similarity is NaN or infinite.
    """
    if ap not in AP_KINDS:
        raise ValueError(f"ap={ap!r} is not allowed; choose one of {list(AP_KINDS)}")
    if max_rank < 1:
        raise ValueError(f"max_rank={max_rank} is out of range; it must be at least 1")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is out of range; it must be at least 1")
    query_ids, gallery_ids = _check_shapes(similarity, query_ids, gallery_ids)

    num_q = similarity.shape[0]
    step = chunk_size or max(num_q, 1)
    width = max(max_rank, _RANKS[-1])
    totals = torch.zeros(3 + width, dtype=torch.float64, device=similarity.device)
    per_query = []
    for start in range(0, num_q, step):  # a few chunks, not a loop over queries
        stop = start + step
        sums, ap_q, matched = _chunk_sums(
            similarity[start:stop], query_ids[start:stop], gallery_ids, ap, width
        )
        totals += sums
        per_query.append((ap_q, matched))
    num_valid, ap_sum, non_finite, *cmc_sums = totals.tolist()  # the single host sync
    if non_finite:
        raise NonFiniteError(_not_finite("similarity", int(non_finite), similarity.numel()))
    num_valid = int(num_valid)
    if num_valid == 0:
        raise ValueError(f"none of the {num_q} queries has a true match in the gallery")
    cmc = [c / num_valid for c in cmc_sums]
    out: dict = {f"rank{k}": cmc[k - 1] for k in _RANKS}
    out.update(
        mAP=ap_sum / num_valid,
        cmc=cmc[:max_rank],
        num_queries=num_valid,
        num_excluded=num_q - num_valid,
    )
    if per_identity:
        out["identity_ap"] = _identity_sums(query_ids, per_query)
    return out


def _identity_sums(query_ids: Tensor, per_query: list[tuple[Tensor, Tensor]]) -> dict:
    """{query id: (sum of AP, matched queries)} from per-chunk AP and match flags."""
    ap_q = torch.cat([a for a, _ in per_query])
    matched = torch.cat([m for _, m in per_query]).to(torch.float64)
    ids, inverse = torch.unique(query_ids, return_inverse=True)
    sums = torch.zeros(len(ids), dtype=torch.float64, device=ap_q.device)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, inverse, ap_q * matched)
    counts.index_add_(0, inverse, matched)
    return {
        int(i): (float(a), int(n))
        for i, a, n in zip(ids.tolist(), sums.tolist(), counts.tolist(), strict=True)
        if n > 0
    }


def _check_shapes(
    similarity: Tensor, query_ids: Tensor | Sequence[int], gallery_ids: Tensor | Sequence[int]
) -> tuple[Tensor, Tensor]:
    if not isinstance(similarity, Tensor) or similarity.dim() != 2:
        shape = tuple(similarity.shape) if isinstance(similarity, Tensor) else type(similarity)
        raise ValueError(f"similarity must be a 2-D (queries, gallery) tensor, got {shape}")
    device = similarity.device
    q_ids = torch.as_tensor(query_ids, device=device)
    g_ids = torch.as_tensor(gallery_ids, device=device)
    num_q, num_g = similarity.shape
    if q_ids.shape != (num_q,):
        raise ValueError(
            f"query_ids has shape {tuple(q_ids.shape)}; expected ({num_q},) for similarity {num_q}x{num_g}"
        )
    if g_ids.shape != (num_g,):
        raise ValueError(
            f"gallery_ids has shape {tuple(g_ids.shape)}; expected ({num_g},) for similarity {num_q}x{num_g}"
        )
    if num_q == 0 or num_g == 0:
        raise ValueError(
            f"similarity is {num_q}x{num_g}; need at least one query and one gallery item"
        )
    return q_ids, g_ids


def _chunk_sums(
    sim: Tensor, q_ids: Tensor, g_ids: Tensor, ap: str, width: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Sums over one chunk of queries, as one float64 tensor on the device, plus per query AP.

    sim: (q, G), q_ids: (q,), g_ids: (G,) -> ((3 + width,) holding
    [queries with a match, sum of their AP, non-finite similarities,
    queries matched within rank 1 .. width],
    (q,) float64 AP (0 without a match), (q,) bool has a match).
    Queries without a match contribute zeros everywhere, so no boolean indexing (which
    would sync with the host) is needed.
    """
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices  # (q, G)
    matches = g_ids[order] == q_ids[:, None]  # (q, G) bool, in ranked order
    num_pos = matches.sum(dim=1)  # (q,)

    hits = matches.cumsum(dim=1)  # (q, G) true matches up to and including each rank
    ranks = torch.arange(1, sim.shape[1] + 1, device=sim.device, dtype=torch.float64)  # 1-based
    precision = hits / ranks  # (q, G) float64
    if ap == "standard":
        gain = precision
    else:
        # precision one rank before each match: (hits - 1) / (rank - 1), or 1.0 at the top
        before = (hits - 1) / (ranks - 1).clamp_min(1)
        before[:, 0] = 1.0
        gain = (before + precision) / 2
    ap_per_query = (gain * matches).sum(dim=1) / num_pos.clamp_min(1)  # (q,), 0 without a match

    seen = min(width, sim.shape[1])
    cmc = (hits[:, :seen] > 0).sum(dim=0, dtype=torch.float64)  # (seen,)
    if seen < width:  # past the end of a short gallery every matched query stays matched
        cmc = torch.cat([cmc, cmc[-1:].expand(width - seen)])
    head = torch.stack(
        [
            (num_pos > 0).sum(dtype=torch.float64),
            ap_per_query.sum(),
            (~torch.isfinite(sim)).sum(dtype=torch.float64),
        ]
    )
    return torch.cat([head, cmc]), ap_per_query, num_pos > 0


def average_splits(results: Sequence[Mapping[str, float]]) -> dict:
    """Mean and population standard deviation of each metric over repeated splits.

    results: one ``evaluate_ranking`` dict per split. Returns rank1, rank1_std, rank5,
    rank5_std, rank10, rank10_std, mAP, mAP_std and num_splits.
    """
    if not results:
        raise ValueError("average_splits needs at least one split result")
    out: dict = {}
    for key in METRICS:
        missing = [i for i, r in enumerate(results) if key not in r]
        if missing:
            raise ValueError(f"split result {missing[0]} has no {key!r}")
        values = [float(r[key]) for r in results]
        mean = sum(values) / len(values)
        out[key] = mean
        out[f"{key}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    out["num_splits"] = len(results)
    return out


__all__ = [
    "AP_KINDS",
    "METRICS",
    "NonFiniteError",
    "average_splits",
    "check_finite",
    "cosine_similarity",
    "evaluate_ranking",
    "l2_normalize",
]
