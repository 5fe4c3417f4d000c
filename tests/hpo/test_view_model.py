"""The views read a study once (``hpo.views.model``): every view renders from the read model
with the storage gone, and each command loads the study exactly once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import optuna
import pytest

from hpo.views import confirm_report, export, figures, headline, listing, model, report
from tests.hpo.test_listing import hpo


class _Gone:
    """A storage that fails every call: a view that reaches back into storage trips on it."""

    def __getattr__(self, name):
        raise AssertionError(f"a view read the storage after the read model was loaded: {name}")


def _render(view) -> dict[str, object]:
    figs = figures.study_figures(view)
    trial = export.pick_trial(view)
    return {
        "show": listing.show_text(view),
        "json": json.dumps(listing.study_summary(view), sort_keys=True),
        "headline": headline.headline(view),
        "short": headline.short(view),
        "trials": [t.number for t in listing.select(view, ["complete", "pruned"])],
        "epochs": listing.epoch_rows(view, listing.find_trial(view, 0)),
        "figures": sorted(figs.figures),
        "note": report.study_note(view).rsplit("Summary refreshed", 1)[0],
        "html": len(report.render_html(view, figs)) > 0,
        "header": [  # the export time is the clock's, not the view's
            line
            for line in export.export_header(view, trial, "sqlite:///x.db")
            if not line.startswith("exported ")
        ],
        "confirm": confirm_report.section(view)[:3],
    }


def test_every_view_renders_from_the_read_model_with_the_storage_gone(
    stored,
    tmp_path,
):
    url, _ = stored
    copy = tmp_path / "copy.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{copy}")
    live = _render(model.load_view(study))

    view = model.load_view(study)
    study._storage = _Gone()  # the study object can no longer read
    copy.unlink()  # and neither can a new connection to its database
    assert _render(view) == live
    assert view.confirm is not None and view.confirm["winner"] is not None
    assert view.space is not None and "lr_modules" in view.space.names
    assert {t.user_attrs.get("candidate") for t in view.companion_trials} >= {0}


def test_the_read_model_is_one_moment_of_the_study(stored):
    url, _ = stored
    study = optuna.load_study(study_name="s", storage=url)
    view = model.load_view(study)
    n = len(study.get_trials(deepcopy=False))
    assert len(view.trials) == n
    assert [t.number for t in view.trials] == list(range(n))
    assert model.as_view(view) is view and model.as_view(view.study) is view
    assert view.trial(n) is None and view.trial(0).number == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["show"],
        ["show", "--json"],
        ["show", "--trial", "0"],
        ["trials"],
        ["trials", "--json"],
        ["export", "--out", "{tmp}/best.yaml"],
        ["report", "--out", "{tmp}/report", "--no-png", "--no-artifacts"],
    ],
)
def test_each_command_reads_the_study_once(
    stored,
    argv,
    tmp_path,
    capsys,
    monkeypatch,
):
    url, _ = stored
    monkeypatch.chdir(tmp_path)
    loads = []
    real = model.load_view

    def counted(study, store=None):
        loads.append(study.study_name)
        return real(study, store)

    monkeypatch.setattr(model, "load_view", counted)
    args = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = hpo([*args, "--storage", url], capsys)
    assert code == 0, err
    assert loads == ["s"]


def test_reading_the_study_says_nothing_to_the_user(stored, tmp_path):
    """Making the in-memory copy is no event of the user's: a command prints its own lines
    only (Optuna logs each study it creates, the copy included, unless told otherwise)."""
    url, _ = stored
    for argv in (["show"], ["trials"], ["export", "--out", str(tmp_path / "b.yaml")]):
        done = subprocess.run(
            [sys.executable, "-m", "hpo.cli", *argv, "--storage", url],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "created in memory" not in done.stderr + done.stdout
