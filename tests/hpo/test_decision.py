"""One answer everywhere after ``hpo run`` + ``hpo confirm`` + ``hpo report``: the confirmed
winner heads show, ls, the note, the report and export; every line fits 80 columns; no study
or trial attribute is long, so the plain ``optuna`` CLI stays readable on our studies."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo.decide.confirm import companion_name, current
from hpo.records import optuna_internals
from hpo.views.headline import decision, headline
from tests.hpo.conftest import DEMO
from tests.hpo.conftest import hpo_process as hpo
from tests.hpo.test_dashboard import (  # noqa: F401 - dashboard is a fixture
    _browse,
    _not_blank,
    _page_facts,
    dashboard,
    needs_chromium,
)

pytestmark = pytest.mark.integration
NAME = DEMO


def _study(confirmed, name: str = NAME) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=confirmed["storage"])


def test_the_confirmed_winner_heads_show_ls_note_report_and_export(confirmed):
    from optuna_dashboard import get_note

    root, base = confirmed["root"], ["--storage", confirmed["storage"]]
    study = _study(confirmed)
    d = decision(study)
    assert d["confirmed"] and d["winner"] == current(study)["winner"]
    line = headline(study)
    number = f"{d['mean']:.3f}"
    assert line.startswith("confirmed winner: ") and number in line
    assert any(w in line for w in ("better than", "not distinguishable from", "worse than"))

    show = hpo(root, "show", "--study", NAME, *base, columns=400).stdout
    assert show.splitlines()[0] == line
    ls = hpo(root, "ls", *base).stdout.splitlines()
    lo, hi = d["ci"]  # an interval as [lo, hi]; ± is kept for a standard error
    assert ls[1].startswith(NAME)  # under the table's header
    assert f"#{d['winner']} {number} [{lo:.3f}, {hi:.3f}]" in ls[1]
    assert ls[2].startswith("  " + companion_name(NAME))  # grouped under its parent
    note = get_note(study)
    assert f"**{line}**" in note
    report = (root / "studies" / NAME / "report" / "report.html").read_text()
    assert "<h2>Confirmation</h2>" in report and 'id="fig-confirm"' in report
    assert html.escape(line) in report
    export = hpo(root, "export", "--study", NAME, *base, columns=400).stdout
    assert f"(trial {d['winner']}," in export and line in export
    for text in (show, note, report, export):
        assert "`hpo confirm` can tell" not in text  # the stale advice is gone

    companion = _study(confirmed, companion_name(NAME))
    assert companion.user_attrs["confirm_of"] == NAME
    assert f"confirm runs of study {NAME}" in get_note(companion)


def test_show_trials_and_the_confirm_table_fit_80_columns(confirmed):
    root, base = confirmed["root"], ["--storage", confirmed["storage"]]
    study = _study(confirmed)
    outputs = {
        "show": hpo(root, "show", "--study", NAME, *base).stdout,
        "trials": hpo(root, "trials", "--study", NAME, *base).stdout,
        "show --trial": hpo(root, "show", "--study", NAME, "--trial", "0", *base).stdout,
        "confirm": confirmed["confirm_out"],
    }
    assert "vs baseline" in outputs["confirm"] and "confirmed [95% CI]" in outputs["show"]
    for name, text in outputs.items():
        wide = [line for line in text.splitlines() if len(line) > 80]
        assert not wide, f"{name}: {wide}"
        assert "+-" not in text and "…" not in text  # one sign; nothing cut
    # every template's code is shown whole (a trial stores the code; the trainer, the full text)
    shown = " ".join(outputs["trials"].split())
    for t in study.trials:
        template = t.params.get("prompt_template")
        if template:
            assert " ".join(template.split()) in shown


def test_no_attribute_is_long_and_the_optuna_cli_stays_readable(confirmed):
    """The space, the identity lists and the confirm summary are study records (system
    attributes, see hpo.records.optuna_internals), which workers read and ``optuna`` does not print."""
    from hpo.records.optuna_internals import study_record

    storage = confirmed["storage"]
    for name in (NAME, companion_name(NAME)):
        study = _study(confirmed, name)
        for key, value in study.user_attrs.items():
            assert len(json.dumps(value)) <= 200, (name, key)
        for t in study.trials:
            for key, value in t.user_attrs.items():
                assert len(json.dumps(value)) <= 200, (name, t.number, key)
    study = _study(confirmed)
    assert study_record(study, "space")["space"] and study_record(study, "identities")
    assert study_record(study, "confirm")["winner"] == current(study)["winner"]

    optuna_cli = Path(sys.executable).with_name("optuna")
    env = {**os.environ, "COLUMNS": "80"}
    studies = subprocess.run(
        [optuna_cli, "studies", "--storage", storage],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert NAME in studies
    assert max(map(len, studies.splitlines())) < 400, studies
    # the trials table puts every parameter of a trial on one row, whatever the attributes;
    # its YAML form has one attribute a line, and none of ours is long
    trials = subprocess.run(
        [optuna_cli, "trials", "--storage", storage, "--study-name", NAME, "-f", "yaml"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "user_attrs" in trials
    assert max(map(len, trials.splitlines())) < 400


@needs_chromium
def test_pages_after_confirm_fit_and_name_the_winner(confirmed, dashboard):  # noqa: F811
    """The study page (with its note), a trial page, the confirm study's page and the report,
    as a user sees them at 1280 px: no sideways overflow (the Study User Attributes card
    included) and the confirmed winner's value on the study page and in the report."""
    root = confirmed["root"]
    study = _study(confirmed)
    number = f"{decision(study)['mean']:.3f}"
    address = dashboard(confirmed["storage"])
    pid = optuna_internals.study_id(study)
    cid = optuna_internals.study_id(_study(confirmed, companion_name(NAME)))
    shots = root / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = {
        "study": (f"{address}/studies/{pid}", "val mAP ± SE per trial"),
        "note": (f"{address}/studies/{pid}/note", "confirmed winner"),
        "trial": (f"{address}/studies/{pid}/trials", "curves.png"),
        "companion": (f"{address}/studies/{cid}/note", f"confirm runs of study {NAME}"),
        "report": ((root / "studies" / NAME / "report" / "report.html").as_uri(), "Confirmation"),
    }
    for name, (url, wait_for) in pages.items():
        facts = _page_facts(url, wait_for=wait_for)
        # (1 px: the dashboard's trial page rounds a sub-pixel width up on some runs)
        assert facts["scroll"] <= facts["client"] + 1, (name, facts["wide"])
        if name in ("note", "report"):
            assert number in facts["text"], name
        if name == "study":  # the Study User Attributes card, within the window (above)
            assert "space_params" in facts["text"] and "space_digest" not in facts["text"]
        _browse(url, shots / f"{name}.png", height=3000 if name in ("report", "study") else 1200)
        _not_blank(shots / f"{name}.png")
