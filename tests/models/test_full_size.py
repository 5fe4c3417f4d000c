from __future__ import annotations

import pytest
import torch

from handreid.config import TrainConfig
from handreid.models import ImageEncoder, build_model, load_clip
from handreid.models.backbone import resize_image_tower

pytestmark = (
    pytest.mark.integration
)  # full-size random-weight towers: several seconds each on a CPU


@pytest.mark.parametrize(
    ("model", "dims", "native", "wide"),
    [("rn50", (1024, 512), 49, 28), ("vitb16", (512, 512), 196, 112)],
)
def test_full_size_towers_at_224_and_224x128(model, dims, native, wide):
    torch.manual_seed(0)
    clip = load_clip(model, "none", (224, 224)).eval()
    enc = ImageEncoder(clip.visual).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        pooled, tokens = enc(x)
        expected = clip.encode_image(x)
    assert tokens.shape == (2, native, dims[0])
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-5)

    resize_image_tower(clip.visual, (224, 128))
    enc = ImageEncoder(clip.visual).eval()
    x = torch.randn(1, 3, 224, 128)
    with torch.no_grad():
        pooled, tokens = enc(x)
        expected = clip.visual(x)
    assert enc.grid == ((7, 4) if model == "rn50" else (14, 8))
    assert tokens.shape == (1, wide, dims[0])
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", ["rn50", "vitb16"])
def test_full_size_promptsg_forward_224x128(model):
    torch.manual_seed(0)
    cfg = TrainConfig(model=model, pretrained="none", image_size=(224, 128), unfreeze_blocks=2)
    net = build_model(cfg, 10, cfg.aspects).eval()
    embed, width = (1024, 512) if model == "rn50" else (512, 512)
    assert net.composer.text.width == width and net.embed_dim == embed
    with torch.no_grad():
        out = net(torch.randn(2, 3, 224, 128), torch.zeros(2, dtype=torch.long))
    assert out["fused"].shape == (2, embed) and out["logits"].shape == (2, 10)
    assert out["feat"].shape == (2, cfg.bnneck_dim)
