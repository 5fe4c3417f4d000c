from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from handreid.config import TrainConfig
from handreid.errors import ConfigError
from handreid.models import PromptComposer, build_model

ASPECTS = ("dorsal right", "palmar left")


def _cfg(model: str = "tiny-vit", **changes) -> TrainConfig:
    base = dict(
        model=model,
        pretrained="none",
        image_size=(64, 64),
        batch_size=8,
        num_instances=2,
        aspects=list(ASPECTS),
        transformer_layers=2,
        bnneck_dim=32,
        lr_clip_visual=1e-5,
    )
    base.update(changes)
    return TrainConfig.from_dict(base)


def _build(model="tiny-vit", seed=0, num_classes=5, **changes):
    torch.manual_seed(seed)
    cfg = _cfg(model, **changes)
    return build_model(cfg, num_classes, ASPECTS), cfg


def _batch(size=(64, 64), n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, *size, generator=g)
    return images, torch.tensor([0, 1] * (n // 2)), torch.arange(n) % 5


@pytest.mark.parametrize("model", ["tiny-vit", "tiny-rn"])
@pytest.mark.parametrize("size", [(64, 64), (96, 64), (64, 48)])
def test_forward_backward_shapes(model, size):
    net, _ = _build(model, image_size=list(size))
    images, aspects, labels = _batch(size)
    out = net(images, aspects, labels)
    expected = {
        "logits": (4, 5),
        "feat": (4, 32),
        "feat_bn": (4, 32),
        "fused": (4, 64),
        "image_embed": (4, 64),
        "text_embed": (4, 64),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    (
        F.cross_entropy(out["logits"], labels)
        + out["feat"].square().mean()
        + out["text_embed"].sum()
    ).backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
    net.eval()
    feats = net.extract(images, aspects)
    assert feats.shape == (4, 64)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("model", ["tiny-vit", "tiny-rn"])
def test_id_loss_alone_trains_the_inversion_network(model):
    net, _ = _build(model, classifier="linear", bnneck_reduction=False)
    images, aspects, labels = _batch()
    F.cross_entropy(net(images, aspects, labels)["logits"], labels).backward()
    for p in net.inversion.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.composer.text.parameters())


def test_arcface_margin_applies_only_with_labels():
    net, cfg = _build(classifier="arcface", arcface_margin=0.5)
    net.eval()
    images, aspects, labels = _batch()
    with torch.no_grad():
        plain = net(images, aspects)["logits"]
        margin = net(images, aspects, labels)["logits"]
    target = F.one_hot(labels, 5).bool()
    assert torch.equal(plain[~target], margin[~target])
    assert bool((margin[target] < plain[target]).all())
    assert float(plain.abs().max()) <= cfg.arcface_scale + 1e-4


def _fused(net, images, aspects):
    with torch.no_grad():
        return net(images, aspects)["fused"]


def test_template_aspect_pseudo_word_and_patches_change_the_feature():
    net, _ = _build()
    net.eval()
    images, aspects, _ = _batch()
    base = _fused(net, images, aspects)

    assert not torch.allclose(_fused(net, images, 1 - aspects), base, atol=1e-4)

    original = net.composer
    net.composer = PromptComposer(
        original.text, "tiny-vit", "A {} hand seen from the {aspect}.", ASPECTS
    )
    assert not torch.allclose(_fused(net, images, aspects), base, atol=1e-4)
    net.composer = original

    hook = net.inversion.register_forward_hook(lambda m, i, out: out + torch.randn_like(out))
    assert not torch.allclose(_fused(net, images, aspects), base, atol=1e-4)
    hook.remove()

    def shift_patches(module, inputs, out):
        pooled, tokens = out
        return pooled, tokens + torch.randn_like(tokens)

    hook = net.image.register_forward_hook(shift_patches)
    assert not torch.allclose(_fused(net, images, aspects), base, atol=1e-4)
    hook.remove()
    torch.testing.assert_close(_fused(net, images, aspects), base)


def test_simplified_inference_uses_the_cached_prompt():
    net, _ = _build(inference_prompt="simplified")
    net.eval()
    images, aspects, _ = _batch()
    first = net.extract(images, aspects)
    cached = net.composer.encode_simplified()
    assert net.composer.encode_simplified() is cached
    with torch.no_grad():
        for p in net.inversion.parameters():
            p.add_(1.0)  # the pseudo-word plays no part in simplified inference
    torch.testing.assert_close(net.extract(images, aspects), first)
    assert net.composer.encode_simplified() is cached

    composed, _ = _build(inference_prompt="composed")
    composed.eval()
    before = composed.extract(images, aspects)
    with torch.no_grad():
        for p in composed.inversion.parameters():
            p.add_(1.0)
    assert not torch.allclose(composed.extract(images, aspects), before, atol=1e-4)


def _trainable_ids(net) -> set[int]:
    return {id(p) for p in net.parameters() if p.requires_grad}


@pytest.mark.parametrize(("model", "unfreeze"), [("tiny-vit", 1), ("tiny-vit", 0), ("tiny-rn", 2)])
def test_param_groups_cover_each_trainable_parameter_once(model, unfreeze):
    net, cfg = _build(model, unfreeze_blocks=unfreeze, weight_decay=0.05, lr_modules=3e-4)
    groups = net.param_groups(cfg)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == _trainable_ids(net)
    assert {g["name"] for g in groups} == {"clip_visual", "modules"}
    for g in groups:
        assert g["lr"] == (cfg.lr_clip_visual if g["name"] == "clip_visual" else cfg.lr_modules)
        assert all(p.requires_grad for p in g["params"])
    names = {id(p): n for n, p in net.named_parameters()}
    for g in groups:
        for p in g["params"]:
            plain = p.ndim <= 1 or names[id(p)].endswith("positional_embedding")
            assert g["weight_decay"] == (0.0 if plain else 0.05), names[id(p)]
    visual = {id(p) for g in groups if g["name"] == "clip_visual" for p in g["params"]}
    assert visual == {id(p) for p in net.image.parameters() if p.requires_grad}
    modules = {id(p) for g in groups if g["name"] == "modules" for p in g["params"]}
    for part in (net.inversion, net.fusion, net.neck.reduce, net.classifier):
        assert {id(p) for p in part.parameters()} <= modules
    assert id(net.neck.bn.weight) in modules and id(net.neck.bn.bias) not in modules
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {id(p) for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert (
        id(net.fusion.cross.norm1.weight) in no_decay and id(net.inversion.mlp[0].bias) in no_decay
    )
    assert id(net.inversion.mlp[0].weight) in decay
    assert not any(p.requires_grad for p in net.composer.text.parameters())
    # the optimizer accepts them as they are
    torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr_modules)


def test_unfreeze_blocks_and_frozen_tower():
    net, cfg = _build(unfreeze_blocks=1)
    trainable = {n for n, p in net.image.named_parameters() if p.requires_grad}
    assert any(".resblocks.1." in n for n in trainable)
    assert not any(".resblocks.0." in n or "conv1" in n for n in trainable)
    frozen, cfg = _build(lr_clip_visual=0.0)
    assert not any(p.requires_grad for p in frozen.image.parameters())
    assert [g for g in frozen.param_groups(cfg) if g["name"] == "clip_visual" and g["params"]] == []


def test_state_dict_round_trip_reproduces_outputs():
    first, _ = _build("tiny-rn", seed=0)
    second, _ = _build("tiny-rn", seed=7)
    images, aspects, _ = _batch()
    first.eval()
    second.load_state_dict(first.state_dict())
    second.eval()
    with torch.no_grad():
        a, b = first(images, aspects), second(images, aspects)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(first.extract(images, aspects), second.extract(images, aspects))


def test_resnet_tower_is_channels_last():
    net, _ = _build("tiny-rn")
    assert net.image.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    net.to_device("cpu")
    assert net.image.visual.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)


def test_aspect_free_data():
    torch.manual_seed(0)
    net = build_model(_cfg(), 3, ("",))
    assert net.composer.prompts == ["A photo of a * hand."]
    images, _, labels = _batch()
    out = net(images, torch.zeros(4, dtype=torch.long), labels % 3)
    assert out["logits"].shape == (4, 3)


def test_bad_configs_are_config_errors():
    with pytest.raises(ConfigError, match="bnneck_dim"):
        _cfg(bnneck_dim=0)
    with pytest.raises(ConfigError, match="arcface_margin"):
        _cfg(arcface_margin=1.6)
    with pytest.raises(ConfigError, match="unknown field"):
        _cfg(prompt_template="A photo of {who}'s hand.")
