from __future__ import annotations

import math

import pytest
import torch

from handreid.config import TrainConfig
from handreid.errors import ConfigError
from handreid.losses import (
    LossComputer,
    batch_hard_triplet,
    cross_entropy,
    supcon_weight,
    symmetric_supcon,
)


# ---- straightforward loop references (float64) -------------------------------------------
def _triplet_reference(feats: torch.Tensor, labels: list[int], margin: float) -> float:
    x = feats.double()
    losses = []
    for a in range(len(labels)):
        pos = [
            (x[a] - x[p]).norm().item()
            for p in range(len(labels))
            if p != a and labels[p] == labels[a]
        ]
        neg = [(x[a] - x[n]).norm().item() for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(max(0.0, max(pos) - min(neg) + margin))
    return sum(losses) / len(losses) if losses else 0.0


def _supcon_reference(
    img: torch.Tensor, txt: torch.Tensor, labels: list[int], temperature: float
) -> float:
    img = img.double() / img.double().norm(dim=1, keepdim=True)
    txt = txt.double() / txt.double().norm(dim=1, keepdim=True)
    n = len(labels)

    def one_direction(a: torch.Tensor, b: torch.Tensor) -> float:
        total = 0.0
        for i in range(n):
            logits = [float(a[i] @ b[j]) / temperature for j in range(n)]
            log_z = math.log(sum(math.exp(v) for v in logits))
            positives = [j for j in range(n) if labels[j] == labels[i]]
            total += -sum(logits[p] - log_z for p in positives) / len(positives)
        return total / n

    return (one_direction(img, txt) + one_direction(txt, img)) / 2


def _batch(seed: int, b: int = 12, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (b,), generator=g)
    return torch.randn(b, d, generator=g), labels, g


# ---- triplet -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("margin", [0.0, 0.3, 5.0])
def test_triplet_matches_loop_reference(seed, margin):
    feats, labels, _ = _batch(seed)
    labels[0] = 99  # a singleton: no positive, so anchor 0 is left out of the mean
    got = batch_hard_triplet(feats, labels, margin)
    assert got.item() == pytest.approx(
        _triplet_reference(feats, labels.tolist(), margin), rel=1e-5, abs=1e-6
    )


def test_triplet_without_valid_anchor_is_zero_and_keeps_graph():
    feats = torch.randn(4, 3, requires_grad=True)
    for labels in (torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 3])):  # no neg / no pos
        loss = batch_hard_triplet(feats, labels, 0.3)
        assert loss.item() == 0.0
        assert loss.requires_grad
        loss.backward()
        assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_triplet_gradient_finite_with_duplicate_features():
    # identical rows give zero distances, where a plain sqrt has an infinite derivative;
    # the two identities are close (d_an << margin) so the hinge is active and grads flow
    # (dyadic values, so the squared distances are exactly 0, not rounding noise)
    base = torch.tensor([[0.5, 0.25, 0.0, 0.0], [0.5, 0.25, 0.125, 0.0]])
    feats = torch.cat([base, base]).requires_grad_(True)
    loss = batch_hard_triplet(feats, torch.tensor([0, 1, 0, 1]), 0.3)
    loss.backward()
    # d_ap = 0 (the duplicate), d_an = 0.125: every anchor gives 0 - 0.125 + 0.3
    assert loss.item() == pytest.approx(0.175, abs=1e-5)
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_triplet_half_precision_input_gives_float32():
    feats, labels, _ = _batch(5)
    got = batch_hard_triplet(feats.bfloat16(), labels, 0.3)
    assert got.dtype == torch.float32
    want = _triplet_reference(feats.bfloat16().float(), labels.tolist(), 0.3)
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-5)


# ---- supcon ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_supcon_matches_loop_reference(seed, temperature):
    img, labels, g = _batch(seed, d=6)
    txt = torch.randn(img.shape, generator=g)
    got = symmetric_supcon(img, txt, labels, temperature)
    want = _supcon_reference(img, txt, labels.tolist(), temperature)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_supcon_is_symmetric_in_its_two_inputs():
    img, labels, g = _batch(4, d=6)
    txt = torch.randn(img.shape, generator=g)
    a = symmetric_supcon(img, txt, labels, 0.1)
    b = symmetric_supcon(txt, img, labels, 0.1)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("scale", [1e4, 1e20])
def test_supcon_stable_at_low_temperature_and_large_embeddings(scale):
    img, labels, g = _batch(6, d=16)
    txt = torch.randn(img.shape, generator=g)
    img = (img * scale).requires_grad_(True)
    txt = (txt * scale).requires_grad_(True)
    loss = symmetric_supcon(img, txt, labels, 0.01)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    # scale does not change cosine logits, so the value equals the unit-scale one
    unit = symmetric_supcon(img.detach() / scale, txt.detach() / scale, labels, 0.01)
    assert loss.item() == pytest.approx(unit.item(), rel=1e-4)


def test_supcon_prefers_aligned_pairs():
    # images and texts near the same per-identity prototype score lower than random texts
    _, labels, g = _batch(8, d=32)
    protos = torch.randn(4, 32, generator=g)
    img = protos[labels] + 0.1 * torch.randn(len(labels), 32, generator=g)
    txt = protos[labels] + 0.1 * torch.randn(len(labels), 32, generator=g)
    aligned = symmetric_supcon(img, txt, labels, 0.1)
    unrelated = symmetric_supcon(img, torch.randn(txt.shape, generator=g), labels, 0.1)
    assert aligned.item() < unrelated.item()


# ---- cross-entropy and weights -----------------------------------------------------------
def _smoothed_ce_reference(logits: torch.Tensor, labels: list[int], eps: float) -> float:
    """Label-smoothed cross-entropy written out in float64 (Szegedy et al. 2016): the target
    puts 1 - eps + eps/C on the true class and eps/C on each of the C classes' others, and the
    loss is the mean over rows of -sum_c target_c * log_softmax(row)_c."""
    total = 0.0
    for row, y in zip(logits.double().tolist(), labels, strict=True):
        c = len(row)
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        target = [(1 - eps) * (k == y) + eps / c for k in range(c)]
        total += -sum(t * (v - log_z) for t, v in zip(target, row, strict=True))
    return total / len(labels)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_the_label_smoothing_formula(seed, eps):
    g = torch.Generator().manual_seed(seed)
    logits, labels = 4 * torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    want = _smoothed_ce_reference(logits, labels.tolist(), eps)
    assert cross_entropy(logits, labels, eps).item() == pytest.approx(want, rel=1e-5)


def test_cross_entropy_without_smoothing_is_minus_log_p_of_the_label():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 2])
    p0 = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    want = (-math.log(p0) - math.log(1 / 3)) / 2
    assert cross_entropy(logits, labels).item() == pytest.approx(want, rel=1e-6)
    half = cross_entropy(logits.to(torch.bfloat16), labels)
    assert half.dtype == torch.float32  # computed in float32 whatever the input


def test_supcon_weight_ramps():
    flat = TrainConfig(supcon_ramp="none", supcon_loss_weight=0.5, epochs=4)
    assert [supcon_weight(flat, e) for e in range(4)] == [0.5] * 4
    ramp = TrainConfig(supcon_ramp="linear", supcon_loss_weight=0.5, epochs=4)
    # 0.5 * (epoch + 1) / 4, capped at 0.5 after the last epoch
    assert [supcon_weight(ramp, e) for e in range(6)] == pytest.approx(
        [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    )
    with pytest.raises(ValueError, match="epoch=-1"):
        supcon_weight(ramp, -1)


# ---- LossComputer ------------------------------------------------------------------------
def _outputs(seed: int = 0, b: int = 8, c: int = 5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[:b]
    outs = {
        "logits": torch.randn(b, c, generator=g),
        "feat": torch.randn(b, 12, generator=g),
        "image_embed": torch.randn(b, 6, generator=g),
        "text_embed": torch.randn(b, 6, generator=g),
    }
    return {k: v.requires_grad_(True) for k, v in outs.items()}, labels


def test_loss_computer_total_is_the_weighted_sum():
    cfg = TrainConfig(
        loss_id_weight=0.7,
        label_smoothing=0.1,
        loss_tri_weight=2.0,
        triplet_margin=0.4,
        supcon_loss_weight=0.5,
        supcon_ramp="linear",
        supcon_temperature=0.05,
        epochs=10,
    )
    outs, labels = _outputs()
    total, terms = LossComputer(cfg)(outs, labels, epoch=1)
    ce = cross_entropy(outs["logits"], labels, 0.1)
    tri = batch_hard_triplet(outs["feat"], labels, 0.4)
    sup = symmetric_supcon(outs["image_embed"], outs["text_embed"], labels, 0.05)
    assert terms["supcon_w"] == pytest.approx(0.5 * 2 / 10)
    assert total.item() == pytest.approx((0.7 * ce + 2.0 * tri + 0.1 * sup).item(), rel=1e-6)
    assert terms["id"].item() == pytest.approx(ce.item())
    assert terms["tri"].item() == pytest.approx(tri.item())
    assert terms["supcon"].item() == pytest.approx(sup.item())
    assert terms["loss"].item() == pytest.approx(total.item())
    for key in ("loss", "id", "tri", "supcon"):
        assert isinstance(terms[key], torch.Tensor) and not terms[key].requires_grad
    assert isinstance(terms["supcon_w"], float)


def test_loss_computer_gradient_reaches_every_input():
    outs, labels = _outputs(1)
    total, _ = LossComputer(TrainConfig(supcon_ramp="none"))(outs, labels, epoch=0)
    total.backward()
    for key, tensor in outs.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, key


@pytest.mark.parametrize(
    ("weights", "skipped", "unused_inputs"),
    [
        ({"loss_id_weight": 0.0}, "id", ("logits",)),
        ({"loss_tri_weight": 0.0}, "tri", ("feat",)),
        ({"supcon_loss_weight": 0.0}, "supcon", ("image_embed", "text_embed")),
    ],
)
def test_zero_weight_removes_the_term(weights, skipped, unused_inputs):
    cfg = TrainConfig(**weights)
    outs, labels = _outputs(2)
    total, terms = LossComputer(cfg)(outs, labels, epoch=3)
    assert terms[skipped].item() == 0.0
    total.backward()
    for key in unused_inputs:  # the term was not computed at all: no gradient path
        assert outs[key].grad is None, key
    # and its model output may be absent entirely
    fresh, labels = _outputs(2)
    for key in unused_inputs:
        del fresh[key]
    total2, _ = LossComputer(cfg)(fresh, labels, epoch=3)
    assert total2.item() == pytest.approx(total.item())


def test_loss_computer_errors():
    with pytest.raises(ConfigError, match="all 0"):
        LossComputer(TrainConfig(loss_id_weight=0.0, loss_tri_weight=0.0, supcon_loss_weight=0.0))
    outs, labels = _outputs()
    del outs["feat"]
    with pytest.raises(KeyError, match="'feat'"):
        LossComputer(TrainConfig())(outs, labels, epoch=0)
