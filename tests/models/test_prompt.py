from __future__ import annotations

import open_clip
import pytest
import torch

from handreid.errors import ConfigError
from handreid.models import InversionNetwork, PromptComposer, TextEncoder, load_clip, render_prompt

TEMPLATE = "A photo of a {} {aspect} hand."
ASPECTS = ("dorsal right", "palmar left")


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(load_clip("tiny-vit", "none", (64, 64))).eval()


@pytest.mark.parametrize(
    ("template", "aspect", "expected"),
    [
        (TEMPLATE, "dorsal right", "A photo of a X dorsal right hand."),
        (TEMPLATE, "", "A photo of a X hand."),
        ("A photo of a {aspect} hand.", "palmar left", "A photo of a X palmar left hand."),
        ("A photo of a hand.", "dorsal left", "A photo of a hand X."),
        ("a hand {aspect}.", "", "a hand X."),
        ("{} hand", "x", "X hand"),
        ("Hand of {}, {aspect} view", "dorsal right", "Hand of X, dorsal right view"),
    ],
)
def test_render_prompt(template, aspect, expected):
    assert render_prompt(template, aspect, "X") == expected


def test_render_prompt_without_placeholder_word():
    assert render_prompt(TEMPLATE, "dorsal right", "") == "A photo of a dorsal right hand."
    assert render_prompt("A photo of a hand.", "", "") == "A photo of a hand."


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("A photo of {person}'s {aspect} hand.", "unknown field {person}"),
        ("A {} photo of a {} hand.", "at most once"),
        ("A photo of a {0} hand.", "unknown field {0}"),
        ("A photo of a {aspect hand.", "prompt_template"),
    ],
)
def test_bad_templates_are_config_errors(text, template, match):
    with pytest.raises(ConfigError, match=match):
        PromptComposer(text, "tiny-vit", template, ASPECTS)


def test_placeholder_glued_to_a_word_is_rejected(text):
    with pytest.raises(ConfigError, match="word of its own"):
        PromptComposer(text, "tiny-vit", "A photo of a {}hand.", ASPECTS)


def test_token_ids_are_prepared_once_and_truncated(text):
    composer = PromptComposer(text, "tiny-vit", TEMPLATE, ASPECTS)
    full = open_clip.get_tokenizer("tiny-vit")([render_prompt(TEMPLATE, a, "x") for a in ASPECTS])
    length = composer.ids.shape[1]
    assert length == int((full != 0).sum(dim=1).max()) < 77
    assert torch.equal(composer.ids, full[:, :length])
    assert "ids" in dict(composer.named_buffers()) and "ids" not in composer.state_dict()
    x_token = open_clip.get_tokenizer("tiny-vit")(["x"])[0, 1]
    assert bool((composer.ids[torch.arange(2), composer.placeholder_pos] == x_token).all())
    assert composer.prompts == [
        "A photo of a * dorsal right hand.",
        "A photo of a * palmar left hand.",
    ]


def test_truncated_sequence_gives_the_full_length_states(text):
    composer = PromptComposer(text, "tiny-vit", TEMPLATE, ASPECTS)
    pseudo = torch.randn(2, text.width)
    aspect_idx = torch.tensor([0, 1])
    with torch.no_grad():
        out = composer(pseudo, aspect_idx)
        full = torch.zeros(2, 77, dtype=torch.long)
        full[:, : composer.ids.shape[1]] = composer.ids
        embeds = text.embed(full)
        embeds[torch.arange(2), composer.placeholder_pos] = pseudo
        states, pooled = text(embeds, full)
    valid = ~out.pad_mask
    torch.testing.assert_close(
        out.states[valid], states[:, : composer.ids.shape[1]][valid], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(out.pooled, pooled, rtol=0, atol=1e-5)
    assert out.pad_mask.dtype == torch.bool and out.pad_mask.shape == (2, composer.ids.shape[1])
    assert bool(valid[:, 0].all()) and int(valid[1].sum()) == int((composer.ids[1] != 0).sum())


def test_pseudo_word_receives_gradient_through_the_frozen_text_encoder(text):
    composer = PromptComposer(text, "tiny-vit", TEMPLATE, ASPECTS)
    pseudo = torch.randn(3, text.width, requires_grad=True)
    out = composer(pseudo, torch.tensor([0, 1, 0]))
    (out.states.sum() + out.pooled.sum()).backward()
    assert pseudo.grad is not None and bool((pseudo.grad.abs().sum(dim=1) > 0).all())
    assert all(p.grad is None for p in text.parameters())


def test_pseudo_word_and_aspect_change_the_states(text):
    composer = PromptComposer(text, "tiny-vit", TEMPLATE, ASPECTS)
    pseudo = torch.randn(1, text.width)
    with torch.no_grad():
        base = composer(pseudo, torch.tensor([0])).pooled
        # a random change: a constant shift of every channel is removed by the LayerNorms
        other_word = composer(pseudo + torch.randn_like(pseudo), torch.tensor([0])).pooled
        other_aspect = composer(pseudo, torch.tensor([1])).pooled
    assert not torch.allclose(base, other_word)
    assert not torch.allclose(base, other_aspect)


def test_simplified_prompt_is_cached_per_aspect(text):
    composer = PromptComposer(text, "tiny-vit", TEMPLATE, ASPECTS)
    first = composer.encode_simplified()
    second = composer.encode_simplified()
    assert first is second and not first.states.requires_grad
    ids = open_clip.get_tokenizer("tiny-vit")(
        ["A photo of a dorsal right hand.", "A photo of a palmar left hand."]
    )
    with torch.no_grad():
        _, pooled = text(text.embed(ids), ids)
    torch.testing.assert_close(first.pooled, pooled, rtol=0, atol=1e-5)
    picked = composer.simplified(torch.tensor([1, 0, 1]))
    assert torch.equal(picked.pooled, first.pooled[[1, 0, 1]])
    composer.load_state_dict(composer.state_dict())
    assert composer.encode_simplified() is not first  # reloaded weights invalidate the cache


def test_aspect_free_dataset(text):
    composer = PromptComposer(text, "tiny-vit", TEMPLATE, ("",))
    assert composer.prompts == ["A photo of a * hand."]
    out = composer(torch.randn(2, text.width), torch.zeros(2, dtype=torch.long))
    assert out.states.shape == (2, composer.ids.shape[1], 64)


def test_inversion_network_maps_embedding_to_token_width():
    net = InversionNetwork(64, 48)
    out = net(torch.randn(5, 64))
    assert out.shape == (5, 48)
    assert isinstance(net.mlp[-1], torch.nn.BatchNorm1d)
    assert [m.out_features for m in net.mlp if isinstance(m, torch.nn.Linear)] == [512, 512, 48]
