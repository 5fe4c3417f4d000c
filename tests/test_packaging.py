"""What an installed wheel carries: the search spaces and example configs travel as package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from handreid.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("rn50", "tiny-rn", "tiny-vit", "vitb16")


@pytest.mark.parametrize("name", BACKBONES)
def test_example_configs_are_package_data_and_valid(name):
    src = resources.files("handreid") / "configs" / f"{name}.yaml"
    with resources.as_file(src) as path:
        cfg = TrainConfig.from_yaml(path)
    assert cfg.model == name


def test_wheel_holds_the_search_spaces_configs_and_published_rows(tmp_path):
    pytest.importorskip("setuptools", minversion="68")
    # build from a copy so the work tree gains no build/ or egg-info
    src = tmp_path / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, src / item)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for pkg in ("handreid", "hpo"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("handreid_hpo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in BACKBONES:
        assert f"hpo/search_spaces/{name}.yaml" in names
        assert f"handreid/configs/{name}.yaml" in names
    assert "hpo/decide/published.yaml" in names  # hpo final's published reference rows
    assert not any(n.startswith(("tests/", "benchmarks/", "studies/")) for n in names)
