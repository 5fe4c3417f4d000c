from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the test suite may reach the network (no pretrained downloads).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_11K = Path(os.environ.get("HANDREID_11K_SAMPLE", REPO.parent / "shared" / "data" / "11k-mini-100px"))


@pytest.fixture
def sample_11k() -> Path:
    """The real 11k Hands sample (1,108 thumbnails + the full official HandInfo.csv)."""
    if not (SHARED_11K / "HandInfo.csv").is_file():
        pytest.skip(f"11k Hands sample not found at {SHARED_11K}")
    return SHARED_11K
