from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the test suite may reach the network (no pretrained downloads).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_11K = Path(
    os.environ.get("HANDREID_11K_SAMPLE", REPO.parent / "shared" / "data" / "11k-mini-100px")
)


@pytest.fixture
def sample_11k() -> Path:
    """The real 11k Hands sample (1,108 thumbnails + the full official HandInfo.csv)."""
    if not (SHARED_11K / "HandInfo.csv").is_file():
        pytest.skip(f"11k Hands sample not found at {SHARED_11K}")
    return SHARED_11K


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A learnable synthetic 11k-layout set: 40 ids x 10 images x 4 aspects at 64 px."""
    from handreid.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synthetic"), ids=40, per_id=10, size=64, seed=0)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The demo set ``hpo run --data synthetic`` generates (``synthetic_data``), made once."""
    from hpo.search.study import synthetic_data

    return synthetic_data(tmp_path_factory.mktemp("demo-data"))


@pytest.fixture
def studies_with_demo_data(tmp_path, demo_data) -> Path:
    """``tmp_path/studies`` holding the demo set where ``hpo run --data synthetic`` leaves it,
    so a run in ``tmp_path`` finds it instead of generating it again (about 7 s a run)."""
    studies = tmp_path / "studies"
    studies.mkdir(exist_ok=True)
    (studies / demo_data.name).symlink_to(demo_data, target_is_directory=True)
    return studies


# tiny-vit on the synthetic set (with data_root, cache_dir): 21 training, 7 validation, 12 test ids
TINY = dict(
    model="tiny-vit",
    pretrained="none",
    image_size=(64, 64),
    batch_size=32,
    num_instances=4,
    epochs=2,
    warmup_epochs=1,
    early_stop_patience=0,
    lr_clip_visual=3e-3,
    lr_modules=3e-3,
    classifier="arcface",
    arcface_scale=16.0,
    arcface_margin=0.2,
    bnneck_dim=64,
    transformer_layers=2,
    supcon_loss_weight=0.5,
    test_fraction=0.3,
    val_fraction=0.25,
    num_splits=3,
)


@pytest.fixture(scope="session")
def tiny_cfg(synthetic_root, tmp_path_factory):
    """tiny-vit on the synthetic set: 21 training, 7 validation, 12 test identities."""
    from handreid.config import TrainConfig

    return TrainConfig(
        **TINY, data_root=str(synthetic_root), cache_dir=str(tmp_path_factory.mktemp("cache"))
    )
