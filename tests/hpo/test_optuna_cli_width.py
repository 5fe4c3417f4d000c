"""The plain ``optuna`` CLI stays readable on our studies after ``hpo run`` + ``hpo confirm``:
our bookkeeping (workers, digests, timings, per-run values) lives in system attributes, which
``optuna trials`` does not print, and every worker still reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from hpo.common.attrs import BOOKKEEPING, attrs_of
from hpo.records.companion import companion_name
from tests.hpo.conftest import DEMO, hpo_process

pytestmark = pytest.mark.integration


def _longest(*args: str) -> int:
    cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(cli), *args], capture_output=True, text=True, check=True).stdout
    return max(map(len, out.splitlines()), default=0)


@pytest.mark.parametrize("name", [DEMO, companion_name(DEMO)])
def test_optuna_trials_table_yaml_studies_and_user_attributes_stay_short(confirmed, name):
    """The default table was about 600 characters wide: a whole prompt template and floats at
    full precision in its params column, Rank-1/5/10 at full precision in its user attributes.
    Templates are stored by code, floats are drawn at 3 significant digits, and the Rank-k
    values and the best epoch are bookkeeping (``hpo.common.attrs``)."""
    storage = confirmed["storage"]
    trials = ["trials", "--storage", storage, "--study-name", name]
    assert _longest(*trials) < 400  # the default format: a table
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


def test_params_are_codes_and_short_floats_and_the_export_has_the_template(confirmed, tmp_path):
    from hpo.records.configs import study_space

    storage = confirmed["storage"]
    study = optuna.load_study(study_name=DEMO, storage=storage)
    template = {p.name: p for p in study_space(study).params}["prompt_template"]
    drawn = [t for t in study.trials if t.params and "baseline" not in t.user_attrs]
    assert drawn
    for t in (t for t in study.trials if t.params):
        assert t.params["prompt_template"] in template.choices  # a code, not the sentence
        for key in ("rank1", "rank5", "rank10", "best_epoch"):
            assert key not in t.user_attrs
            assert t.state.name != "COMPLETE" or key in attrs_of(t)
    for t in drawn:
        assert t.params["lr_modules"] == float(f"{t.params['lr_modules']:.3g}")
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    out = tmp_path / "best.yaml"
    hpo_process(
        confirmed["root"],
        "export",
        "--study",
        DEMO,
        "--trial",
        str(best.number),
        "--storage",
        storage,
        "--out",
        str(out),
    )
    exported = yaml.safe_load(out.read_text())
    assert exported["prompt_template"] == template.value_of(best.params["prompt_template"])
    assert "{aspect} hand" in exported["prompt_template"]
    assert exported["lr_modules"] == best.params["lr_modules"]  # trained = stored = exported
