from __future__ import annotations

import pytest
import torch

from handreid.errors import ConfigError
from handreid.models.fusion import MultimodalFusion, masked_mean


def _inputs(batch=2, length=6, patches=5, dim=32):
    torch.manual_seed(0)
    states = torch.randn(batch, length, dim)
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[0, 4:] = True  # sample 0 has 4 valid tokens, sample 1 all 6
    return states, pad, torch.randn(batch, patches, dim)


def test_masked_mean_ignores_padding():
    x = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    pad = torch.tensor([[False, False, True, True]])
    torch.testing.assert_close(masked_mean(x, pad), x[:, :2].mean(dim=1))


@pytest.mark.parametrize("layers", [1, 3])
def test_shapes_and_block_counts(layers):
    fusion = MultimodalFusion(32, layers, dropout=0.1, heads=4)
    states, pad, tokens = _inputs()
    assert fusion(states, pad, tokens).shape == (2, 32)
    assert len(fusion.blocks) == layers - 1


@pytest.mark.parametrize("layers", [1, 2])
def test_every_input_moves_the_output_but_padding_does_not(layers):
    fusion = MultimodalFusion(32, layers, dropout=0.1, heads=4).eval()
    states, pad, tokens = _inputs()
    with torch.no_grad():
        base = fusion(states, pad, tokens)
        padded = states.clone()
        padded[0, 4:] += 5.0
        torch.testing.assert_close(fusion(padded, pad, tokens)[0], base[0], rtol=0, atol=1e-6)
        changed_text = states.clone()
        changed_text[:, 1] += torch.randn(2, 32)
        assert not torch.allclose(fusion(changed_text, pad, tokens), base, atol=1e-4)
        changed_image = tokens.clone()
        changed_image[:, 2] += torch.randn(2, 32)
        moved = fusion(states, pad, changed_image)
        assert bool(((moved - base).abs().amax(dim=1) > 1e-4).all())


def test_dropout_runs_in_training_only():
    fusion = MultimodalFusion(32, 2, dropout=0.5, heads=4)
    states, pad, tokens = _inputs()
    fusion.train()
    assert not torch.allclose(fusion(states, pad, tokens), fusion(states, pad, tokens))
    fusion.eval()
    assert torch.equal(fusion(states, pad, tokens), fusion(states, pad, tokens))


def test_gradients_reach_both_inputs():
    fusion = MultimodalFusion(32, 2, dropout=0.0, heads=4)
    states, pad, tokens = _inputs()
    states.requires_grad_(True)
    tokens.requires_grad_(True)
    fusion(states, pad, tokens).square().sum().backward()
    assert states.grad[:, 0].abs().sum() > 0 and tokens.grad.abs().sum() > 0
    assert torch.equal(states.grad[0, 4:], torch.zeros_like(states.grad[0, 4:]))


def test_zero_layers_is_a_config_error():
    with pytest.raises(ConfigError, match="transformer_layers=0"):
        MultimodalFusion(32, 0, dropout=0.0)
