from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from handreid.evaluation import (
    NonFiniteError,
    average_splits,
    cosine_similarity,
    evaluate_ranking,
)


# ---- brute-force reference: one query at a time, plain Python ---------------------------
def _reference(sim: torch.Tensor, q_ids, g_ids, ap: str) -> dict:
    """Python-loop CMC/mAP with the documented tie rule (gallery order breaks ties)."""
    rows = sim.tolist()
    q_ids, g_ids = list(map(int, q_ids)), list(map(int, g_ids))
    first_hits, aps = [], []
    for row, qid in zip(rows, q_ids, strict=True):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        good = [r for r, j in enumerate(order) if g_ids[j] == qid]  # 0-based ranks of matches
        if not good:
            continue
        first_hits.append(good[0])
        total = 0.0
        for i, r in enumerate(good):
            precision = (i + 1) / (r + 1)
            if ap == "standard":
                total += precision
            else:  # Market-1501 compute_mAP
                old_precision = i / r if r != 0 else 1.0
                total += (old_precision + precision) / 2
        aps.append(total / len(good))
    n = len(aps)
    out = {f"rank{k}": sum(h < k for h in first_hits) / n for k in (1, 5, 10)}
    out.update(mAP=sum(aps) / n, num_queries=n, num_excluded=len(q_ids) - n)
    return out


def _random_case(seed: int, num_q: int = 37, num_g: int = 23, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values, so many equal similarities
        sim = torch.randint(0, 4, (num_q, num_g), generator=g).float() / 3
    else:
        sim = torch.randn(num_q, num_g, generator=g)
    g_ids = torch.randint(0, 8, (num_g,), generator=g)  # repeats: several matches per query
    q_ids = torch.randint(0, 11, (num_q,), generator=g)  # ids 8-10 never in the gallery
    return sim, q_ids, g_ids


def _assert_matches(got: dict, want: dict) -> None:
    for key in ("rank1", "rank5", "rank10", "mAP"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["num_queries"] == want["num_queries"]
    assert got["num_excluded"] == want["num_excluded"]


@pytest.mark.parametrize("ap", ["standard", "trapezoid"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_reference_on_random_data(ap, seed, ties):
    sim, q_ids, g_ids = _random_case(seed, ties=ties)
    want = _reference(sim, q_ids, g_ids, ap)
    assert want["num_excluded"] > 0  # the case really exercises exclusion
    _assert_matches(evaluate_ranking(sim, q_ids, g_ids, ap=ap), want)


@pytest.mark.parametrize("ap", ["standard", "trapezoid"])
def test_chunked_equals_unchunked(ap):
    sim, q_ids, g_ids = _random_case(7, num_q=50, num_g=30)
    whole = evaluate_ranking(sim, q_ids, g_ids, ap=ap)
    for chunk in (1, 7, 50, 1000):
        chunked = evaluate_ranking(sim, q_ids, g_ids, ap=ap, chunk_size=chunk)
        _assert_matches(chunked, whole)
        assert chunked["cmc"] == pytest.approx(whole["cmc"], abs=1e-12)


def test_hand_worked_ap_miss_hit_miss_hit():
    # Ranked gallery for the query: [miss, hit, miss, hit] (ids 0, 1, 2, 1; query id 1).
    # standard:  precision at the hits = 1/2 and 2/4  -> AP = (1/2 + 2/4) / 2 = 0.5
    # trapezoid: hit 0 at rank r=1: p_at = 1/2, p_before = 0/1 = 0   -> (0 + 1/2)/2   = 1/4
    #            hit 1 at rank r=3: p_at = 2/4, p_before = 1/3       -> (1/3 + 1/2)/2 = 5/12
    #            AP = (1/n) * (1/4 + 5/12) = (1/2) * (8/12) = 1/3
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    q_ids, g_ids = [1], [0, 1, 2, 1]
    std = evaluate_ranking(sim, q_ids, g_ids, ap="standard")
    trap = evaluate_ranking(sim, q_ids, g_ids, ap="trapezoid")
    assert std["mAP"] == pytest.approx(0.5)
    assert trap["mAP"] == pytest.approx(1 / 3)
    assert std["rank1"] == 0.0 and std["rank5"] == 1.0


def test_trapezoid_first_hit_on_top_uses_precision_one():
    # [hit, miss, hit]: hit 0 at r=0: p_before = 1.0 (rule), p_at = 1 -> 1
    #                   hit 1 at r=2: p_before = 1/2, p_at = 2/3     -> (1/2 + 2/3)/2 = 7/12
    # AP = (1 + 7/12) / 2 = 19/24; standard AP = (1 + 2/3) / 2 = 5/6
    sim = torch.tensor([[3.0, 2.0, 1.0]])
    trap = evaluate_ranking(sim, [5], [5, 4, 5], ap="trapezoid")
    std = evaluate_ranking(sim, [5], [5, 4, 5], ap="standard")
    assert trap["mAP"] == pytest.approx(19 / 24)
    assert std["mAP"] == pytest.approx(5 / 6)


def test_rank_k_on_3x6_case():
    # Gallery ids [0, 1, 2, 3, 4, 5]; similarity rows written so the true match sits at
    # rank 1 (query 0), rank 3 (query 1) and rank 6 (query 2):
    #   rank-1 = 1/3, rank-5 = 2/3 (queries 0 and 1), rank-10 = 3/3 (the gallery has 6 items)
    #   one match per query, so AP = 1/rank: mAP = (1 + 1/3 + 1/6) / 3 = 0.5
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],  # id 0 first
            [0.8, 0.5, 0.9, 0.1, 0.2, 0.3],  # id 1 after ids 2 and 0
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # id 5 last
        ]
    )
    out = evaluate_ranking(sim, [0, 1, 5], [0, 1, 2, 3, 4, 5])
    assert out["rank1"] == pytest.approx(1 / 3)
    assert out["rank5"] == pytest.approx(2 / 3)
    assert out["rank10"] == pytest.approx(1.0)
    assert out["mAP"] == pytest.approx(0.5)
    assert out["cmc"] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1])


def test_ties_are_broken_by_gallery_order():
    sim = torch.zeros(2, 3)  # every gallery item equally similar
    # query id 2: gallery order puts its match last -> AP 1/3; id 0: first -> AP 1
    out = evaluate_ranking(sim, [2, 0], [0, 1, 2])
    assert out["rank1"] == pytest.approx(0.5)
    assert out["mAP"] == pytest.approx((1 / 3 + 1) / 2)


def test_queries_without_match_are_excluded_and_counted():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.4]])
    out = evaluate_ranking(sim, [0, 1, 7, 9], [0, 1])
    assert out["num_queries"] == 2
    assert out["num_excluded"] == 2
    assert out["rank1"] == 1.0 and out["mAP"] == 1.0  # excluded rows do not drag it down


def test_no_query_with_a_match_is_an_error():
    with pytest.raises(ValueError, match="none of the 2 queries has a true match"):
        evaluate_ranking(torch.rand(2, 3), [5, 6], [0, 1, 2])


def test_accepts_lists_and_tensors_and_max_rank():
    sim, q_ids, g_ids = _random_case(3)
    a = evaluate_ranking(sim, q_ids.tolist(), g_ids.tolist(), max_rank=3)
    b = evaluate_ranking(sim, q_ids, g_ids, max_rank=20)
    _assert_matches(a, b)
    assert len(a["cmc"]) == 3 and len(b["cmc"]) == 20
    assert b["cmc"][:3] == pytest.approx(a["cmc"])
    assert all(x <= y for x, y in zip(b["cmc"], b["cmc"][1:], strict=False))  # CMC never decreases
    assert isinstance(a["mAP"], float) and isinstance(a["num_queries"], int)


def test_unknown_ap_lists_allowed_values():
    with pytest.raises(ValueError, match=r"ap='voc'.*\['standard', 'trapezoid'\]"):
        evaluate_ranking(torch.rand(2, 2), [0, 1], [0, 1], ap="voc")


@pytest.mark.parametrize(
    ("shape", "q", "g", "message"),
    [
        ((2, 3), [0, 1, 2], [0, 1, 2], "query_ids has shape"),
        ((2, 3), [0, 1], [0, 1], "gallery_ids has shape"),
        ((6,), [0], [0], "2-D"),
        ((0, 3), [], [0, 1, 2], "at least one query"),
    ],
)
def test_mismatched_shapes_are_errors(shape, q, g, message):
    with pytest.raises(ValueError, match=message):
        evaluate_ranking(torch.rand(shape), q, g)


def test_average_splits_mean_and_population_std():
    results = [
        {"rank1": 0.5, "rank5": 0.9, "rank10": 1.0, "mAP": 0.6},
        {"rank1": 0.7, "rank5": 0.9, "rank10": 1.0, "mAP": 0.8},
    ]
    out = average_splits(results)
    assert out["rank1"] == pytest.approx(0.6)
    assert out["rank1_std"] == pytest.approx(0.1)  # population: sqrt((0.01 + 0.01) / 2)
    assert out["rank5_std"] == pytest.approx(0.0)
    assert out["mAP"] == pytest.approx(0.7) and out["mAP_std"] == pytest.approx(0.1)
    assert out["num_splits"] == 2
    single = average_splits(results[:1])
    assert single["mAP"] == 0.6 and single["mAP_std"] == 0.0


def test_average_splits_rejects_empty_and_incomplete():
    with pytest.raises(ValueError, match="at least one split"):
        average_splits([])
    with pytest.raises(ValueError, match="split result 1 has no 'mAP'"):
        average_splits(
            [{"rank1": 1, "rank5": 1, "rank10": 1, "mAP": 1}, {"rank1": 1, "rank5": 1, "rank10": 1}]
        )


def test_cosine_similarity_matches_torch_and_is_float32():
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)
    want = F.cosine_similarity(q[:, None, :], gal[None, :, :], dim=-1)
    got = cosine_similarity(q, gal)
    assert got.shape == (5, 7) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-6)
    half = cosine_similarity(q.half(), gal.bfloat16())
    assert half.dtype == torch.float32
    assert torch.allclose(half, want, atol=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cosine_similarity(q, gal).dtype == torch.float32


def test_cosine_similarity_extreme_scale_and_shape_errors():
    q = torch.tensor([[3e20, 4e20]])
    gal = torch.tensor([[4e-20, 3e-20], [-3.0, -4.0]])
    got = cosine_similarity(q, gal)
    assert got[0].tolist() == pytest.approx([24 / 25, -1.0])
    assert math.isfinite(got.sum().item())
    with pytest.raises(ValueError, match="feature widths differ"):
        cosine_similarity(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        cosine_similarity(torch.rand(3), torch.rand(2, 3))


def test_per_identity_sums_pool_to_the_map():
    gen = torch.Generator().manual_seed(3)
    sim = torch.rand(40, 12, generator=gen)
    q_ids = torch.randint(0, 6, (40,), generator=gen)
    g_ids = torch.arange(12) % 6
    out = evaluate_ranking(sim, q_ids, g_ids, per_identity=True, chunk_size=7)
    sums = out["identity_ap"]
    assert set(sums) == set(q_ids.tolist())
    assert sum(n for _, n in sums.values()) == out["num_queries"]
    assert sum(a for a, _ in sums.values()) / out["num_queries"] == pytest.approx(out["mAP"])
    # one identity alone: its AP sum over its queries is the mAP of those queries only
    ident = int(q_ids[0])
    mask = q_ids == ident
    alone = evaluate_ranking(sim[mask], q_ids[mask], g_ids)
    assert sums[ident][0] / sums[ident][1] == pytest.approx(alone["mAP"])


# ---- non-finite scores: refused, never ranked ---------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_a_similarity_that_is_not_finite_is_refused(bad, chunk_size):
    sim = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    sim[3, 1] = bad
    with pytest.raises(NonFiniteError, match=r"similarity: 1 of 20 values are not finite"):
        evaluate_ranking(sim, [0, 1, 2, 3, 0], [0, 1, 2, 3], chunk_size=chunk_size)


def test_nan_features_are_refused_where_they_would_score_like_a_guess(tiny_cfg):
    from handreid.engine import evaluate_features, prepare_data

    test = prepare_data(tiny_cfg).test
    feats = torch.full((len(test.ids), 8), float("nan"))
    # the ranking a NaN row gets: gallery order, whose metrics look like a weak model's
    with pytest.raises(NonFiniteError, match=f"the features of {len(test.ids)} images: "):
        evaluate_features(feats, test)


def test_training_whose_validation_features_are_not_finite_stops_as_diverged(tiny_cfg, monkeypatch):
    from handreid import engine

    real = engine.extract_features
    calls = []

    def breaking(model, images, aspects, cfg, device):
        calls.append(1)
        feats = real(model, images, aspects, cfg, device)
        return feats * float("nan") if len(calls) == 2 else feats

    monkeypatch.setattr(engine, "extract_features", breaking)
    result = engine.fit(tiny_cfg.replace(epochs=3), device="cpu")
    assert result.status == "diverged"
    assert result.epochs_run == 2 and result.best_epoch == 0
    assert "mAP" not in result.history[-1]  # the broken epoch has no validation numbers


def test_train_that_leaves_no_finite_model_writes_nothing(tiny_cfg, tmp_path, monkeypatch, capfd):
    from handreid import engine
    from handreid.cli import main

    real = engine.LossComputer

    class Exploding(real):  # the first step turns every weight into NaN
        def __call__(self, outputs, labels, epoch):
            total, terms = super().__call__(outputs, labels, epoch)
            terms["loss"] = (total * float("nan")).detach()
            return total * float("nan"), terms

    monkeypatch.setattr(engine, "LossComputer", Exploding)
    config = tmp_path / "tiny.yaml"
    tiny_cfg.save(config)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    _, err = capfd.readouterr()
    assert exc.value.code == 2
    *log, line = err.strip().splitlines()
    assert log == ["epoch 1: loss is nan; training stopped"] and "Traceback" not in err
    assert line.startswith("error: training diverged after 1 epoch(s) and left no model")
    assert "nothing was written" in line and not (tmp_path / "run").exists()
