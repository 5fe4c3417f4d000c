"""Study and trial artifacts on Optuna's public artifact API: the report, the search space and
each trial's config live as files in an artifact store, not as long attributes.

Replacing a file keeps its artifact id and writes the new content into the store under it
(``ArtifactStore.write``), so no metadata entry is ever removed: Optuna has no public call for
that, and the ``null`` entries older versions wrote break ``get_all_artifact_meta``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.artifacts import (
    ArtifactMeta,
    download_artifact,
    get_all_artifact_meta,
    upload_artifact,
)
from optuna.trial import FrozenTrial

from handreid.config import TrainConfig
from handreid.errors import UserError
from hpo.common.attrs import attrs_of
from hpo.common.paths import STUDIES_DIR
from hpo.records import optuna_internals
from hpo.records.optuna_internals import set_attr
from hpo.records.space import SearchSpace, parse_space, space_digest

ARTIFACTS_DIR = STUDIES_DIR / "artifacts"
SPACE_FILE = "space.yaml"
CONFIG_FILE = "config.yaml"


_ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_artifact_id(artifact_id: object, owner: str) -> str:
    """``artifact_id`` when it is one Optuna makes (a UUID); otherwise a one-line UserError:
    an id such as ``../../cfg.yaml`` means the storage was edited, and the store must not be
    asked for it."""
    if isinstance(artifact_id, str) and _ARTIFACT_ID.fullmatch(artifact_id):
        return artifact_id
    raise UserError(
        f"{owner}: the artifact id {str(artifact_id)[:80]!r} recorded in the storage is not an "
        "Optuna artifact id (was the database edited?); refusing to read or remove it"
    )


def open_artifact_store(root: str | Path = ARTIFACTS_DIR):
    """A file-system artifact store (created if missing) that ``hpo dashboard`` serves."""
    from optuna.artifacts import FileSystemArtifactStore

    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create artifact folder {root}: {exc.strerror or exc}") from None
    return FileSystemArtifactStore(root)


def existing_artifact_store(root: str | Path = ARTIFACTS_DIR):
    """The store at ``root`` when that folder exists, else None (reading commands create
    nothing)."""
    return open_artifact_store(root) if Path(root).is_dir() else None


def artifact_metas(
    study_or_trial: optuna.Study | FrozenTrial, *, storage=None
) -> list[ArtifactMeta]:
    """``get_all_artifact_meta``, also for a study or trial holding entries of deleted artifacts."""
    try:
        return get_all_artifact_meta(study_or_trial, storage=storage)
    except TypeError:  # a null entry: an artifact deleted in the dashboard or by older hpo
        pass
    if isinstance(study_or_trial, optuna.Study):
        attrs = optuna_internals.study_system_attrs(study_or_trial)
    else:
        attrs = study_or_trial.system_attrs
    metas = []
    for key, value in attrs.items():
        meta = json.loads(value) if key.startswith(optuna_internals.ARTIFACT_PREFIX) else None
        if isinstance(meta, dict):
            metas.append(ArtifactMeta(**{k: meta.get(k) for k in ArtifactMeta.__annotations__}))
    return metas


def repair_artifact_entries(study: optuna.Study) -> int | None:
    """Delete the study's entries of deleted artifacts so ``get_all_artifact_meta`` works again.

    Returns how many were removed, or None when the storage (a journal file) cannot delete.
    """
    keys = optuna_internals.artifact_tombstones(study)
    if not keys:
        return 0
    return len(keys) if optuna_internals.delete_study_system_attrs(study, keys) else None


def put_artifact(study: optuna.Study, store, path: str | Path) -> str:
    """Upload ``path`` as a study artifact; a file of the same name already there is replaced
    in place (same artifact id, new content), so repeated uploads leave one entry."""
    path = Path(path)
    same = [m for m in artifact_metas(study) if m.filename == path.name]
    if not same:
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    with path.open("rb") as fh:
        store.write(same[0].artifact_id, fh)
    return same[0].artifact_id


def read_artifact(store, meta: ArtifactMeta, owner: str) -> str:
    """The text of one artifact (downloaded through a temporary file); a UserError naming
    ``owner`` (the study or trial) if the store no longer has it."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    check_artifact_id(meta.artifact_id, owner)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "artifact"
        try:
            download_artifact(
                artifact_store=store, file_path=str(target), artifact_id=meta.artifact_id
            )
            return target.read_text(encoding="utf-8")
        except (ArtifactNotFound, OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{owner}: cannot read {meta.filename} from the artifact store: {exc}"
            ) from None


def _upload_text(study_or_trial, store, name: str, text: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        if isinstance(study_or_trial, optuna.Study):
            return put_artifact(study_or_trial, store, path)
        return upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=study_or_trial
        )


# --- the search space: an artifact plus a short attribute -------------------------------------


def space_summary(space: SearchSpace | dict[str, Any]) -> str:
    """What the study's ``space_params`` attribute shows: how many parameters are tuned and
    where they are (a list of names made ``optuna studies`` rows 180 characters longer)."""
    space = space if isinstance(space, SearchSpace) else parse_space(space)
    n = len(space.names)
    return f"{n} tuned parameter{'s' * (n != 1)}, see {SPACE_FILE}"


def save_space(study: optuna.Study, store, space: SearchSpace | dict[str, Any]) -> str:
    """Store the search space as the study artifact ``space.yaml`` and its size as the
    short ``space_params`` attribute (the study keeps its ``space_digest``)."""
    data = space.to_dict() if isinstance(space, SearchSpace) else dict(space)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)
    artifact_id = _upload_text(study, store, SPACE_FILE, text)
    study.set_user_attr("space_params", space_summary(data))
    return artifact_id


def load_space_dict(study: optuna.Study, store=None) -> dict[str, Any] | None:
    """The study's search space as saved at creation: the ``space`` attribute of studies made
    before the space became an artifact, else the ``space.yaml`` artifact (checked against the
    study's ``space_digest``); None if the study has neither, or the store is not given."""
    from hpo.records.optuna_internals import study_record

    old = study_record(study, "space")
    if isinstance(old, dict):
        return old
    if store is None:
        return None
    metas = [m for m in artifact_metas(study) if m.filename == SPACE_FILE]
    if not metas:
        return None
    owner = f"study {study.study_name!r}"
    try:
        data = yaml.safe_load(read_artifact(store, metas[0], owner))
    except yaml.YAMLError:
        raise UserError(f"{owner}: {SPACE_FILE} in the artifact store is not valid YAML") from None
    from hpo.records.optuna_internals import study_record

    digest = study_record(study, "space_digest")
    source = f"study {study.study_name} {SPACE_FILE}"
    if digest and space_digest(parse_space(data, source=source)) != digest:
        raise UserError(
            f"study {study.study_name!r}: {SPACE_FILE} in the artifact store does not match the "
            "study's space_digest; was the artifact folder replaced?"
        )
    return data


# --- a trial's config: a YAML artifact plus a short attribute ---------------------------------


@dataclass(frozen=True)
class ConfigAttrs:
    attrs: dict[str, str]  # short user attributes for the trial page
    yaml: str  # the complete config, stored as the trial artifact config.yaml


def config_attrs(cfg: TrainConfig) -> ConfigAttrs:
    """The trial's resolved config as a short attribute (a digest that tells identical configs
    apart) plus the YAML text that ``handreid train --config`` runs as it is."""
    text = cfg.to_yaml()
    return ConfigAttrs({"config_sha256": hashlib.sha256(text.encode()).hexdigest()[:12]}, text)


def record_config(trial: optuna.Trial, cfg: TrainConfig, store) -> str:
    """Set the short config attribute on a running trial and upload ``config.yaml`` for it."""
    ca = config_attrs(cfg)
    for key, value in ca.attrs.items():
        set_attr(trial, key, value)
    return _upload_text(trial, store, CONFIG_FILE, ca.yaml)


def load_trial_config(trial: FrozenTrial, *, storage, store=None) -> dict[str, Any] | None:
    """A trial's resolved config: the ``config`` attribute of older trials, else its
    ``config.yaml`` artifact (checked against ``config_sha256``); None if neither is there."""
    old = attrs_of(trial).get("config")
    if isinstance(old, dict):
        return old
    if store is None:
        return None
    metas = [m for m in artifact_metas(trial, storage=storage) if m.filename == CONFIG_FILE]
    if not metas:
        return None
    text = read_artifact(store, metas[0], f"trial {trial.number}")
    digest = attrs_of(trial).get("config_sha256")
    if digest and hashlib.sha256(text.encode()).hexdigest()[:12] != digest:
        raise UserError(f"trial {trial.number}: {CONFIG_FILE} does not match its config_sha256")
    return yaml.safe_load(text)
