from __future__ import annotations

import math

import pytest
import torch

from handreid.errors import ConfigError
from handreid.models.heads import ArcFace, BNNeck, LinearClassifier, build_classifier


def _reference_arcface(x, weight, labels, s, m):
    """Per-element loop: s*cos(theta+m) on the target (cos - m*sin(m) past pi), s*cos elsewhere."""
    out = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        xi = x[i].double() / x[i].double().norm()
        for j in range(weight.shape[0]):
            wj = weight[j].double() / weight[j].double().norm()
            cos = float(torch.dot(xi, wj).clamp(-1, 1))
            if labels is not None and j == int(labels[i]):
                theta = math.acos(cos)
                value = math.cos(theta + m) if theta + m < math.pi else cos - m * math.sin(m)
            else:
                value = cos
            out[i, j] = s * value
    return out


@pytest.mark.parametrize("margin", [0.0, 0.35, 1.2])
def test_arcface_matches_loop_reference(margin):
    torch.manual_seed(0)
    head = ArcFace(16, 7, scale=30.0, margin=margin)
    x = torch.randn(9, 16)
    labels = torch.randint(0, 7, (9,))
    expected = _reference_arcface(x, head.weight.detach(), labels, 30.0, margin)
    torch.testing.assert_close(head(x, labels).double(), expected, rtol=0, atol=1e-3)
    plain = _reference_arcface(x, head.weight.detach(), None, 30.0, margin)
    torch.testing.assert_close(head(x).double(), plain, rtol=0, atol=1e-3)


def test_arcface_near_theta_zero_and_pi_is_finite():
    torch.manual_seed(1)
    head = ArcFace(8, 3, scale=16.0, margin=0.5)
    w = head.weight.detach()
    x = torch.stack([w[0], -w[1], w[2] * 2.0]).clone().requires_grad_(True)  # theta = 0, pi, 0
    labels = torch.tensor([0, 1, 2])
    logits = head(x, labels)
    expected = _reference_arcface(x.detach(), w, labels, 16.0, 0.5)
    # fp32 resolves cos only to ~1e-7 near +-1, i.e. theta to ~3e-4 rad: hence the tolerance.
    torch.testing.assert_close(logits.double(), expected, rtol=0, atol=1e-2)
    torch.testing.assert_close(logits[0, 0].item(), 16.0 * math.cos(0.5), rtol=0, atol=1e-2)
    torch.testing.assert_close(
        logits[1, 1].item(), 16.0 * (-1 - 0.5 * math.sin(0.5)), rtol=0, atol=1e-2
    )
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("margin", [-0.1, math.pi / 2, 2.0, float("nan")])
def test_arcface_margin_out_of_range(margin):
    with pytest.raises(ConfigError, match="arcface_margin"):
        ArcFace(8, 3, scale=30.0, margin=margin)


def test_arcface_scale_must_be_positive():
    with pytest.raises(ConfigError, match="arcface_scale"):
        ArcFace(8, 3, scale=0.0, margin=0.3)


@pytest.mark.parametrize("dim", [0, -4])
def test_bnneck_dim_must_be_positive(dim):
    with pytest.raises(ConfigError, match=f"bnneck_dim={dim}"):
        BNNeck(64, True, dim)


def test_bnneck_reduction_and_frozen_bias():
    neck = BNNeck(64, True, 16)
    feat, feat_bn = neck(torch.randn(4, 64))
    assert feat.shape == feat_bn.shape == (4, 16)
    assert not neck.bn.bias.requires_grad and neck.bn.weight.requires_grad
    plain = BNNeck(64, False, 16)
    assert plain.out_dim == 64 and plain(torch.randn(4, 64))[0].shape == (4, 64)


def test_build_classifier_kinds():
    linear = build_classifier("linear", 16, 5, 30.0, 0.3)
    assert isinstance(linear, LinearClassifier) and linear.fc.bias is None
    assert linear(torch.randn(2, 16), torch.tensor([0, 1])).shape == (2, 5)
    assert isinstance(build_classifier("arcface", 16, 5, 30.0, 0.3), ArcFace)
    with pytest.raises(ConfigError, match="classifier='cosface'"):
        build_classifier("cosface", 16, 5, 30.0, 0.3)
    with pytest.raises(ConfigError, match="num_classes=0"):
        build_classifier("linear", 16, 0, 30.0, 0.3)
