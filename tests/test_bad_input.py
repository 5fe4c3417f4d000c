"""Every CLI error path, in one table: (command, input, message fragment, exit code).

Each case runs in its own empty working folder (``{tmp}``) that its ``setup`` may fill. The
test asserts the exit code, that stderr is exactly one ``error:`` line holding the fragment,
that no Python traceback escapes, and that nothing was written: the working folder is
byte-identical afterwards and no study exists in any storage the case names.

Placeholders in ``args``: ``{tmp}`` the case's folder, ``{synthetic}`` a learnable synthetic
11k-layout set (shared, read-only), ``{sample}`` the real 11k Hands sample (cases using it
skip when it is absent).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from handreid.config import TrainConfig
from tests.conftest import SHARED_11K, TINY


@dataclass(frozen=True)
class Case:
    id: str
    cli: str  # "hpo" | "handreid"
    args: tuple[str, ...]
    message: str
    code: int = 2
    setup: Setup | None = None  # prepares files in the case's folder


Setup = Callable[[Path, Path], None]  # (case folder, synthetic data root)


def config_with(extra: str, name: str = "tiny.yaml") -> Setup:
    """A valid tiny-vit trainer config on the synthetic set with the keys of ``extra`` (YAML)
    set; appending them as text would repeat keys, which configs refuse."""

    def setup(tmp: Path, synthetic: Path) -> None:
        cfg = TrainConfig(**TINY, data_root=str(synthetic), cache_dir=str(tmp.parent / "cache"))
        data = {**cfg.to_dict(), **(yaml.safe_load(extra) or {})}
        (tmp / name).write_text(yaml.safe_dump(data, sort_keys=False))

    return setup


def config_text(extra: str | bytes, name: str = "tiny.yaml") -> Setup:
    """A valid tiny-vit trainer config on the synthetic set followed by ``extra`` as raw text."""

    def setup(tmp: Path, synthetic: Path) -> None:
        cfg = TrainConfig(**TINY, data_root=str(synthetic), cache_dir=str(tmp.parent / "cache"))
        raw = extra if isinstance(extra, bytes) else extra.encode()
        (tmp / name).write_bytes(cfg.to_yaml().encode() + raw)

    return setup


def write(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def both(*setups: Setup) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        for s in setups:
            s(tmp, synthetic)

    return setup


RUN = ("run", "--backbone", "tiny-vit", "--quiet")
TRAIN = ("train", "--config", "{tmp}/tiny.yaml", "--out", "{tmp}/run", "--quiet")

# ---- handreid: train, evaluate, synth, inspect ----------------------------------------------
HANDREID_CASES = [
    Case(
        "train-unknown-key",
        "handreid",
        TRAIN,
        "unknown key 'lr_modlues'; did you mean 'lr_modules'?",
        setup=config_with("lr_modlues: 0.1\n"),
    ),
    Case(
        "train-not-an-int",
        "handreid",
        TRAIN,
        "epochs='many': expected an integer",
        setup=config_with("epochs: many\n"),
    ),
    Case(
        "train-margin-range",
        "handreid",
        TRAIN,
        "arcface_margin=3.0 is out of range",
        setup=config_with("arcface_margin: 3.0\n"),
    ),
    Case(
        "train-set-range",
        "handreid",
        (*TRAIN, "--set", "bnneck_dim=0"),
        "bnneck_dim=0 is out of range",
        setup=config_with(""),
    ),
    Case(
        "train-missing-data",
        "handreid",
        (*TRAIN, "--data", "/no/such/folder"),
        "does not exist",
        setup=config_with(""),
    ),
    Case(
        "train-missing-config",
        "handreid",
        ("train", "--config", "{tmp}/none.yaml", "--out", "{tmp}/run"),
        "config file not found",
    ),
]

# ---- hpo: run, export, show, ls, report, dashboard, confirm -----------------------------
HPO_CASES = [
    Case(
        "run-unknown-backbone",
        "hpo",
        ("run", "--backbone", "rn5", "--data", "{synthetic}"),
        "unknown backbone 'rn5'",
    ),
    Case(
        "run-missing-data",
        "hpo",
        (*RUN, "--data", "/no/such/data"),
        "dataset folder not found: /no/such/data",
    ),
    Case(
        "run-postgres-unreachable",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "postgresql://u:p@127.0.0.1:9/none"),
        "cannot open storage",
    ),
    Case(
        "run-sqlite-folder-missing",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "sqlite:///no/such/dir/x.db"),
        "folder no/such/dir does not exist",
    ),
    Case(
        "run-unknown-sampler",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--sampler", "grid"),
        "unknown sampler 'grid'",
    ),
    Case(
        "run-fix-searched-key",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "max_norm=1"),
        "'max_norm' is searched",
    ),
    Case(
        "run-set-typo",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "epoch=1"),
        "unknown key 'epoch'; did you mean 'epochs'",
    ),
    Case(
        "run-zero-trials",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--trials", "0"),
        "--trials=0: must be at least 1",
    ),
    Case(
        "run-bad-device",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--device", "gpu"),
        "--device 'gpu': expected auto, cpu, cuda",
    ),
    Case(
        "run-weights-unavailable",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "pretrained=openai"),
        "pretrained='openai' is neither a file",
    ),
    Case(
        "run-storage-is-dir",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "/"),
        "Is a directory",
    ),
    Case(
        "run-workers-sqlite",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--workers", "2", "--storage", "sqlite:///studies/x.db"),
        "SQLite is not safe",
    ),
    Case("export-no-database", "hpo", ("export",), "no study database at studies/handreid.db"),
]

CASES = HANDREID_CASES + HPO_CASES


def _snapshot(root: Path) -> dict[str, str]:
    """relative path -> content digest (or 'dir'/'link:<target>') of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _main(cli: str):
    if cli == "hpo":
        from hpo.cli import main
    else:
        from handreid.cli import main
    return main


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(
    case, tmp_path, synthetic_root, monkeypatch, capfd
):
    if any("{sample}" in a for a in case.args) and not (SHARED_11K / "HandInfo.csv").is_file():
        pytest.skip(f"11k Hands sample not found at {SHARED_11K}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HANDREID_CACHE", str(tmp_path / "cache"))  # the decode cache may fill
    if case.setup:
        case.setup(work, synthetic_root)
    fill = {"tmp": str(work), "synthetic": str(synthetic_root), "sample": str(SHARED_11K)}
    argv = [a.format(**fill) for a in case.args]
    before, data_before = _snapshot(work), _snapshot(synthetic_root)
    with pytest.raises(SystemExit) as exc:
        _main(case.cli)(argv)
    out, err = capfd.readouterr()
    assert exc.value.code == case.code, (out, err)
    assert "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.message in lines[0], err
    assert _snapshot(work) == before, "the command wrote into its working folder"
    assert _snapshot(synthetic_root) == data_before, "the command wrote into the dataset"
