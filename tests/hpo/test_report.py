"""Figures, dashboard note and the standalone HTML report, on fast studies made of fake trials."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from hpo import report
from hpo.cli import main
from hpo.report import FIGURES, NOTE_MARKER, annotate_study, study_figures, write_report

optuna.logging.set_verbosity(optuna.logging.ERROR)


def fake_study(
    storage=None,
    name: str = "fake",
    n: int = 6,
    params: tuple[str, ...] = ("lr", "classifier"),
    pruned_every: int = 3,
) -> optuna.Study:
    """Trials shaped like the objective's: per-epoch val mAP, metric user attrs, some pruned."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    for key, value in {
        "command": "hpo run --backbone tiny-vit --trials 6",
        "backbone": "tiny-vit",
        "data": "/data/synthetic",
        "created": "2026-01-01 00:00:00",
    }.items():
        study.set_user_attr(key, value)
    for i in range(n):
        t = study.ask()
        value = 0.5
        if "lr" in params:
            value += 10 * t.suggest_float("lr", 1e-5, 1e-2, log=True)
        if (
            "classifier" in params
            and t.suggest_categorical("classifier", ["linear", "arcface"]) == "arcface"
        ):
            value += t.suggest_float("arcface_margin", 0.1, 0.5) / 10
        for epoch in (1, 2, 3):
            t.report(value * epoch / 3, epoch)
        for key, metric in {
            "rank1": value + 0.1,
            "rank5": 0.9,
            "rank10": 1.0,
            "epochs_run": 3,
            "seconds": 1.5,
        }.items():
            t.set_user_attr(key, metric)
        if pruned_every and i % pruned_every == pruned_every - 1:
            study.tell(t, state=TrialState.PRUNED)
        else:
            study.tell(t, value)
    return study


def test_four_figures_with_our_titles():
    study = fake_study()
    figs = study_figures(study)
    assert list(figs.figures) == list(FIGURES) and figs.skipped == {}
    for name, fig in figs.figures.items():
        assert fig.layout.title.text == FIGURES[name]
    # one line per trial in the pruning picture, pruned ones included
    assert len(figs.figures["intermediate"].data) == 6


@pytest.mark.parametrize(
    "n, params, skipped",
    [
        (1, ("lr", "classifier"), {"importances"}),  # importances need 2 completed trials
        (4, ("lr",), set()),  # one parameter: its importance is simply 1
        (3, (), {"importances", "parallel"}),  # nothing tuned
    ],
)
def test_small_studies_skip_what_cannot_be_drawn(n, params, skipped):
    figs = study_figures(fake_study(n=n, params=params, pruned_every=0))
    assert set(figs.skipped) == skipped
    assert set(figs.figures) == set(FIGURES) - skipped
    if "importances" in figs.figures:
        assert list(figs.figures["importances"].data[0].y) == list(params)


def test_no_completed_trial_still_gives_the_pruning_picture():
    figs = study_figures(fake_study(n=2, pruned_every=1))
    assert list(figs.figures) == ["intermediate"]
    assert figs.skipped["history"] == "no completed trial yet"


def test_note_and_figures_saved_in_the_study_and_user_notes_kept():
    study = fake_study()
    annotate_study(study)
    note = get_note(study)
    best = study.best_trial
    assert note.startswith("## fake\n")
    assert "`hpo run --backbone tiny-vit --trials 6`" in note
    assert "trials: 4 complete, 2 pruned, 0 failed, 0 running" in note
    assert f"### Best trial {best.number}: val mAP {best.value:.4f}" in note
    assert f"| lr | {best.params['lr']:.4g} |" in note
    assert f"rank1 {best.user_attrs['rank1']:.4g}" in note

    save_note(study, note + "the arcface runs look unstable\n")  # a person writes in the dashboard
    annotate_study(study)
    annotate_study(study)
    note = get_note(study)
    assert note.count("## fake\n") == 1 and note.count(NOTE_MARKER) == 1
    assert note.endswith("the arcface runs look unstable\n")

    attrs = study._storage.get_study_system_attrs(study._study_id)
    ids = {k.split(":")[2] for k in attrs if k.startswith("dashboard:plot_data:")}
    assert ids == {f"hpo-{name}" for name in FIGURES}  # fixed ids: refreshed, not piled up
    saved = json.loads(
        "".join(
            attrs[f"dashboard:plot_data:hpo-history:{i}"]
            for i in range(sum(k.startswith("dashboard:plot_data:hpo-history:") for k in attrs))
        )
    )
    assert saved["layout"]["title"]["text"] == FIGURES["history"]


def test_html_report_is_self_contained_with_plotly_once(tmp_path):
    from plotly.offline import get_plotlyjs

    study = fake_study()
    rep = write_report(study, tmp_path / "out", top=3, png=False)
    text = rep.html.read_text()
    assert rep.html == tmp_path / "out" / "report.html" and rep.pngs == []
    assert text.count("* plotly.js v") == 1
    assert text.count("Plotly.newPlot(") == len(FIGURES)
    for name in FIGURES:
        assert f'id="fig-{name}"' in text
    own = text.replace(
        get_plotlyjs(), ""
    )  # the page without the library: nothing fetched from outside
    assert "<script src=" not in own and "http://" not in own and "https://" not in own
    assert rep.html.stat().st_size < len(get_plotlyjs()) + 500_000
    # top 3 completed trials, best first
    top = sorted(
        (t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value
    )[:3]
    rows = text.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert [int(r.split("<td>")[1].split("<")[0]) for r in rows] == [t.number for t in top]


def test_png_export_skipped_with_a_note(tmp_path, monkeypatch):
    figs = study_figures(fake_study())
    monkeypatch.setattr(report, "find_browser", lambda: None)
    pngs, note = report.export_pngs(figs, tmp_path)
    assert pngs == [] and "no Chrome/Chromium found" in note
    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if not installed
    pngs, note = report.export_pngs(figs, tmp_path)
    assert pngs == [] and "kaleido is not installed" in note
    assert list(tmp_path.iterdir()) == []


def test_annotation_after_a_run_never_raises(monkeypatch, caplog, capsys):
    def broken(study):
        raise RuntimeError("plotly exploded")

    monkeypatch.setattr(report, "study_figures", broken)
    report.annotate_after_run(fake_study())
    assert "could not save the dashboard note and figures: plotly exploded" in caplog.text


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_report_command_writes_html_and_replaces_its_artifacts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    fake_study(url, name="demo")
    Path("studies/demo").mkdir(parents=True)
    Path("studies/demo/best.yaml").write_text("model: tiny-vit\n")
    for _ in range(2):
        code, out, err = _cli(["report", "--storage", url, "--no-png"], capsys)
        assert code == 0, err
    assert "wrote studies/demo/report/report.html" in out
    assert "saved study artifacts report.html, best.yaml in studies/artifacts" in out
    study = optuna.load_study(study_name="demo", storage=url)
    live = report.study_artifacts(study)
    assert sorted(live.values()) == ["best.yaml", "report.html"]
    assert sorted(p.name for p in Path("studies/artifacts").iterdir()) == sorted(
        live
    )  # old copies removed
    assert "## demo" in get_note(study)


@pytest.mark.parametrize(
    "make, args, message",
    [
        (
            lambda url: fake_study(url, name="demo"),
            ["--study", "nope"],
            "error: no study named 'nope' in ",
        ),
        (
            lambda url: fake_study(url, name="demo", n=0),
            [],
            "error: study 'demo' has no finished trials yet",
        ),
        (lambda url: None, [], "error: no study database at "),
    ],
)
def test_report_bad_input_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, make, args, message
):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    make(url)
    code, out, err = _cli(["report", "--storage", url, *args], capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not Path("studies").exists()
