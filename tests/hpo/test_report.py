"""Figures, dashboard note and the standalone HTML report, on fast studies made of fake trials."""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import re
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note, save_plotly_graph_object
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from hpo.cli import main
from hpo.common.attrs import attrs_of
from hpo.records import optuna_internals
from hpo.records.space import load_space
from hpo.views import report
from hpo.views.figures import DASHBOARD_FIGURES, FIGURES, RELIABLE_IMPORTANCES, study_figures
from hpo.views.headline import versus_baseline
from hpo.views.report import NOTE_MARKER, OLD_FIGURE_IDS, annotate_study, write_report

optuna.logging.set_verbosity(optuna.logging.ERROR)
TEMPLATES = [
    "A photo of a {} {aspect} hand.",
    "A detailed photo of {}'s {aspect} hand for identification.",
]
FLOORS = {  # a floors record as ``hpo run`` stores it (hpo.decide.floors)
    "key": "033f15c9ee04",
    "pixels": [0.5546, 0.4272],
    "backbone": [0.6624, 0.4548],
    "backbone_label": "untrained tiny-vit",
    "seconds": 0.6,
}


def fake_study(
    storage=None,
    name: str = "fake",
    n: int = 6,
    params: tuple[str, ...] = ("lr", "classifier"),
    pruned_every: int = 3,
    se: bool = False,
) -> optuna.Study:
    """Trials shaped like the objective's: per-epoch val mAP, metric user attrs, some pruned;
    trial 0 is a baseline; ``se`` adds the fold attributes (value_se, n_folds, fold_values)."""
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
        if "prompt_template" in params:
            t.suggest_categorical("prompt_template", TEMPLATES)
        if "supcon_temperature" in params:
            t.suggest_float("supcon_temperature", 0.03, 0.3, log=True)
        for epoch in (1, 2, 3):
            t.report(value * epoch / 3, epoch)
        metrics = {"rank1": value + 0.1, "rank5": 0.9, "rank10": 1.0, "epochs_run": 3}
        metrics |= {"best_epoch": 3, "seconds": 1.5, "peak_memory_mb": 0.0}
        if se:
            metrics |= {"value_se": 0.01 * (i + 1), "n_folds": 3, "fold_values": [value] * 3}
        if i == 0:
            metrics["baseline"] = "default"
        for key, metric in metrics.items():
            t.set_user_attr(key, metric)
        if pruned_every and i % pruned_every == pruned_every - 1:
            study.tell(t, state=TrialState.PRUNED)
        else:
            study.tell(t, value)
    return study


def test_every_figure_with_our_titles_and_value_se_only_with_folds():
    figs = study_figures(fake_study(se=True))
    assert list(figs.figures) == list(FIGURES) and figs.skipped == {}
    for name, fig in figs.figures.items():
        assert fig.layout.title.text.startswith(FIGURES[name])
    figs = study_figures(fake_study())
    assert list(figs.figures) == ["parallel", "curves", "intermediate", "importances"]
    assert "no trial has a value_se user attribute" in figs.skipped["value_se"]


def test_value_se_figure_has_the_error_bars_and_the_baseline_apart():
    study = fake_study(se=True)
    fig = study_figures(study, ["value_se"]).figures["value_se"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    by_name = {tr.name: tr for tr in fig.data}
    assert list(by_name["baseline"].x) == [0]
    xs = [x for tr in fig.data for x in tr.x]
    ses = [e for tr in fig.data for e in tr.error_y.array]
    assert sorted(zip(xs, ses, strict=True)) == sorted(
        (t.number, t.user_attrs["value_se"]) for t in done
    )
    assert "± 0.0100 (3 folds)" in by_name["baseline"].text[0]


def test_parallel_coordinates_readable_and_keep_trials_without_a_conditional_parameter():
    params = ("lr", "classifier", "prompt_template", "supcon_temperature")
    study = fake_study(n=12, params=params, pruned_every=0)
    figs = study_figures(study, ["parallel"])
    (trace,) = figs.figures["parallel"].data
    dims = {d.label: d for d in trace.dimensions}
    assert set(dims) == {
        "val mAP",
        "lr",
        "classifier",
        "arcface_margin",
        "prompt_tmpl",
        "supcon_temp",
    }
    assert all(len(d.values) == 12 for d in dims.values())  # linear trials are not dropped
    margin = dims["arcface_margin"]
    assert margin.ticktext[0] == "n/a" and min(margin.values) == margin.tickvals[0]
    assert list(dims["prompt_tmpl"].ticktext) == ["1", "2"]  # spelled out in the legend
    assert list(dims["classifier"].ticktext) == ["linear", "arcface"]
    assert trace.labelangle == -45  # turned titles of neighbouring axes stay apart
    legend = figs.legends["parallel"]
    assert "prompt_tmpl = prompt_template" in legend
    assert f"prompt_tmpl 2 = {TEMPLATES[1]}" in legend
    assert list(dims["lr"].ticktext) == ["1e-5", "1e-4", "1e-3", "1e-2"]  # log axis, round
    assert list(dims["lr"].tickvals) == [-5, -4, -3, -2]
    # every choice on its axis, even one no trial took
    assert list(dims["classifier"].range) == [0, 1] and list(dims["prompt_tmpl"].range) == [0, 1]


@pytest.mark.parametrize(
    "lo, hi, log, whole, texts",
    [
        (1e-4, 1e-2, True, False, ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]),  # not 0.00046
        (1e-6, 1e-3, True, False, ["1e-6", "1e-5", "1e-4", "1e-3"]),
        (0.1, 10.0, True, False, ["0.1", "0.3", "1", "3", "10"]),
        (0.25, 10.0, True, False, ["0.5", "1", "2", "5", "10"]),
        (0.03, 0.3, True, False, ["0.03", "0.1", "0.3"]),
        (0.02, 0.2, True, False, ["0.02", "0.05", "0.1", "0.2"]),
        (1e-8, 1.0, True, False, ["1e-8", "1e-6", "1e-4", "1e-2", "1"]),
        (0.03, 0.05, True, False, ["0.03", "0.035", "0.04", "0.045", "0.05"]),  # < a decade
        (8.0, 64.0, False, False, ["10", "20", "30", "40", "50", "60"]),
        (0.05, 0.5, False, False, ["0.1", "0.2", "0.3", "0.4", "0.5"]),
        (1, 4, False, True, ["1", "2", "3", "4"]),
        (1, 40, False, True, ["10", "20", "30", "40"]),
    ],
)
def test_parallel_axis_ticks_are_few_round_and_true(lo, hi, log, whole, texts):
    from hpo.views.figures import MAX_TICKS, _ticks

    ends = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
    vals, got = _ticks(*ends, log, whole=whole)
    assert got == texts and len(got) <= MAX_TICKS
    for pos, text in zip(vals, got, strict=True):  # the text is the value at its position
        value = 10**pos if log else pos
        assert math.isclose(value, float(text), rel_tol=1e-9)
        assert ends[0] - 1e-9 <= pos <= ends[1] + 1e-9


def test_parallel_choices_shortened_where_the_card_is_crowded():
    from hpo.views.figures import _short_choices

    assert _short_choices(["arcface", "linear"], 5) == ["arc", "lin"]
    assert _short_choices(["composed", "complete"], 5) == ["compo", "compl"]
    assert _short_choices(["composed", "complete"], 4) is None  # numbered instead
    space = load_space("rn50")  # 10 parameters: the classifier's words do not fit
    study = optuna.create_study(direction="maximize")
    for config in space.baselines:
        study.enqueue_trial({k: v for k, v in config.items() if k != "name"})
    study.enqueue_trial({"classifier": "linear"})
    for i in range(3):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.5 + i / 10)
    figs = study_figures(study, ["parallel"])
    dims = {d.label: d for d in figs.figures["parallel"].data[0].dimensions}
    assert list(dims["classifier"].ticktext) == ["arc", "lin"]
    assert "classifier arc = arcface" in figs.legends["parallel"]
    assert "classifier lin = linear" in figs.legends["parallel"]
    assert list(dims["arcface_scale"].ticktext) == ["n/a", "20", "40", "60"]  # 6 with n/a


def test_intermediate_values_whole_epochs_and_pruned_trials_marked():
    study = fake_study()
    fig = study_figures(study, ["intermediate"]).figures["intermediate"]
    assert len(fig.data) == 6 and fig.layout.xaxis.dtick == 1  # epochs 1, 2, 3: no 1.5
    pruned = [tr for tr in fig.data if tr.name == "pruned"]
    assert len(pruned) == 2
    for tr in pruned:
        assert tr.line.dash == "dash" and list(tr.marker.symbol) == ["circle", "circle", "x"]
    assert [tr.name for tr in fig.data if tr.showlegend] == ["baseline", "complete", "pruned"]


@pytest.mark.parametrize("n, flagged", [(6, True), (RELIABLE_IMPORTANCES + 2, False)])
def test_importances_flagged_unreliable_below_ten_complete_trials(n, flagged):
    study = fake_study(n=n, pruned_every=0)
    title = study_figures(study, ["importances"]).figures["importances"].layout.title.text
    assert ("unreliable: 6 complete trials, about 10 needed" in title) == flagged


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
    assert set(figs.skipped) == skipped | {"value_se"}
    assert set(figs.figures) == set(FIGURES) - skipped - {"value_se"}
    if "importances" in figs.figures:
        assert list(figs.figures["importances"].data[0].y) == list(params)


def test_no_completed_trial_still_gives_the_pruning_picture():
    figs = study_figures(fake_study(n=2, pruned_every=1))
    assert list(figs.figures) == ["intermediate"]
    assert figs.skipped["parallel"] == "no completed trial with tuned parameters yet"


def _figure_ids(study) -> set[str]:
    attrs = optuna_internals.study_system_attrs(study)
    return {k.split(":")[2] for k in attrs if k.startswith("dashboard:plot_data:")}


def test_note_and_figures_saved_in_the_study_and_user_notes_kept():
    study = fake_study(se=True)
    annotate_study(study)
    note = get_note(study)
    best = study.best_trial
    assert note.startswith("## fake\n")
    assert "`hpo run --backbone tiny-vit --trials 6`" in note
    assert "trials: 4 complete, 2 pruned, 0 failed, 0 running" in note
    se = best.user_attrs["value_se"]
    assert (
        f"### Best trial {best.number}: val mAP {best.value:.3f} ± {se:.3f} (SE, 3 folds)" in note
    )
    assert f"| lr | {best.params['lr']:.4g} |" in note
    assert f"rank1 {attrs_of(best)['rank1']:.4g}" in note
    assert "peak_memory_mb n/a" in note  # recorded as 0 on CPU

    save_note(study, note + "the arcface runs look unstable\n")  # a person writes in the dashboard
    annotate_study(study)
    annotate_study(study)
    note = get_note(study)
    assert note.count("## fake\n") == 1 and note.count(NOTE_MARKER) == 1
    assert note.endswith("the arcface runs look unstable\n")
    # only what the dashboard lacks, under fixed ids: refreshed, not piled up
    assert _figure_ids(study) == {f"hpo-{name}" for name in DASHBOARD_FIGURES}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_figures_of_earlier_versions_removed_where_the_storage_can(tmp_path, kind):
    storage = {
        "memory": None,
        "sqlite": f"sqlite:///{tmp_path}/s.db",
        "journal": optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
        ),
    }[kind]
    study = fake_study(storage)
    old = study_figures(study, ["intermediate"]).figures["intermediate"]
    for gid in OLD_FIGURE_IDS:  # what hpo saved before
        save_plotly_graph_object(study, old, graph_object_id=gid)
    save_plotly_graph_object(study, old, graph_object_id="someone-elses")
    annotate_study(study)
    annotate_study(study)
    ids = _figure_ids(study)
    assert {"hpo-parallel", "someone-elses"} <= ids
    # a journal file cannot delete: the old figures become a one-line notice, written once
    assert (set(OLD_FIGURE_IDS) <= ids) == (kind == "journal")
    if kind == "journal":
        shown = get_plotly_graph_objects(optuna_internals.study_system_attrs(study))
        for gid in OLD_FIGURE_IDS:
            text = json.loads(shown[gid])["layout"]["annotations"][0]["text"]
            assert text.startswith(report.RETIRED)
        log = (tmp_path / "j.log").read_text()
        assert log.count(report.RETIRED) == len(OLD_FIGURE_IDS)


def _plot_data(page: str, div_id: str) -> dict:
    """The figure (data and layout) a report page draws into ``div_id``."""
    return json.loads(page.split(f'data-plot="{div_id}">', 1)[1].split("</script>", 1)[0])


def test_html_report_is_self_contained_with_plotly_once_and_packed(tmp_path):
    from plotly.offline import get_plotlyjs

    study = fake_study(se=True, params=("lr", "classifier", "prompt_template"))
    rep = write_report(study, tmp_path / "out", top=3, png=False)
    text = rep.html.read_text()
    assert rep.html == tmp_path / "out" / "report.html" and rep.pngs == []
    packed = text.split('<script type="text/plain" id="plotly-gz">', 1)[1].split("</script>")[0]
    assert gzip.decompress(base64.b64decode(packed)).decode() == get_plotlyjs()  # all of it
    assert text.count('id="plotly-gz"') == 1 and text.count("DecompressionStream") >= 1
    assert text.count("data-plot=") == len(FIGURES)
    for name in FIGURES:
        assert f'id="fig-{name}"' in text and _plot_data(text, f"fig-{name}")["data"]
    own = text.replace(packed, "")  # the page without the library: nothing from outside
    assert "<script src=" not in own and "http://" not in own and "https://" not in own
    # plotly.js is 4.8 MB; packed, the page is well under half of that (it was 4.9 MB)
    assert rep.html.stat().st_size < len(get_plotlyjs()) / 2
    # top 3 completed trials, best first; the table takes the page's width and wraps
    top = sorted(
        (t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value
    )[:3]
    rows = own.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert [int(r.split("<td>")[1].split("<")[0].split()[0]) for r in rows] == [
        t.number for t in top
    ]
    assert "table{border-collapse:collapse;font-size:13px;width:100%}" in own
    assert "td.text{overflow-wrap:anywhere" in own and "overflow-x" not in own  # wraps, no scroll
    assert own.count('<td class="text">') == 6  # classifier and template: text that may wrap
    assert '<th title="prompt_template">prompt_<wbr>tmpl</th>' in own
    assert "<td>n/a</td>" in own  # GPU memory on CPU
    baseline = study.trials[0]
    if baseline.number in [t.number for t in top]:
        assert '<span class="base">baseline default</span>' in own


def test_report_marks_baselines_and_spells_out_codes_in_the_figure(tmp_path):
    study = fake_study(params=("lr", "prompt_template"), pruned_every=0)
    own = write_report(study, tmp_path, top=10, png=False).html.read_text()
    assert '<td>0 <span class="base">baseline default</span></td>' in own
    (legend,) = _plot_data(own, "fig-parallel")["layout"]["annotations"]
    assert html.escape(f"prompt_tmpl 2 = {TEMPLATES[1]}") in legend["text"]
    assert f"`prompt_tmpl 2 = {TEMPLATES[1]}`" in get_note(study)  # and in the note


def test_parallel_coordinates_spell_out_their_codes_below_the_axes():
    """The dashboard shows a saved figure without the note: the codes its axes use (numbered
    prompt templates, short choices and names) travel inside it, below the colour bar."""
    params = ("lr", "classifier", "prompt_template", "supcon_temperature")
    figs = study_figures(fake_study(n=12, params=params, pruned_every=0), ["parallel"])
    fig = figs.figures["parallel"]
    (note,) = fig.layout.annotations
    shown = " ".join(html.unescape(note.text).replace("<br>", " ").split())
    legend = figs.legends["parallel"]
    assert (
        f"prompt_tmpl 1 = {TEMPLATES[0]}" in legend and "supcon_temp = supcon_temperature" in legend
    )
    for item in legend:
        assert " ".join(item.split()) in shown
    lines = note.text.count("<br>") + 1
    assert note.yref == "paper" and note.yanchor == "top" and note.y == 0  # below the axes
    assert fig.layout.margin.b >= 60 + 13 * lines  # with room for every line in the card
    assert fig.layout.height == 440


def _confirmed_copy(stored, tmp_path: Path) -> optuna.Study:
    """A copy of the session's confirmed study, with floors."""
    url, _ = stored
    shutil.copy(url.removeprefix("sqlite:///"), tmp_path / "s.db")
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db")
    study.set_user_attr("floors", FLOORS)
    return study


def test_confirmation_on_the_whole_scale_with_floors_and_a_sentence_per_config(stored, tmp_path):
    from hpo.decide.confirm import current

    study = _confirmed_copy(stored, tmp_path)
    page = write_report(study, tmp_path / "out", png=False).html.read_text()
    fig = _plot_data(page, "fig-confirm")
    assert fig["layout"]["xaxis"]["range"] == [0, 1]  # val mAP's whole scale, not 1.2
    floors = {s["name"]: s["x0"] for s in fig["layout"]["shapes"] if s.get("showlegend")}
    assert floors == {
        "pixel floor 0.555": FLOORS["pixels"][0],
        "backbone floor (untrained tiny-vit) 0.662": FLOORS["backbone"][0],
    }
    section = page.split("<h2>Confirmation</h2>", 1)[1].split("</table>", 1)[0]
    last = re.findall(r"<td>([^<]*)</td></tr>", section)  # each row's verdict
    summary = current(study)
    assert len(last) == len(summary["rows"]) >= 2
    ref = summary["reference_baseline"]
    for row, cell in zip(summary["rows"], last, strict=True):
        cell = html.unescape(cell)
        assert cell[0].isupper() and cell.endswith(".") and "baseline" in cell, cell
        if row["trial"] != ref:
            verdict = versus_baseline(row)
            assert cell.startswith(
                f"{verdict[0].upper()}{verdict[1:]} the baseline (trial {ref}): "
            )
    assert "[95 % CI]" in section and "p=" in section


def test_both_studies_name_their_metric(stored, tmp_path):
    study = _confirmed_copy(stored, tmp_path)
    annotate_study(study)
    companion = optuna.load_study(study_name="s.confirm", storage=study._storage)
    assert study.metric_names == ["val mAP"] and companion.metric_names == ["val mAP"]


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
    def broken(study, names=()):
        raise RuntimeError("plotly exploded")

    monkeypatch.setattr(report, "study_figures", broken)
    report.annotate_after_run(fake_study())
    assert "could not save the dashboard note and figures: plotly exploded" in caplog.text


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_report_command_twice_keeps_one_entry_per_artifact(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    space = {
        "base": {"model": "tiny-vit"},
        "space": {"lr_modules": {"type": "float", "low": 1e-4, "high": 1e-2}},
    }
    fake_study(url, name="demo").set_user_attr("space", space)  # as studies are made today
    Path("studies/demo").mkdir(parents=True)
    Path("studies/demo/best.yaml").write_text("model: tiny-vit\n")
    for _ in range(2):
        code, out, err = _cli(["report", "--storage", url, "--no-png"], capsys)
        assert code == 0, err
    assert "wrote studies/demo/report/report.html" in out
    assert "saved study artifacts report.html, best.yaml in studies/artifacts" in out
    study = optuna.load_study(study_name="demo", storage=url)
    metas = get_all_artifact_meta(study)  # Optuna's public call works after two reports
    assert sorted(m.filename for m in metas) == ["best.yaml", "report.html", "space.yaml"]
    stored = sorted(p.name for p in Path("studies/artifacts").iterdir())
    assert stored == sorted(m.artifact_id for m in metas)  # nothing left behind in the store
    report_id = next(m.artifact_id for m in metas if m.filename == "report.html")
    assert (
        Path("studies/artifacts", report_id).read_bytes()
        == Path("studies/demo/report/report.html").read_bytes()
    )  # the latest report under the first upload's id
    assert study.user_attrs["space_params"] == "1 tuned parameter, see space.yaml"
    assert "## demo" in get_note(study)


def test_report_repairs_a_study_damaged_by_null_artifact_entries(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    study = fake_study(url, name="demo")
    for gone in ("1c0ffee0-dead", "2c0ffee0-dead"):  # what earlier versions wrote on replacing
        study._storage.set_study_system_attr(study._study_id, f"artifacts:{gone}", json.dumps(None))
    with pytest.raises(TypeError):
        get_all_artifact_meta(study)
    code, out, err = _cli(["report", "--storage", url, "--no-png"], capsys)
    assert code == 0, err
    assert [m.filename for m in get_all_artifact_meta(study)] == ["report.html"]


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


def _with_failed_baseline(study: optuna.Study) -> optuna.Study:
    """A second baseline that crashed once and completed on its retry, below the best."""
    failed = study.ask()
    failed.set_user_attr("baseline", "seed-v3")
    study.tell(failed, state=TrialState.FAIL)
    retry = study.ask()
    retry.suggest_float("lr", 1e-5, 1e-2, log=True)
    for key, value in {"baseline": "seed-v3", "retry_of": failed.number}.items():
        retry.set_user_attr(key, value)
    study.tell(retry, 0.45)
    return study


def test_note_and_report_compare_the_best_trial_with_the_baseline(tmp_path):
    from hpo.decide.compare import compare_to_baseline

    study = _with_failed_baseline(fake_study(se=True, pruned_every=0))
    cmp = compare_to_baseline(study)
    assert cmp is not None and not cmp.same_trial and cmp.changes
    note = report.study_note(study)
    section = note.split("### Against the baseline", 1)[1]
    assert cmp.value_line() in section
    assert f"| parameter | baseline default | best trial {cmp.best.number} |" in section
    for change in cmp.changes:
        assert f"| {change.name} | {' | '.join(change.texts())} |" in section
    assert "- trial 6: seed-v3, fail, queued again as trial 7" in section
    assert "- trial 7: seed-v3, val mAP 0.450 (retry of trial 6)" in section
    assert "- trial 0: default, val mAP " in section

    own = write_report(study, tmp_path, png=False).html.read_text()
    assert "<h2>Best trial against the baseline</h2>" in own
    assert html.escape(cmp.value_line()) in own
    assert f"<th>best trial {cmp.best.number}</th>" in own
    assert own.count('<span class="base">baseline seed-v3</span>') >= 2


def test_no_baseline_no_section_and_a_baseline_not_done_yet_is_said():
    plain = optuna.create_study(direction="maximize")
    plain.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    assert "Against the baseline" not in report.study_note(plain)
    pending = optuna.create_study(direction="maximize")
    pending.add_trial(optuna.trial.create_trial(value=0.5))
    pending.enqueue_trial({}, user_attrs={"baseline": "default"})
    pending.tell(pending.ask(), state=TrialState.FAIL)
    note = report.study_note(pending)
    assert "No baseline trial has completed yet." in note
    assert "- trial 1: default, fail" in note


def test_curves_panel_uses_the_histories_and_falls_back_to_intermediate_values(tmp_path):
    from hpo.records.artifacts import open_artifact_store
    from hpo.search.objective import Objective
    from hpo.search.study import run_until
    from hpo.views.figures import curves_figure
    from tests.hpo.test_objective import StubPool, fake_fit, make_study

    study, space = make_study()
    store = open_artifact_store(tmp_path / "artifacts")
    run_until(
        study, Objective(space, device="cpu", data=StubPool(), fit_fn=fake_fit(), store=store), 7
    )
    fig, why = curves_figure(study, store)
    assert why is None
    by_axis = {}
    for trace in fig.data:
        by_axis.setdefault(trace.xaxis, []).append(trace)
    assert len(by_axis["x"]) == len(by_axis["x2"]) == 5  # the top 5, val mAP and loss
    best = max(study.trials, key=lambda t: t.value)
    first = by_axis["x"][0]
    assert first.name.startswith(f"trial {best.number}") and list(first.x) == [1, 2, 3, 4, 5]
    assert list(first.y) == [best.intermediate_values[s] for s in range(1, 6)]
    baseline = [tr for tr in by_axis["x"] if "(baseline hand-tuned)" in tr.name]
    assert all(tr.line.dash == "dash" for tr in baseline)
    fig, _ = curves_figure(study, None)  # no artifact store: val mAP from intermediate values
    assert {tr.xaxis for tr in fig.data} == {"x"}
    assert "no epoch histories stored" in fig.layout.annotations[-1].text
