"""Pins the Optuna and optuna-dashboard behaviour that hpo/records/optuna_internals.py relies on.
When one of these fails after an upgrade, fix that module (or drop it if Optuna now offers
a public way)."""

from __future__ import annotations

import json

import optuna
import plotly.graph_objects as go
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna_dashboard import save_plotly_graph_object
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from hpo.records import optuna_internals as oi

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _study(tmp_path, kind: str) -> optuna.Study:
    storage = {
        "memory": None,
        "sqlite": f"sqlite:///{tmp_path}/s.db",
        "journal": optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
        ),
    }[kind]
    return optuna.create_study(storage=storage)


def test_artifact_entries_are_study_system_attrs_with_our_prefix(tmp_path):
    study = _study(tmp_path, "sqlite")
    (tmp_path / "a.txt").write_text("x")
    store = FileSystemArtifactStore(str(tmp_path))
    artifact_id = upload_artifact(
        artifact_store=store, file_path=str(tmp_path / "a.txt"), study_or_trial=study
    )
    attrs = oi.study_system_attrs(study)
    assert json.loads(attrs[oi.ARTIFACT_PREFIX + artifact_id])["filename"] == "a.txt"


def test_optuna_still_fails_on_a_null_artifact_entry(tmp_path):
    """Why hpo.records.artifacts.artifact_metas has a fallback: if this starts passing, it can go."""
    study = _study(tmp_path, "sqlite")
    study._storage.set_study_system_attr(
        study._study_id, oi.ARTIFACT_PREFIX + "x", json.dumps(None)
    )
    assert oi.artifact_tombstones(study) == [oi.ARTIFACT_PREFIX + "x"]
    with pytest.raises(TypeError):
        get_all_artifact_meta(study)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_saved_figures_are_deleted_where_the_storage_can(tmp_path, kind):
    study = _study(tmp_path, kind)
    big = go.Figure(go.Scatter(x=list(range(2000)), y=list(range(2000))))  # several chunks
    save_plotly_graph_object(study, big, graph_object_id="old")
    save_plotly_graph_object(study, go.Figure(), graph_object_id="kept")
    keys = oi.figure_keys(study, ["old"])
    assert len(keys) > 1 and all(k.startswith("dashboard:plot_data:old:") for k in keys)
    assert json.loads(oi.figure_json(study, "old")) == json.loads(big.to_json())
    assert oi.figure_json(study, "never-saved") is None
    deleted = oi.delete_study_system_attrs(study, keys)
    assert deleted == (kind != "journal")
    shown = get_plotly_graph_objects(oi.study_system_attrs(study))  # what the dashboard lists
    assert set(shown) == ({"kept"} if deleted else {"old", "kept"})
    assert study.user_attrs == {} and len(study.trials) == 0  # nothing else touched


def test_deleting_nothing_is_a_no_op(tmp_path):
    assert oi.delete_study_system_attrs(_study(tmp_path, "journal"), []) is True


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_a_finished_trials_artifact_entry_is_deleted_where_the_storage_can(tmp_path, kind):
    study = _study(tmp_path, kind)
    store = FileSystemArtifactStore(str(tmp_path))
    (tmp_path / "checkpoint.pt").write_bytes(b"w")
    (tmp_path / "history.json").write_text("{}")
    trial = study.ask()
    ids = [
        upload_artifact(artifact_store=store, file_path=str(tmp_path / name), study_or_trial=trial)
        for name in ("checkpoint.pt", "history.json")
    ]
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    storage = oi.storage_of(study)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # why this is needed
        storage.set_trial_system_attr(frozen._trial_id, oi.ARTIFACT_PREFIX + ids[0], "null")
    deleted = oi.delete_trial_system_attrs(storage, frozen, [oi.ARTIFACT_PREFIX + ids[0]])
    assert deleted == (kind != "journal")
    if kind == "sqlite":  # another process reads the database afresh; this one caches the trial
        storage = optuna.storages.get_storage(f"sqlite:///{tmp_path}/s.db")
    names = [m.filename for m in get_all_artifact_meta(frozen, storage=storage)]
    assert names == (["checkpoint.pt", "history.json"] if not deleted else ["history.json"])
    after = optuna.load_study(study_name=study.study_name, storage=storage).trials[0]
    assert after.value == 1.0 and after.state == frozen.state  # nothing else touched


def test_study_records_live_in_system_attributes_and_old_studies_still_read(tmp_path):
    """What hpo.records.optuna_internals.study_record relies on: the storage's study system attributes
    round-trip JSON through a fresh load (another worker), and user attributes stay free of
    them; a study made before the move still reads its user attribute."""
    from hpo.records.optuna_internals import set_study_record, study_record

    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="r", storage=storage)
    set_study_record(study, "space", {"base": {"epochs": 2}, "space": {}})
    again = optuna.load_study(study_name="r", storage=storage)
    assert study_record(again, "space") == {"base": {"epochs": 2}, "space": {}}
    assert again.user_attrs == {}
    again.set_user_attr("confirm", {"winner": 3})  # as older versions stored it
    assert study_record(again, "confirm") == {"winner": 3}
    assert study_record(again, "identities", {}) == {}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_storage_file_has_one_identity_in_every_process_and_a_copy_another(tmp_path, kind):
    """Checkpoint ownership records hold this: two openings of one file (two workers, a
    parent and its children) must agree, a copy of the file must not."""
    (tmp_path / "copy").mkdir()

    def opened(folder):
        if kind == "sqlite":
            return optuna.storages.RDBStorage(f"sqlite:///{folder}/s.db")
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / "j.log"))
        )

    first, second, copy = opened(tmp_path), opened(tmp_path), opened(tmp_path / "copy")
    assert oi.storage_identity(first) == oi.storage_identity(second)
    assert oi.storage_identity(first).startswith(f"{kind}:")
    assert oi.storage_identity(copy) != oi.storage_identity(first)
    study = optuna.create_study(storage=first)
    assert oi.storage_identity(study) == oi.storage_identity(second)


def test_a_trial_record_is_read_back_and_neither_optuna_nor_the_dashboard_prints_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from optuna_dashboard._serializer import serialize_frozen_trial

    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="r", storage=storage)
    trial = study.ask()
    record = [{f"id{i}": [0.5, 3] for i in range(40)}]  # a confirm run's identity AP: ~600 chars
    oi.set_trial_record(trial, "run_identity_ap", record)
    study.tell(trial, 1.0)
    (frozen,) = optuna.load_study(study_name="r", storage=storage).trials
    assert oi.trial_record(frozen, "run_identity_ap") == record
    assert frozen.user_attrs == {}
    shown = json.dumps(serialize_frozen_trial(study._study_id, frozen, {}))
    assert "id39" not in shown
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run(
        [optuna_cli, "trials", "--storage", storage, "--study-name", "r", "-f", "yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "value: 1.0" in out and "id39" not in out
    # a trial stored before records moved keeps its user attribute, and is still read
    old = optuna.trial.create_trial(value=0.5, user_attrs={"run_identity_ap": record})
    assert oi.trial_record(old, "run_identity_ap") == record


def test_a_study_copied_into_memory_keeps_every_record_and_logs_nothing(tmp_path, capfd):
    """``copy_study_into`` (the read model of ``hpo.views.model``) on storage methods: every
    trial with its state, values, intermediate values and attributes, and the study's user and
    system attributes, without Optuna's "A new study created in memory" line."""
    from optuna.trial import TrialState

    from hpo.records.optuna_internals import copy_study_into, set_study_record, study_record

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="c")
        study.set_user_attr("backbone", "tiny-vit")
        set_study_record(study, "confirm", {"winner": 1})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        running = study.ask()
        running.report(0.5, 1)
        capfd.readouterr()
        dup = copy_study_into(study, optuna.storages.InMemoryStorage())
        out, err = capfd.readouterr()
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert "created" not in out + err
    assert dup.study_name == "c" and dup.user_attrs == {"backbone": "tiny-vit"}
    assert study_record(dup, "confirm") == {"winner": 1}
    got, want = dup.get_trials(), study.get_trials()
    assert [t.state for t in got] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    assert [(t.number, t.params, t.values, t.intermediate_values) for t in got] == [
        (t.number, t.params, t.values, t.intermediate_values) for t in want
    ]
