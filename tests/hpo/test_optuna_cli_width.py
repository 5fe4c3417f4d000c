"""The plain ``optuna`` CLI stays readable on our studies after ``hpo run`` + ``hpo confirm``:
our bookkeeping (workers, digests, timings, per-run values) lives in system attributes, which
``optuna trials`` does not print, and every worker still reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo.common.attrs import BOOKKEEPING, attrs_of
from hpo.records.companion import companion_name
from tests.hpo.conftest import DEMO

pytestmark = pytest.mark.integration


def _longest(*args: str) -> int:
    cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(cli), *args], capture_output=True, text=True, check=True).stdout
    return max(map(len, out.splitlines()), default=0)


@pytest.mark.parametrize("name", [DEMO, companion_name(DEMO)])
def test_optuna_trials_yaml_studies_and_user_attributes_stay_short(confirmed, name):
    """The table's width is now its parameters' (a whole prompt template and floats at full
    precision); the user attributes column was about 560 of its 1,000 characters."""
    storage = confirmed["storage"]
    trials = ["trials", "--storage", storage, "--study-name", name]
    assert _longest(*trials, "-f", "yaml") < 400
    assert _longest("studies", "--storage", storage) < 400
    study = optuna.load_study(study_name=name, storage=storage)
    assert max(len(str(t.user_attrs)) for t in study.trials) < 240


def test_bookkeeping_is_out_of_the_user_attributes_and_still_read(confirmed):
    study = optuna.load_study(study_name=DEMO, storage=confirmed["storage"])
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done
    for t in done:
        assert not BOOKKEEPING & set(t.user_attrs), sorted(BOOKKEEPING & set(t.user_attrs))
        attrs = attrs_of(t)
        assert attrs["worker"] and attrs["seconds"] > 0 and attrs["fold_values"]
        assert "value_se" in t.user_attrs  # what a researcher reads stays visible
