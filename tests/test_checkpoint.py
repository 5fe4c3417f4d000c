from __future__ import annotations

import torch

from handreid.checkpoint import load_checkpoint, save_checkpoint
from handreid.config import TrainConfig
from handreid.models.promptsg import build_model, uses_quick_gelu


def test_checkpoint_keeps_the_activation_and_reproduces_outputs(tmp_path):
    cfg = TrainConfig(model="tiny-vit", pretrained="none", image_size=(64, 64), bnneck_dim=32)
    torch.manual_seed(0)
    model = build_model(cfg, 5, ("dorsal right", "palmar left"), quick_gelu=True).eval()
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, cfg, num_classes=5, aspects=("dorsal right", "palmar left"))
    loaded, loaded_cfg, payload = load_checkpoint(path)
    assert payload["quick_gelu"] is True and uses_quick_gelu(loaded)
    assert loaded_cfg == cfg
    x, asp = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 0])
    with torch.no_grad():
        assert torch.equal(model.extract(x, asp), loaded.extract(x, asp))
    assert not list(tmp_path.glob("*.tmp"))
