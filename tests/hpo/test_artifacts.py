"""The space and trial configs as artifacts with short attributes; artifact listing and
replacement on Optuna's public API."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta

from handreid.config import TrainConfig
from handreid.errors import UserError
from hpo.records.artifacts import (
    ARTIFACTS_DIR,
    artifact_metas,
    config_attrs,
    load_space_dict,
    load_trial_config,
    open_artifact_store,
    put_artifact,
    record_config,
    save_space,
)
from hpo.records.space import load_space
from hpo.search.study import STUDIES_DIR, space_digest

optuna.logging.set_verbosity(optuna.logging.ERROR)
CFG = TrainConfig.from_dict(
    {
        "model": "tiny-vit",
        "pretrained": "none",
        "image_size": [64, 64],
        "prompt_template": "A detailed photo of {}'s {aspect} hand for identification.",
    }
)


@pytest.fixture
def store(tmp_path):
    return open_artifact_store(tmp_path / "artifacts")


def new_study(tmp_path, name="s"):
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path}/s.db")


def test_artifacts_live_beside_the_studies():
    assert ARTIFACTS_DIR == STUDIES_DIR / "artifacts"


def test_config_attrs_are_short_and_the_yaml_is_the_whole_config():
    ca = config_attrs(CFG)
    assert len(json.dumps(CFG.to_dict())) > 1000  # what the trial page used to show on one line
    assert set(ca.attrs) == {"config_sha256"} and all(len(v) <= 16 for v in ca.attrs.values())
    assert TrainConfig.from_dict(yaml.safe_load(ca.yaml)) == CFG
    assert config_attrs(CFG.replace(seed=CFG.seed + 1)).attrs != ca.attrs


def test_trial_config_round_trip_through_the_artifact(tmp_path, store):
    study = new_study(tmp_path)
    trial = study.ask()
    record_config(trial, CFG, store)
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    assert "config" not in frozen.user_attrs
    [meta] = get_all_artifact_meta(frozen, storage=study._storage)
    assert meta.filename == "config.yaml"
    loaded = load_trial_config(frozen, storage=study._storage, store=store)
    assert TrainConfig.from_dict(loaded) == CFG
    assert load_trial_config(frozen, storage=study._storage) is None  # no store, no config


def test_old_trials_keep_their_config_attribute(tmp_path):
    study = new_study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("config", CFG.to_dict())
    study.tell(trial, 0.5)
    assert load_trial_config(study.trials[0], storage=study._storage) == CFG.to_dict()


def test_trial_config_that_does_not_match_its_digest_is_refused(tmp_path, store):
    study = new_study(tmp_path)
    trial = study.ask()
    record_config(trial, CFG, store)
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    [meta] = get_all_artifact_meta(frozen, storage=study._storage)
    (tmp_path / "artifacts" / meta.artifact_id).write_text("model: rn50\n")
    with pytest.raises(UserError, match="config.yaml does not match its config_sha256"):
        load_trial_config(frozen, storage=study._storage, store=store)


def test_space_as_artifact_with_a_short_attribute(tmp_path, store):
    space = load_space("tiny-vit")
    study = new_study(tmp_path)
    study.set_user_attr("space_digest", space_digest(space))
    save_space(study, store, space)
    assert "space" not in study.user_attrs
    assert (
        study.user_attrs["space_params"] == f"{len(space.names)} tuned parameters, see space.yaml"
    )
    assert load_space_dict(study, store) == space.to_dict()
    assert load_space_dict(study) is None  # the artifact needs its store
    save_space(study, store, space)  # again: still one space.yaml
    assert [m.filename for m in get_all_artifact_meta(study)] == ["space.yaml"]


def test_space_missing_from_the_store_is_a_clear_error(tmp_path, store):
    study = new_study(tmp_path)
    save_space(study, store, load_space("tiny-vit"))
    for f in (tmp_path / "artifacts").iterdir():
        f.unlink()  # the artifact folder was not copied along with the database
    with pytest.raises(UserError, match="study 's': cannot read space.yaml from the artifact"):
        load_space_dict(study, store)


def test_space_from_the_old_attribute_or_refused_when_the_artifact_was_swapped(tmp_path, store):
    space = load_space("tiny-vit")
    old = new_study(tmp_path, "old")
    old.set_user_attr("space", space.to_dict())
    assert load_space_dict(old) == space.to_dict()

    study = new_study(tmp_path, "new")
    study.set_user_attr("space_digest", space_digest(space))
    save_space(study, store, load_space("tiny-rn"))  # not the space the study was made with
    with pytest.raises(UserError, match="does not match the study's space_digest"):
        load_space_dict(study, store)


def test_put_artifact_replaces_in_place(tmp_path, store):
    study = new_study(tmp_path)
    path = tmp_path / "report.html"
    path.write_text("one")
    first = put_artifact(study, store, path)
    path.write_text("two")
    assert put_artifact(study, store, path) == first
    assert (tmp_path / "artifacts" / first).read_text() == "two"
    assert len(get_all_artifact_meta(study)) == 1


def test_listing_tolerates_entries_of_deleted_artifacts(tmp_path, store):
    study = optuna.create_study(
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
        )
    )
    path = tmp_path / "best.yaml"
    path.write_text("model: tiny-vit\n")
    put_artifact(study, store, path)
    # the entry optuna-dashboard's "delete" button writes; a journal file cannot drop it
    study._storage.set_study_system_attr(study._study_id, "artifacts:gone", json.dumps(None))
    assert [m.filename for m in artifact_metas(study)] == ["best.yaml"]
    path.write_text("model: rn50\n")
    put_artifact(study, store, path)
    assert [m.filename for m in artifact_metas(study)] == ["best.yaml"]
