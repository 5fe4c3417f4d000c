from __future__ import annotations

import time

import open_clip
import pytest
import torch

from handreid.errors import ModelError
from handreid.models import ImageEncoder, TextEncoder, build_encoders, load_clip
from handreid.models.backbone import resize_image_tower, resnet_grid


def _clip(name: str, size=(64, 64), seed: int = 0):
    torch.manual_seed(seed)
    return load_clip(name, "none", size).eval()


def test_tiny_towers_are_open_clip_models():
    assert {"tiny-vit", "tiny-rn"} <= set(open_clip.list_models())
    vit = open_clip.create_model("tiny-vit")
    rn = open_clip.create_model("tiny-rn")
    assert vit.visual.transformer.width <= 64 and len(vit.visual.transformer.resblocks) == 2
    assert rn.visual.layer1[0].conv1.in_channels <= 64
    assert vit.token_embedding.num_embeddings == 49408 and vit.context_length == 77
    ids = open_clip.get_tokenizer("tiny-rn")(["a photo of a hand."])
    assert rn.encode_text(ids).shape == (1, 64)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_global_embedding_matches_open_clip_at_native_size(name):
    clip = _clip(name)
    enc = ImageEncoder(clip.visual).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        pooled, tokens = enc(x)
        expected = clip.encode_image(x)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-6)
    assert tokens.shape == (3, 64 if name == "tiny-vit" else 4, 64)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_text_encoder_matches_encode_text(name):
    clip = _clip(name)
    text = TextEncoder(clip)
    ids = open_clip.get_tokenizer(name)(["a photo of a dorsal right hand.", "hand"])
    with torch.no_grad():
        states, pooled = text(text.embed(ids), ids)
        expected = clip.encode_text(ids)
    assert states.shape == (2, 77, 64)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)
    assert all(not p.requires_grad for p in text.parameters())


@pytest.mark.parametrize(
    ("name", "size", "grid"),
    [
        ("tiny-vit", (64, 48), (8, 6)),
        ("tiny-vit", (96, 64), (12, 8)),
        ("tiny-rn", (96, 64), (3, 2)),
    ],
)
def test_non_square_sizes_set_grid_and_agree_with_open_clip(name, size, grid):
    clip = _clip(name, size)
    enc = ImageEncoder(clip.visual).eval()
    assert enc.grid == grid and enc.image_size == size
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        pooled, tokens = enc(x)
        expected = clip.visual(x)  # open_clip's own forward runs with the resized embeddings
    assert tokens.shape == (2, grid[0] * grid[1], 64)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-6)


def test_resnet_grid_follows_the_strides():
    assert resnet_grid((224, 224)) == (7, 7)
    assert resnet_grid((224, 128)) == (7, 4)
    assert resnet_grid((100, 33)) == (3, 1)


def _coordinate_grid(pos: torch.Tensor, rows: int, cols: int) -> None:
    """Channel 0 = row index, channel 1 = column index; the leading token = -1."""
    with torch.no_grad():
        pos.zero_()
        grid = pos[1:].view(rows, cols, -1)
        grid[..., 0] = torch.arange(rows, dtype=pos.dtype)[:, None]
        grid[..., 1] = torch.arange(cols, dtype=pos.dtype)[None, :]
        pos[0] = -1.0


@pytest.mark.parametrize(
    ("name", "size", "new_grid"), [("tiny-vit", (64, 32), (8, 4)), ("tiny-rn", (96, 64), (3, 2))]
)
def test_positional_embeddings_are_interpolated_in_2d(name, size, new_grid):
    clip = _clip(name)
    visual = clip.visual
    pos = (
        visual.positional_embedding if name == "tiny-vit" else visual.attnpool.positional_embedding
    )
    _coordinate_grid(pos, 8 if name == "tiny-vit" else 2, 8 if name == "tiny-vit" else 2)
    resize_image_tower(visual, size)
    pos = (
        visual.positional_embedding if name == "tiny-vit" else visual.attnpool.positional_embedding
    )
    rows, cols = new_grid
    assert pos.shape[0] == 1 + rows * cols
    assert torch.equal(pos[0], torch.full_like(pos[0], -1.0))  # class / mean token kept
    grid = pos[1:].detach().view(rows, cols, -1)
    # A 1-D resize of the flattened sequence would mix rows and columns; 2-D keeps each
    # coordinate channel a function of its own axis only.
    assert torch.allclose(grid[..., 0], grid[:, :1, 0].expand(rows, cols), atol=1e-5)
    assert torch.allclose(grid[..., 1], grid[:1, :, 1].expand(rows, cols), atol=1e-5)
    assert bool((grid[1:, 0, 0] > grid[:-1, 0, 0]).all())
    assert pos.requires_grad


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ModelError) as err:
        load_clip("resnet9000", "none", (224, 224))
    msg = str(err.value)
    assert "resnet9000" in msg
    for name in ("rn50", "vitb16", "tiny-vit", "tiny-rn", "open_clip.list_models()"):
        assert name in msg


def test_openai_weights_offline_fail_fast_with_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip hit either
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(ModelError) as err:
        load_clip("rn50", "openai", (224, 224))
    assert time.perf_counter() - start < 10
    msg = str(err.value)
    assert "RN50:openai" in msg and "HF_HUB_OFFLINE" in msg and "local checkpoint path" in msg
    assert "\n" not in msg


def test_unknown_tag_and_missing_file_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="neither a file nor an open_clip tag of RN50.*openai"):
        load_clip("rn50", "imagenet-dreams", (224, 224))
    with pytest.raises(ModelError, match="checkpoint file not found"):
        load_clip("tiny-vit", str(tmp_path / "missing.pt"), (64, 64))


@pytest.mark.parametrize("wrapped", [False, True])
def test_local_checkpoint_reproduces_outputs_exactly(tmp_path, wrapped):
    torch.manual_seed(123)
    source = open_clip.create_model("tiny-vit").eval()
    state = source.state_dict()
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": state} if wrapped else state, path)

    torch.manual_seed(999)  # the loaded weights must not depend on the seed
    image, text = build_encoders("tiny-vit", str(path), (64, 64))
    image.eval()
    x = torch.randn(2, 3, 64, 64)
    ids = open_clip.get_tokenizer("tiny-vit")(["a photo of a hand."])
    with torch.no_grad():
        assert torch.equal(image(x)[0], source.encode_image(x))
        assert torch.equal(text(text.embed(ids), ids)[1], source.encode_text(ids))


def test_checkpoint_of_another_architecture_is_a_model_error(tmp_path):
    path = tmp_path / "rn.pt"
    torch.save(open_clip.create_model("tiny-rn").state_dict(), path)
    with pytest.raises(ModelError, match=r"cannot build tiny-vit from checkpoint .*rn\.pt"):
        load_clip("tiny-vit", str(path), (64, 64))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot build tiny-vit"):
        load_clip("tiny-vit", str(garbage), (64, 64))


def _trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_unfreeze_blocks_vit():
    image, text = build_encoders("tiny-vit", "none", (64, 64), unfreeze_blocks=1)
    names = _trainable(image.visual)
    assert names == {
        n
        for n, _ in image.visual.named_parameters()
        if n.startswith(("transformer.resblocks.1.", "ln_post.", "proj"))
    }
    assert "transformer.resblocks.1.attn.in_proj_weight" in names and "proj" in names
    assert not any(p.requires_grad for p in text.parameters())
    for blocks in (0, -1, 2, 5):  # <= 0 or >= depth: the whole tower
        image.set_trainable(blocks)
        assert _trainable(image.visual) == {n for n, _ in image.visual.named_parameters()}
    image.set_trainable(0, train_tower=False)
    assert not _trainable(image.visual)


def test_unfreeze_blocks_resnet_keeps_frozen_batchnorm_in_eval():
    image, _ = build_encoders("tiny-rn", "none", (64, 64), unfreeze_blocks=1)
    names = _trainable(image.visual)
    assert names and all(n.startswith(("layer4.", "attnpool.")) for n in names)
    assert "attnpool.positional_embedding" in names
    assert {n.split(".")[0] for n in names} == {"layer4", "attnpool"}
    image.train()
    assert not image.visual.bn1.training and not image.visual.layer3[0].bn1.training
    assert image.visual.layer4[0].bn1.training
    image.set_trainable(2)
    assert {n.split(".")[0] for n in _trainable(image.visual)} == {"layer3", "layer4", "attnpool"}
