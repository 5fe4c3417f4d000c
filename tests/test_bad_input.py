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
    """A valid tiny-vit trainer config on the synthetic set, plus ``extra`` YAML lines."""

    def setup(tmp: Path, synthetic: Path) -> None:
        cfg = TrainConfig(**TINY, data_root=str(synthetic), cache_dir=str(tmp.parent / "cache"))
        (tmp / name).write_text(cfg.to_yaml() + extra)

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
def study_in(
    where: str = "studies/handreid.db",
    name: str = "handreid-tiny-vit",
    trials: tuple[str, ...] = ("complete",),
    attrs: dict | None = None,
) -> Setup:
    """A study like ``hpo run`` leaves, in an SQLite file (``*.db``) or a journal file."""

    def setup(tmp: Path, synthetic: Path) -> None:
        import optuna

        from hpo.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # stderr is the case's, not ours
        path = tmp / where
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{path}" if where.endswith(".db") else open_storage(str(path))
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
        config = TrainConfig(**TINY, data_root=str(synthetic)).to_dict()
        for state in trials:
            trial = study.ask()
            trial.suggest_float("lr_modules", 1e-4, 1e-2, log=True)
            trial.set_user_attr("config", config)
            if state == "complete":
                study.tell(trial, 0.5)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)

    return setup


def torn(where: str) -> Setup:
    """A journal whose last record a crash cut short."""

    def setup(tmp: Path, synthetic: Path) -> None:
        study_in(where)(tmp, synthetic)
        with open(tmp / where, "ab") as fh:
            fh.write(b'{"op_code":4,"worker_id":"a')

    return setup


def fifo_beside(tmp: Path, synthetic: Path) -> None:
    os.mkfifo(tmp.parent / "fifo")  # outside the case folder, whose snapshot would block on it


def link_to_folder(tmp: Path, synthetic: Path) -> None:
    (tmp / "link").symlink_to(tmp.parent)


def tiny_space(tmp: Path, synthetic: Path) -> dict:
    from hpo.space import load_space

    return load_space("tiny-vit").with_base(data_root=str(synthetic)).to_dict()


LONG = "x" * 300

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
    # -- run: study names, options, storages (all refused before any data is read)
    Case("run-study-parent", "hpo", (*RUN, "--study", "../../evil"), "no '/' or '\\'"),
    Case("run-study-absolute", "hpo", (*RUN, "--study", "/srv/x"), "no '/' or '\\'"),
    Case("run-study-backslash", "hpo", (*RUN, "--study", "a\\b"), "no '/' or '\\'"),
    Case("run-study-dotdot", "hpo", (*RUN, "--study", ".."), "no '..'"),
    Case("run-study-too-long", "hpo", (*RUN, "--study", LONG), "300 characters; at most 100"),
    Case("run-study-newline", "hpo", (*RUN, "--study", "a\nb"), "control character '\\n'"),
    Case("run-study-empty", "hpo", (*RUN, "--study", ""), "the study name is empty"),
    Case(
        "run-timeout-negative", "hpo", (*RUN, "--timeout", "-1"), "--timeout=-1: must be a positive"
    ),
    Case("run-timeout-zero", "hpo", (*RUN, "--timeout", "0"), "--timeout=0: must be a positive"),
    Case("run-timeout-nan", "hpo", (*RUN, "--timeout", "nan"), "--timeout=nan: must be a positive"),
    Case("run-heartbeat-negative", "hpo", (*RUN, "--heartbeat", "-5"), "--heartbeat=-5: must be"),
    Case("run-seed-negative", "hpo", (*RUN, "--seed", "-1"), "--seed=-1: must be between 0"),
    Case("run-seed-huge", "hpo", (*RUN, "--seed", str(2**64)), "must be between 0 and 4294967295"),
    Case("run-workers-zero", "hpo", (*RUN, "--workers", "0"), "--workers=0: must be at least 1"),
    Case(
        "run-gpus-without-cuda",
        "hpo",
        (*RUN, "--workers", "2", "--gpus", "0"),
        "--gpus=0: no CUDA device is visible here",
    ),
    Case("run-gpus-one-worker", "hpo", (*RUN, "--gpus", "0"), "needs --workers 2 or more"),
    Case("run-gpus-not-numbers", "hpo", (*RUN, "--workers", "2", "--gpus", "a"), "expected device"),
    Case("run-storage-in-memory", "hpo", (*RUN, "--storage", "sqlite://"), "in-memory database"),
    Case("run-storage-memory-file", "hpo", (*RUN, "--storage", "sqlite:///:memory:"), "in-memory"),
    Case(
        "run-journal-is-text",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/notes.txt"),
        "is not an Optuna journal file",
        setup=write("notes.txt", "my notes\nabout the study\n"),
    ),
    Case(
        "run-journal-torn",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/s.log"),
        "ends in a torn record (27 bytes after the last complete line",
        setup=torn("s.log"),
    ),
    Case(
        "run-journal-is-sqlite",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/s.db"),
        "is an SQLite database; pass --storage sqlite:///",
        setup=study_in("s.db"),
    ),
    Case(
        "run-study-in-the-journal",
        "hpo",
        (*RUN, "--data", "{synthetic}"),
        "is in studies/handreid.log, not in sqlite:///studies/handreid.db; resume it there: "
        "hpo run --backbone tiny-vit --quiet --data",
        setup=study_in("studies/handreid.log"),
    ),
    Case(
        "run-workers-on-an-sqlite-study",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--workers", "2"),
        "which is not safe for several workers; resume it with one worker: hpo run "
        "--backbone tiny-vit --quiet --data",
        setup=study_in("studies/handreid.db"),
    ),
    Case(
        "run-other-search-space",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "sqlite:///{tmp}/s.db"),
        "was created with a different search space",
        setup=study_in("s.db", attrs={"space_digest": "0123"}),
    ),
    Case("run-no-data", "hpo", RUN, "no data: pass --data DIR"),
    Case(
        "run-unknown-pruner", "hpo", (*RUN, "--data", "{synthetic}", "--pruner", "x"), "pruner 'x'"
    ),
    Case("run-epochs-zero", "hpo", (*RUN, "--data", "{synthetic}", "--epochs", "0"), "epochs=0"),
    Case(
        "run-unknown-aspect",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--aspects", "bogus"),
        "unknown aspect 'bogus'",
    ),
    Case("run-space-missing", "hpo", (*RUN, "--space", "{tmp}/no.yaml"), "space file not found"),
    Case(
        "run-space-not-yaml",
        "hpo",
        (*RUN, "--space", "{tmp}/s.yaml"),
        "not valid YAML",
        setup=write("s.yaml", "base: [\n"),
    ),
    # -- argparse's own errors: one line too
    Case("run-trials-not-int", "hpo", (*RUN, "--trials", "many"), "invalid int value: 'many'"),
    Case(
        "run-unknown-option", "hpo", (*RUN, "--bogus"), "hpo run: unrecognized arguments: --bogus"
    ),
    Case("run-no-backbone", "hpo", ("run",), "the following arguments are required: --backbone"),
    Case(
        "run-bad-dataset", "hpo", (*RUN, "--dataset", "xyz"), "argument --dataset: invalid choice"
    ),
    Case("no-command", "hpo", (), "the following arguments are required: command"),
    Case("unknown-command", "hpo", ("frobnicate",), "invalid choice: 'frobnicate'"),
    # -- export
    Case(
        "export-no-study-named",
        "hpo",
        ("export", "--study", "nope"),
        "no study named 'nope' in sqlite:///studies/handreid.db",
        setup=study_in(),
    ),
    Case(
        "export-two-studies",
        "hpo",
        ("export",),
        "holds 2 studies",
        setup=both(study_in(name="a"), study_in(name="b")),
    ),
    Case(
        "export-no-trial",
        "hpo",
        ("export",),
        "has no completed trial yet",
        setup=study_in(trials=()),
    ),
    Case(
        "export-trial-missing",
        "hpo",
        ("export", "--trial", "7"),
        "has no trial 7",
        setup=study_in(),
    ),
    Case(
        "export-trial-failed",
        "hpo",
        ("export", "--trial", "1"),
        "trial 1 is FAIL; only a COMPLETE trial can be exported",
        setup=study_in(trials=("complete", "fail")),
    ),
    Case(
        "export-config-differs",
        "hpo",
        ("export",),
        "its recorded config differs from base + params",
        setup=lambda tmp, syn: study_in(attrs={"space": tiny_space(tmp, syn)})(tmp, syn),
    ),
    Case(
        "export-out-folder",
        "hpo",
        ("export", "--out", "{tmp}"),
        "is a directory; give the path of a file",
        setup=study_in(),
    ),
    Case(
        "export-out-device",
        "hpo",
        ("export", "--out", "/dev/null"),
        "--out /dev/null is a device",
        setup=study_in(),
    ),
    Case(
        "export-out-fifo",
        "hpo",
        ("export", "--out", "{tmp}/../fifo"),
        "is a FIFO",
        setup=both(study_in(), fifo_beside),
    ),
    Case(
        "export-out-link-to-folder",
        "hpo",
        ("export", "--out", "{tmp}/link"),
        "is a directory",
        setup=both(study_in(), link_to_folder),
    ),
    Case(
        "export-out-under-a-file",
        "hpo",
        ("export", "--out", "{tmp}/notes.txt/best.yaml"),
        "Not a directory",
        setup=both(study_in(), write("notes.txt", "x")),
    ),
    Case(
        "export-out-unwritable",
        "hpo",
        ("export", "--out", "/proc/best.yaml"),
        "--out /proc/best.yaml: cannot write",
        setup=study_in(),
    ),
    Case(
        "export-study-in-the-journal",
        "hpo",
        ("export", "--study", "j"),
        "study 'j' is not in sqlite:///studies/handreid.db but in studies/handreid.log",
        setup=study_in("studies/handreid.log", name="j"),
    ),
    Case("export-journal-missing", "hpo", ("export", "--storage", "none.log"), "not found"),
    Case("export-in-memory", "hpo", ("export", "--storage", "sqlite://"), "in-memory"),
    Case("export-trial-not-int", "hpo", ("export", "--trial", "best"), "invalid int value"),
    # -- show, ls
    Case("show-no-database", "hpo", ("show",), "no study database at studies/handreid.db"),
    Case(
        "show-no-study-named",
        "hpo",
        ("show", "--study", "x"),
        "no study named 'x'",
        setup=study_in(),
    ),
    Case(
        "show-journal-torn",
        "hpo",
        ("show", "--storage", "{tmp}/s.log"),
        "ends in a torn record",
        setup=torn("s.log"),
    ),
    Case(
        "show-journal-is-text",
        "hpo",
        ("show", "--storage", "{tmp}/notes.txt"),
        "is not an Optuna journal file",
        setup=write("notes.txt", "hello\n"),
    ),
    Case("ls-no-database", "hpo", ("ls",), "no study database at studies/handreid.db"),
    Case("ls-journal-missing", "hpo", ("ls", "--storage", "{tmp}/none.log"), "not found"),
    Case("ls-in-memory", "hpo", ("ls", "--storage", "sqlite:///:memory:"), "in-memory"),
    Case("ls-unknown-option", "hpo", ("ls", "--study", "x"), "hpo ls: unrecognized arguments"),
    # -- report, dashboard
    Case("report-top-zero", "hpo", ("report", "--top", "0"), "--top=0: must be at least 1"),
    Case("report-no-database", "hpo", ("report",), "no study database at studies/handreid.db"),
    Case(
        "report-nothing-finished",
        "hpo",
        ("report",),
        "has no finished trials yet; nothing to report",
        setup=study_in(trials=("fail",)),
    ),
    Case(
        "report-out-under-a-file",
        "hpo",
        ("report", "--out", "{tmp}/notes.txt/report", "--no-png"),
        "cannot create report folder",
        setup=both(study_in(), write("notes.txt", "x")),
    ),
    Case("dashboard-port-range", "hpo", ("dashboard", "--port", "70000"), "must be between 0"),
    Case("dashboard-port-not-int", "hpo", ("dashboard", "--port", "http"), "invalid int value"),
    Case("dashboard-no-database", "hpo", ("dashboard",), "no study database"),
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
