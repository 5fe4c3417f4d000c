from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from handreid import checkpoint, files
from handreid.checkpoint import (
    RUN_FILES,
    check_run_folder,
    load_checkpoint,
    save_checkpoint,
    write_run_folder,
)
from handreid.config import TrainConfig
from handreid.errors import UserError
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


# ---- atomic writes: a full disk leaves no partial file and no temporary ------------------------
def _tiny_model(cfg):
    return build_model(cfg, 3, ("dorsal right",))


def disk_full(*args, **kwargs):
    """Write a little, then fail as a full disk does."""
    target = args[1] if len(args) > 1 else kwargs.get("f")
    if hasattr(target, "write"):
        target.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def _listing(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def test_save_checkpoint_is_atomic_on_a_full_disk(tmp_path, monkeypatch):
    cfg = TrainConfig(model="tiny-vit", pretrained="none", image_size=(64, 64), bnneck_dim=32)
    path = tmp_path / "best.pt"
    path.write_bytes(b"the previous best")
    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left on device") as err:
        save_checkpoint(path, _tiny_model(cfg), cfg, num_classes=3, aspects=("dorsal right",))
    assert err.value.filename == str(path)  # torch's writer drops it; the error names the file
    assert _listing(tmp_path) == {"best.pt": b"the previous best"}


def test_save_checkpoint_keeps_the_umask_mode(tmp_path):
    cfg = TrainConfig(model="tiny-vit", pretrained="none", image_size=(64, 64), bnneck_dim=32)
    old = os.umask(0o022)
    try:
        save_checkpoint(
            tmp_path / "b.pt", _tiny_model(cfg), cfg, num_classes=3, aspects=("dorsal right",)
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o644


def _write_run(folder: Path) -> None:
    for name in RUN_FILES:
        (folder / name).write_text(f"new {name}")


@pytest.mark.parametrize("failing", RUN_FILES)
def test_write_run_folder_leaves_nothing_when_a_write_fails(tmp_path, monkeypatch, failing):
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == failing:
            real(self, "half")
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    before = _listing(tmp_path)
    with pytest.raises(UserError, match="cannot write the run folder .*No space left on device"):
        write_run_folder(tmp_path / "runs" / "a" / "run", _write_run)
    assert _listing(tmp_path) == before  # no run, no temporary sibling, no created parents


def test_write_run_folder_keeps_the_earlier_run_when_overwriting_fails(tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_run_folder(out, _write_run)
    before = _listing(tmp_path)

    def failing(folder: Path) -> None:
        (folder / "config.yaml").write_text("x")
        raise OSError(errno.EIO, "Input/output error", str(folder / "best.pt"))

    with pytest.raises(UserError, match="Input/output error"):
        write_run_folder(out, failing, overwrite=True)
    assert _listing(tmp_path) == before

    def other(folder: Path) -> None:
        (folder / "config.yaml").write_text("second")

    write_run_folder(out, other, overwrite=True)
    assert _listing(tmp_path) == {"run": None, "run/config.yaml": b"second"}


def test_write_run_folder_removes_its_temporary_on_interrupt(tmp_path):
    def interrupted(folder: Path) -> None:
        (folder / "config.yaml").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_run_folder(tmp_path / "run", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_run_folder_rules(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file; give a folder"):
        check_run_folder(tmp_path / "file")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_run_folder(tmp_path / "file" / "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "mine" / "best.pt").write_text("x")
    for overwrite in (False, True):  # --overwrite replaces a run, never other files
        with pytest.raises(UserError, match="holds 'notes.txt', which no handreid run writes"):
            check_run_folder(tmp_path / "mine", overwrite)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a run; pass --overwrite"):
        check_run_folder(tmp_path / "old")
    check_run_folder(tmp_path / "old", overwrite=True)
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")  # an empty folder is fine, and so is a new one
    check_run_folder(tmp_path / "new" / "deeper")


def test_unwritable_parent_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="cannot create it in .* \\(permission denied\\)"):
        check_run_folder(tmp_path / "run")


# ---- weights that are not finite, and metrics that disagree with the stored ones -----------------
def test_loading_refuses_weights_that_are_not_finite_naming_file_and_tensor(tmp_path):
    cfg = TrainConfig(model="tiny-vit", pretrained="none", image_size=(64, 64), bnneck_dim=32)
    path = tmp_path / "best.pt"
    save_checkpoint(path, _tiny_model(cfg), cfg, num_classes=3, aspects=("dorsal right",))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["neck.bn.bias"][7] = float("nan")
    torch.save(payload, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: weight neck.bn.bias holds 1 of 32 values")
    assert "not finite (NaN or inf)" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def evaluated(tiny_cfg, tmp_path, capsys):
    """An untrained tiny checkpoint on the synthetic set and what ``evaluate`` measures on it;
    ``save(test)`` writes it again with ``test`` as its stored test metrics."""
    from handreid.cli import main

    def run_cli(argv: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        return exc.value.code, *capsys.readouterr()

    torch.manual_seed(0)
    model = build_model(tiny_cfg, 21, tiny_cfg.aspects)
    path = tmp_path / "best.pt"

    def save(test: dict) -> None:
        save_checkpoint(path, model, tiny_cfg, num_classes=21, aspects=tiny_cfg.aspects, test=test)

    def evaluate(*extra: str) -> tuple[str, str]:
        code, out, err = run_cli(["evaluate", "--checkpoint", str(path), *extra])
        assert code == 0, err
        return out, err

    save({})
    return save, evaluate, json.loads(evaluate("--json")[0])


def test_evaluate_is_silent_when_it_reproduces_the_stored_metrics(evaluated):
    save, evaluate, measured = evaluated
    save(measured)
    out, err = evaluate()
    assert out.startswith("test (3 splits): rank1") and out.count("\n") == 1 and err == ""
    out, err = evaluate("--json")
    assert json.loads(out) == measured and err == ""


def test_evaluate_says_which_metrics_differ_from_the_stored_ones(evaluated):
    save, evaluate, measured = evaluated
    stored = {**measured, "mAP": measured["mAP"] - 0.0123, "rank5": measured["rank5"] + 0.05}
    save(stored)
    test_line, note = evaluate()[0].splitlines()
    assert test_line.startswith("test (3 splits)")
    assert note.startswith(
        "differs from the checkpoint's stored test metrics on the same test images (stored: "
        f"rank5 {100 * stored['rank5']:.2f}, mAP {100 * stored['mAP']:.2f}): "
    )
    out, err = evaluate("--json")  # stdout stays one JSON object; the note is a warning
    assert json.loads(out) == measured and err == f"warning: {note}\n"


def test_evaluate_says_the_stored_metrics_were_measured_on_other_test_images(
    evaluated, synthetic_root, tmp_path
):
    save, evaluate, measured = evaluated
    save({**measured, "mAP": 0.9, "test_set": "0123456789ab"})
    _, note = evaluate()[0].splitlines()
    assert note.startswith("the checkpoint's stored test mAP 90.00 was measured on other test")
    assert "differs" not in note  # other images: a different number is no mismatch
    # a checkpoint without the digest: another data folder counts as other test images
    save({k: v for k, v in measured.items() if k != "test_set"})
    assert evaluate()[0].count("\n") == 1  # its own data_root: the same images and numbers
    copy = shutil.copytree(synthetic_root, tmp_path / "copy")
    _, note = evaluate("--data", str(copy))[0].splitlines()
    assert "was measured on other test images" in note
