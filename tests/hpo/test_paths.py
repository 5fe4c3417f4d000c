"""Study names never become paths outside studies/; exports write through links, atomically,
with the umask's mode, and refuse what is not a file."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import optuna
import pytest

from handreid.errors import UserError
from hpo.cli import main
from hpo.common.paths import MAX_NAME, atomic_write_text, check_study_name, study_dir, study_folder
from hpo.records.space import load_space

EVIL = ["../../evil", "/srv/x", "a/b", "x" * 300, "new\nline", "..", "C:\\temp\\x", "\x1b[2J"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../../evil", "no '/'"),
        ("/srv/x", "no '/'"),
        ("a\\b", "no '/' or '\\'"),
        ("..", "no '..'"),
        ("v1..v2", "no '..'"),
        ("x" * 300, f"300 characters; at most {MAX_NAME}"),
        ("new\nline", "control character '\\n'"),
        ("bidi\u202eevil", "control character '\\u202e'"),
        ("", "empty"),
        (" padded", "white space"),
    ],
)
def test_new_study_names_that_could_become_paths_are_refused(name, fragment):
    with pytest.raises(UserError) as exc:
        check_study_name(name)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_plain_names_are_their_own_folder_and_others_a_slug_with_a_hash():
    assert study_folder("handreid-tiny-vit") == "handreid-tiny-vit"
    assert study_folder("rn50_v1.2") == "rn50_v1.2"
    assert check_study_name("my study") == "my study"  # allowed, but not used as a path as is
    folders = {name: study_folder(name) for name in [*EVIL, "my study", "artifacts", "CON"]}
    assert folders["my study"].startswith("my-study-")
    for name, folder in folders.items():
        assert folder != name
        assert len(folder) <= 60 and folder.isascii() and folder.isprintable()
        assert "/" not in folder and "\\" not in folder and not folder.startswith(".")
        assert (Path("studies") / folder).resolve().parent == Path("studies").resolve()
    assert len(set(folders.values())) == len(folders), "distinct names, distinct folders"
    assert study_folder("a/b") != study_folder("a-b") != study_folder("a:b")
    assert study_dir("x" * 300) == Path("studies") / study_folder("x" * 300)


def make_exportable_study(storage: str, name: str, data_root: Path) -> optuna.Study:
    """A study as `hpo run` leaves it (space attrs, one completed baseline trial), no training."""
    space = load_space("tiny-vit").with_base(data_root=str(data_root))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("space", space.to_dict())
    baseline = {k: v for k, v in space.baselines[0].items() if k != "name"}
    study.enqueue_trial(baseline)
    trial = study.ask()
    cfg = space.config(space.suggest(trial))
    trial.set_user_attr("config", cfg.to_dict())
    study.tell(trial, 0.5)
    return study


def walk(root: Path) -> set[str]:
    return {str(Path(d, n)) for d, dirs, files in os.walk(root) for n in dirs + files}


def test_no_study_name_writes_outside_the_output_root(
    tmp_path, synthetic_root, monkeypatch, capsys
):
    """Studies made directly with Optuna (as in a shared database) under hostile names: export
    and report write only under studies/, and `hpo run` refuses such names for new studies."""
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    storage = f"sqlite:///{tmp_path}/shared.db"
    for name in EVIL:
        make_exportable_study(storage, name, synthetic_root)
    before = walk(tmp_path)
    assert not Path("/srv/x").exists()
    for name in EVIL:
        for argv in (
            ["export", "--storage", storage, "--study", name],
            ["report", "--storage", storage, "--study", name, "--no-png"],
        ):
            with pytest.raises(SystemExit) as exc:
                main(argv)
            out, err = capsys.readouterr()
            assert exc.value.code == 0, err
        assert (study_dir(name) / "best.yaml").is_file()
        assert (study_dir(name) / "report" / "report.html").is_file()
    for name in EVIL[:5]:
        with pytest.raises(SystemExit) as exc:
            main(["run", "--backbone", "tiny-vit", "--data", str(synthetic_root), "--study", name])
        out, err = capsys.readouterr()
        assert exc.value.code == 2 and err.startswith("error: --study ") and err.count("\n") == 1
    new = walk(tmp_path) - before
    root = (work / "studies").resolve()
    outside = [p for p in new if not Path(p).resolve().is_relative_to(root)]
    assert new and not outside, outside
    assert not Path("/srv/x").exists()
    best = (study_dir("../../evil") / "best.yaml").read_text()
    assert "exported from study '../../evil'" in best


def test_run_accepts_a_name_that_needs_a_slug_and_export_puts_it_in_its_folder(
    tmp_path, synthetic_root, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = ["--study", "my study", "--trials", "1", "--epochs", "1", "--pruner", "none"]
    run = ["run", "--backbone", "tiny-vit", "--data", str(synthetic_root), "--quiet", *argv]
    for command in (run, ["export", "--study", "my study"]):
        with pytest.raises(SystemExit) as exc:
            main([*command, "--set", "num_splits=1"] if command is run else command)
        out, err = capsys.readouterr()
        assert exc.value.code == 0, err
    assert (Path("studies") / study_folder("my study") / "best.yaml").is_file()
    assert sorted(p.name for p in Path("studies").iterdir()) == [
        "artifacts",  # the trials' configs, histories and checkpoints
        "handreid.db",
        study_folder("my study"),
    ]


# ---- atomic_write_text ---------------------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_mode(tmp_path, umask_027):
    new = tmp_path / "deep" / "new.yaml"
    assert atomic_write_text(new, "a: 1\n") == new.resolve()
    assert new.read_text() == "a: 1\n" and mode(new) == 0o640
    kept = tmp_path / "kept.yaml"
    kept.write_text("old")
    kept.chmod(0o604)
    atomic_write_text(kept, "new")
    assert kept.read_text() == "new" and mode(kept) == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "kept.yaml"], "no temp file"


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "real.yaml"
    target.write_text("old")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert atomic_write_text(link, "new") == target
    assert link.is_symlink() and target.read_text() == "new"


@pytest.mark.parametrize("kind", ["dir", "fifo", "device", "link-to-dir", "link-to-device"])
def test_targets_that_are_not_regular_files_are_refused_untouched(tmp_path, kind):
    path = tmp_path / "out"
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/null")
    elif kind == "link-to-dir":
        (tmp_path / "d").mkdir()
        path.symlink_to(tmp_path / "d")
    else:
        path.symlink_to("/dev/null")
    before = path.lstat()
    with pytest.raises(UserError) as exc:
        atomic_write_text(path, "x")
    expected = {"dir": "directory", "fifo": "FIFO"}.get(kind.removeprefix("link-to-"), "device")
    assert f"is a {expected}; give the path of a file" in str(exc.value)
    assert path.lstat() == before
    assert sorted(os.listdir(tmp_path)) == sorted(
        {"dir": ["out"], "fifo": ["out"], "device": [], "link-to-dir": ["d", "out"]}.get(
            kind, ["out"]
        )
    )


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        UserError, match=r"cannot create folder .*/file: File exists|Not a directory"
    ):
        atomic_write_text(tmp_path / "file" / "sub" / "best.yaml", "x")
    with pytest.raises(UserError, match=r"Not a directory"):
        atomic_write_text(tmp_path / "file" / "best.yaml", "x")


def test_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):  # delayed allocation: a full disk shows when the data is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(
        UserError, match=r"cannot write: No space left on device \(the disk is full\)"
    ):
        atomic_write_text(tmp_path / "best.yaml", "x" * 100_000)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
