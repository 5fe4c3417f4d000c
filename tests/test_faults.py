"""Faults that must lose nothing: damaged journals, copied databases, full disks while a
checkpoint is stored, concurrent keepers, dead parents. Each test names the data it protects."""

from __future__ import annotations

import errno
import io
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from handreid.errors import UserError
from hpo.records.artifacts import open_artifact_store
from hpo.records.checkpoints import (
    CHECKPOINT_FILE,
    OWNER_SUFFIX,
    CheckpointKeeper,
    export_checkpoint,
    trial_checkpoint,
)
from hpo.records.storage import StorageError, open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)


def snapshot(folder: Path, content: bytes) -> Path:
    """A stand-in for a saved model, where ``CheckpointKeeper.snapshot`` puts one."""
    path = folder / CHECKPOINT_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def run_trial(study: optuna.Study, keeper: CheckpointKeeper, value: float, tmp: Path) -> int:
    """What ``hpo run`` does with a trial's model: offer it, record the trial, sweep again."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    keeper.offer(trial, value, snapshot(tmp / f"snap-{trial.number}", b"weights %d" % trial.number))
    study.tell(trial, value)
    keeper.after_trial(study)
    return trial.number


def artifact_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(OWNER_SUFFIX))


# ---- a copied database never costs the original its checkpoints -------------------------------
def test_a_keeper_on_a_copied_database_keeps_the_originals_checkpoints(tmp_path):
    root = tmp_path / "artifacts"
    store = open_artifact_store(root)
    original = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=original, direction="maximize")
    keeper = CheckpointKeeper(store, keep=2)
    for value in (0.5, 0.6):
        run_trial(study, keeper, value, tmp_path)
    shutil.copy(tmp_path / "study.db", tmp_path / "copy.db")
    copy = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/copy.db")
    copy_keeper = CheckpointKeeper(store, keep=2)
    for value in (0.8, 0.9):  # the copy's better trials push 0 and 1 out of its top 2
        run_trial(copy, copy_keeper, value, tmp_path)

    again = optuna.load_study(study_name="s", storage=original)  # as `hpo export` reads it
    for trial in again.trials:
        path, line = export_checkpoint(again, trial, tmp_path / f"t{trial.number}.yaml", store)
        assert path is not None, line
        assert path.read_bytes() == b"weights %d" % trial.number
    fresh_copy = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/copy.db")
    kept = [
        t.number
        for t in fresh_copy.trials
        if trial_checkpoint(t, fresh_copy._storage, store) is not None
    ]
    assert kept == [2, 3], "the copy lists only its own top 2"
    assert len(artifact_files(root)) == 4, "nothing of the original's was deleted"


# ---- a full disk while storing a checkpoint leaves no partial file ----------------------------
def test_a_full_disk_while_storing_a_checkpoint_leaves_no_partial_artifact(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    store = open_artifact_store(root)
    study = optuna.create_study(direction="maximize")
    keeper = CheckpointKeeper(store, keep=2)
    real_write = FileSystemArtifactStore.write

    def full_disk(self, artifact_id, body):
        real_write(self, artifact_id, io.BytesIO(body.read(3)))  # a truncated file is left
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(FileSystemArtifactStore, "write", full_disk)
    trial = study.ask()
    with pytest.raises(OSError, match="No space left"):
        keeper.offer(trial, 0.9, snapshot(tmp_path / "snap", b"weights of a good model"))
    monkeypatch.undo()
    assert list(root.iterdir()) == [], "the truncated artifact was removed"
    study.tell(trial, 0.9)
    assert trial_checkpoint(study.trials[0], study._storage, store) is None


# ---- an edited artifact id never reaches the store --------------------------------------------
def test_an_edited_checkpoint_id_is_one_line_and_never_read_or_removed(tmp_path):
    store = open_artifact_store(tmp_path / "artifacts")
    (tmp_path / "cfg.yaml").write_text("precious")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    key = "artifacts:../cfg.yaml"
    meta = '{"artifact_id": "../cfg.yaml", "filename": "checkpoint.pt", "mimetype": "x", "encoding": null}'
    study._storage.set_trial_system_attr(trial._trial_id, key, meta)
    study.tell(trial, 0.1)
    with pytest.raises(UserError, match="'../cfg.yaml' recorded in the storage is not an Optuna"):
        trial_checkpoint(study.trials[0], study._storage, store)
    for value in (0.5, 0.6):
        run_trial(study, CheckpointKeeper(store, keep=1), value, tmp_path)  # sweeps trial 0
    assert (tmp_path / "cfg.yaml").read_text() == "precious"


# ---- the limit holds across processes ----------------------------------------------------------
def _concurrent_trial(url: str, root: str, tmp: str, value: float, barrier) -> None:
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    keeper = CheckpointKeeper(FileSystemArtifactStore(root), keep=3)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    keeper.offer(trial, value, snapshot(Path(tmp) / f"snap-{value}", b"w"))
    barrier.wait(timeout=60)  # all three stored their model before any is recorded
    study.tell(trial, value)
    keeper.after_trial(study)


@pytest.mark.integration  # several processes
def test_keep_checkpoints_holds_after_concurrent_processes_on_sqlite(tmp_path):
    root = tmp_path / "artifacts"
    store = open_artifact_store(root)
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    run_trial(study, CheckpointKeeper(store, keep=3), 0.1, tmp_path)
    del study
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_concurrent_trial, args=(url, str(root), str(tmp_path), v, barrier))
        for v in (0.5, 0.6, 0.7)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    kept = [
        t.number for t in study.trials if trial_checkpoint(t, study._storage, store) is not None
    ]
    assert kept == [1, 2, 3], "trial 0 (0.1) fell out of the top 3"
    assert len(artifact_files(root)) == 3


# ---- SIGTERM is 143; a worker whose parent was killed stops -----------------------------------
def test_sigterm_ends_a_command_with_143_and_says_terminated(capsys):
    from handreid.errors import cli_exit
    from hpo.cli import _sigterm

    def run(argv):
        _sigterm(signal.SIGTERM, None)

    with pytest.raises(SystemExit) as exc:
        cli_exit(run, [])
    assert exc.value.code == 143
    assert capsys.readouterr().err == "terminated\n"


WORKER = """
import signal, sys, time
from pathlib import Path
from hpo.cli import _sigterm
from hpo.fleet.workers import watch_parent

signal.signal(signal.SIGTERM, _sigterm)
watch_parent(pdeathsig={pdeathsig}, interval=0.2)
Path(sys.argv[1], "ready").write_text("")
try:
    time.sleep(120)
except KeyboardInterrupt as exc:  # what hpo run's clean-up sees: the trial is failed, not left
    Path(sys.argv[1], "stopped").write_text(type(exc).__name__)
    sys.exit(143)
"""

PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], sys.argv[2]],
    env={**os.environ, "HPO_PARENT_PID": str(os.getpid())},
    start_new_session=True,  # as hpo.fleet.workers starts them: no signal of ours reaches it
)
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("pdeathsig", [True, False], ids=["prctl", "parent-check"])
def test_a_worker_whose_parent_is_killed_stops_cleanly(tmp_path, pdeathsig):
    worker = WORKER.format(pdeathsig=pdeathsig)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, worker, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    child = int(parent.stdout.readline())
    try:
        end = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert (tmp_path / "ready").exists(), "the worker did not start"
        parent.kill()  # SIGKILL: nothing can be forwarded
        parent.wait()
        end = time.monotonic() + 30
        while _alive(child) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(child), "the worker runs on as an orphan"
        assert (tmp_path / "stopped").read_text() == "Terminated"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


# ---- a link's target folders are never created ------------------------------------------------
def test_writing_through_a_dangling_link_creates_no_folder_anywhere(tmp_path):
    from hpo.common.paths import atomic_write_text

    (tmp_path / "work").mkdir()
    link = tmp_path / "work" / "best.yaml"
    link.symlink_to(tmp_path / "nowhere" / "dir" / "best.yaml")
    with pytest.raises(UserError, match="whose folder .*nowhere/dir does not exist; nothing"):
        atomic_write_text(link, "epochs: 1\n")
    assert not (tmp_path / "nowhere").exists()
    assert link.is_symlink() and sorted(os.listdir(tmp_path / "work")) == ["best.yaml"]
    (tmp_path / "nowhere" / "dir").mkdir(parents=True)  # once the folder is there: written through
    atomic_write_text(link, "epochs: 1\n")
    assert link.is_symlink() and (tmp_path / "nowhere/dir/best.yaml").read_text() == "epochs: 1\n"


def test_an_exported_model_is_written_through_a_link_as_the_yaml_is(tmp_path):
    from hpo.records.checkpoints import copy_checkpoint

    store = open_artifact_store(tmp_path / "artifacts")
    study = optuna.create_study(direction="maximize")
    run_trial(study, CheckpointKeeper(store, keep=1), 0.5, tmp_path)
    (tmp_path / "models").mkdir()
    link = tmp_path / "best.pt"
    link.symlink_to(tmp_path / "models" / "kept.pt")
    copy_checkpoint(study.trials[0], study._storage, store, link)
    assert link.is_symlink() and (tmp_path / "models/kept.pt").read_bytes() == b"weights 0"


# ---- a journal line that is not a record, anywhere -------------------------------------------
def test_a_bad_record_inside_a_journal_is_refused_with_a_repair_that_works(tmp_path):
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = path.read_bytes()
    first = whole.index(b"\n") + 1
    damaged = whole[:first] + b"garbage line\n" + whole[first:]
    path.write_bytes(damaged)
    with pytest.raises(StorageError) as exc:
        open_storage(str(path))
    message = str(exc.value)
    assert f"line 2 (bytes {first}-{first + 13}) is not an Optuna journal record" in message
    assert "keeping all" in message and "sed " in message  # only the bad line goes
    assert path.read_bytes() == damaged and os.listdir(tmp_path) == ["study.log"]
    subprocess.run(message.split(" with: ", 1)[1], shell=True, check=True, cwd=tmp_path)
    assert path.read_bytes() == whole  # every record kept, and a copy of the damaged file
    assert (tmp_path / "study.log.bak").read_bytes() == damaged
    again = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert len(again.trials) == 2


# ---- dropped baselines are named, and can be queued again ------------------------------------
def test_a_dropped_baseline_is_named_and_queued_again_on_request():
    from hpo.search.baselines import dropped_lines, queue_dropped
    from hpo.views.listing import show_text

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": "hand-tuned"})
    for i in range(4):  # the first try and three retries, all interrupted
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, state=TrialState.FAIL)
        if i < 3:
            study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": "hand-tuned", "retry_of": i})
    study.add_trial(
        optuna.trial.create_trial(
            value=0.4,
            params={"x": 0.2},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        )
    )
    (line,) = dropped_lines(study.trials)
    assert "baseline hand-tuned was dropped: its 4 tries (trials 0, 1, 2, 3)" in line
    assert "--retry-baselines" in line
    assert line in " ".join(show_text(study).split())  # show wraps at the terminal's width
    assert queue_dropped(study) == ["hand-tuned"]
    queued = study.trials[-1]
    assert queued.state == TrialState.WAITING
    assert queued.user_attrs == {"baseline": "hand-tuned"}
    assert queued.system_attrs["fixed_params"] == {"x": 0.5}
    assert dropped_lines(study.trials) == []


# ---- refusals come before the model libraries load -------------------------------------------
REFUSE = """
import sys
from {module} import main
try:
    main({argv!r})
except SystemExit as exc:
    print(exc.code, "torch" in sys.modules, "open_clip" in sys.modules)
"""


@pytest.mark.parametrize(
    "module, argv",
    [
        ("hpo.cli", ["run", "--backbone", "tiny-vit", "--study", "../x"]),
        ("hpo.cli", ["run", "--backbone", "tiny-vit", "--data", ".", "--set", "epoch=2"]),
        ("hpo.cli", ["run", "--backbone", "tiny-vit", "--epochs", "1", "--set", "epochs=3"]),
        (
            "handreid.cli",
            ["train", "--config", "CONFIG", "--set", "epoch=2"],
        ),
        ("hpo.cli", ["run", "--backbone", "tiny-vit", "--data", ".", "--device", "tpu"]),
        ("hpo.cli", ["confirm", "--top", "0"]),
        ("hpo.cli", ["confirm", "--seeds", "1"]),
        ("hpo.cli", ["confirm", "--workers", "2"]),
        ("hpo.cli", ["confirm", "--device", "tpu"]),
        ("handreid.cli", ["evaluate", "--floors"]),
        ("handreid.cli", ["evaluate", "--checkpoint", "missing.pt"]),
        ("handreid.cli", ["evaluate", "--floors", "--config", "CONFIG", "--device", "tpu"]),
    ],
    ids=[
        "hpo-study-name",
        "hpo-set-key",
        "hpo-epochs-twice",
        "train-set-key",
        "hpo-run-device",
        "confirm-top-0",
        "confirm-seeds-1",
        "confirm-workers-on-sqlite",
        "confirm-device",
        "evaluate-floors-without-config",
        "evaluate-missing-checkpoint",
        "evaluate-floors-device",
    ],
)
def test_a_refusal_that_needs_no_model_loads_neither_torch_nor_open_clip(tmp_path, module, argv):
    config = Path(__file__).resolve().parents[1] / "handreid" / "configs" / "tiny-vit.yaml"
    argv = [str(config) if a == "CONFIG" else a for a in argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", REFUSE.format(module=module, argv=argv)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


# ---- a full disk while `handreid synth` writes: one line naming the file, no set left ------------
def test_a_full_disk_while_synth_writes_names_the_file_and_leaves_no_set(
    tmp_path, monkeypatch, capsys
):
    from handreid.cli import main

    real_write = Path.write_bytes
    written = []

    def full_disk(self, data):
        written.append(self.name)
        if len(written) < 5:
            return real_write(self, data)
        with open(self, "wb") as fh:  # a truncated file is left, as a real full disk leaves it
            fh.write(data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # write() names no file

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    out = tmp_path / "new" / "deeper" / "data"
    argv = ["synth", "--ids", "2", "--per-id", "2", "--size", "16", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _, err = capsys.readouterr()
    assert exc.value.code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"error: cannot write the synthetic set {out}: {out}/Hands/Hand_")
    assert line.endswith(": No space left on device; no partial set was left")
    assert list(tmp_path.iterdir()) == [], "no set, no temporary, no folders it created"
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exc:  # nothing a later run would trust or refuse
        main(argv)
    assert exc.value.code == 0 and (out / "HandInfo.csv").is_file()


# ---- SIGTERM ends a command even while a thread is stuck in a read ---------------------------
STUCK_DECODE = """
import sys, threading
from pathlib import Path
import handreid.data.cache as cache

real, ready = cache.decode_image, Path(sys.argv[1])


def decode(path, size):
    if threading.current_thread() is not threading.main_thread():
        ready.touch()
        threading.Event().wait()  # as a read from a hung file system: never returns
    return real(path, size)


cache.decode_image = decode
from hpo.cli import main

main(sys.argv[2:])
"""


@pytest.mark.integration  # starts a command in its own process
def test_sigterm_ends_hpo_run_with_143_while_a_decoding_thread_is_stuck(tmp_path, synthetic_root):
    import signal
    import time

    ready = tmp_path / "stuck"
    argv = ["run", "--backbone", "tiny-vit", "--data", str(synthetic_root), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HANDREID_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_DECODE, str(ready), *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)  # before: it waited for the thread for good
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err, err
