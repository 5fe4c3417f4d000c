"""``hpo final``: the paper's table, its statistics, its files, the test identities used once.

The fast tests check the pieces on numbers made here; the integration tests train a real
confirmed study's winner and baseline and hold the table to ``handreid evaluate`` on the
stored checkpoints, to the warning of a second use, and to a resumed interruption.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from handreid.config import ASPECTS, TrainConfig
from handreid.errors import UserError
from hpo.decide import final as fr
from hpo.decide.verdict import seeds_by_splits
from hpo.views import final_table as ft
from tests.conftest import SHARED_11K, TINY


# ---- statistics ---------------------------------------------------------------------------
def _crossed_draws(rng, m: int, j: int, sd_seed: float, sd_split: float, sd_e: float):
    return (
        0.6
        + rng.normal(0, sd_seed, (m, 1))
        + rng.normal(0, sd_split, (1, j))
        + rng.normal(0, sd_e, (m, j))
    )


@pytest.mark.parametrize(
    "sds", [(0.02, 0.02, 0.01), (0.005, 0.04, 0.01), (0.03, 0.002, 0.01)], ids=str
)
def test_the_interval_over_seeds_and_splits_covers_95_percent(sds):
    """Seeds and query/gallery splits crossed, each random: the interval covers the true mean
    in 93-97.5 % of 3,000 tables of 3 seeds x 10 splits, whichever of the two dominates."""
    rng = np.random.default_rng(0)
    hits = 0
    n = 3000
    for _ in range(n):
        _, _, _, (lo, hi) = seeds_by_splits(_crossed_draws(rng, 3, 10, *sds), bounds=(-9, 9))
        hits += lo <= 0.6 <= hi
    assert 0.93 <= hits / n <= 0.975, hits / n


def test_a_t_interval_over_seed_means_alone_misses_the_split_noise():
    """Why the splits are a random effect: when they dominate, the t interval over the seeds'
    means (the splits averaged first) covers far less than 95 %; ours does not."""
    from scipy import stats

    rng = np.random.default_rng(1)
    naive = ours = 0
    n = 2000
    for _ in range(n):
        x = _crossed_draws(rng, 3, 10, 0.005, 0.04, 0.01)
        means = x.mean(axis=1)
        half = stats.t.ppf(0.975, 2) * means.std(ddof=1) / np.sqrt(3)
        naive += abs(means.mean() - 0.6) <= half
        _, _, _, (lo, hi) = seeds_by_splits(x, bounds=(-9, 9))
        ours += lo <= 0.6 <= hi
    assert naive / n < 0.8 and ours / n > 0.93, (naive / n, ours / n)


def test_intervals_stay_inside_the_metric_range():
    x = np.array([[0.99, 1.0, 0.97], [1.0, 0.96, 1.0]])
    mean, se, df, (lo, hi) = seeds_by_splits(x)
    assert 0.0 <= lo <= mean <= hi <= 1.0 and df > 0 and se > 0
    d = seeds_by_splits(-x, bounds=(-1.0, 1.0))[3]
    assert d[0] >= -1.0


# ---- aspects, published rows --------------------------------------------------------------
def test_aspects_study_each_and_lists():
    cfg = TrainConfig(**TINY)
    assert [a.name for a in fr.parse_aspects("study", cfg, "11k")] == ["dorsal right"]
    each = fr.parse_aspects("each", cfg, "11k")
    assert [a.aspects for a in each] == [(a,) for a in ASPECTS]
    two = fr.parse_aspects("palmar left, dorsal right,palmar left", cfg, "11k")
    assert [a.name for a in two] == ["palmar left", "dorsal right"]
    assert [a.name for a in fr.parse_aspects("each", cfg, "hd")] == ["HD"]
    with pytest.raises(UserError, match="the study's data is the 'hd' layout"):
        fr.parse_aspects("dorsal right", cfg, "hd")
    with pytest.raises(UserError, match="unknown aspect 'dorsal'"):
        fr.parse_aspects("dorsal", cfg, "11k")


def test_published_rows_are_comparable_only_on_the_same_protocol():
    aspect = fr.Aspect("dorsal right", ("dorsal right",))
    cfg = TrainConfig(**{**TINY, "num_splits": 10, "exclude_accessories": True})
    same = fr.published_rows(aspect, cfg, {"split": "published"})
    assert {r["label"] for r in same} >= {"PromptSG ViT-B/16 (CLIP-FH)", "PromptSG RN50 (CLIP-FH)"}
    assert all(r["comparable"] for r in same)
    vit = next(r for r in same if r["label"].startswith("PromptSG ViT-B/16"))
    assert vit["metrics"]["mAP"] == pytest.approx(0.8999) and vit["metrics"]["rank5"] is None
    other = fr.published_rows(aspect, cfg.replace(num_splits=3), {"split": "random"})
    assert other and not any(r["comparable"] for r in other)
    assert set(other[0]["differs"]) == {"split", "num_splits"}
    assert fr.published_rows(fr.Aspect("palmar left", ("palmar left",)), cfg, {}) == []


def test_every_published_row_names_its_source_and_protocol():
    from importlib import resources

    import yaml

    text = resources.files("hpo.decide").joinpath("published.yaml").read_text()
    rows = yaml.safe_load(text)["results"]
    assert len(rows) >= 4
    for row in rows:
        assert row["method"] and row["source"] and row["cite"]
        assert row["backbone"] in ("rn50", "vitb16")
        proto = row["protocol"]
        assert proto["dataset"] in ("11k", "hd") and proto["split"] in ("published", "random")
        assert proto["aspect"] in ASPECTS and proto["num_splits"] >= 1
        assert isinstance(proto["exclude_accessories"], bool)
        assert row["metrics"] and set(row["metrics"]) <= set(fr.METRICS)
        assert all(0 < v <= 100 for v in row["metrics"].values())  # percentages


# ---- the ledger ---------------------------------------------------------------------------
def _entry(label: str, lr: float, role: str = "config") -> fr.Entry:
    return fr.Entry(label, role, label, TrainConfig(**{**TINY, "lr_modules": lr}).to_dict(), 2)


def _plan(*entries: fr.Entry) -> fr.FinalPlan:
    return fr.FinalPlan(
        list(entries), [fr.Aspect("dorsal right", None)], [1, 2], "dorsal right", "11k"
    )


def _finished(companion, entry: fr.Entry, seed: int, maps=(0.5, 0.6), state=None) -> None:
    """A final run of ``entry`` on seed ``seed`` (dorsal right), as ``FinalRun`` records it."""
    key = fr.run_key(entry, fr.Aspect("dorsal right", None), seed)
    system = {"hpo:final_key": key, "hpo:final_label": entry.label, "hpo:final_seed": seed}
    if state is None:
        splits = [{k: m for k in ft.METRICS} for m in maps]
        system["hpo:final_test"] = {"splits": splits, "test_set": "t"}
        system["hpo:final_checkpoint"] = f"m/{entry.label}-{seed}.pt"
    companion.add_trial(
        optuna.trial.create_trial(
            state=state or TrialState.COMPLETE,
            value=None if state else float(np.mean(maps)),
            system_attrs=system,
        )
    )


def test_the_test_identities_are_counted_and_late_configs_marked():
    study = optuna.create_study(direction="maximize")
    runs = fr.open_runs(study, study._storage)
    a, b, c = _entry("a", 1e-3, "winner"), _entry("b", 2e-3, "baseline"), _entry("c", 3e-3)
    assert fr.register(study, _plan(a, b), "hpo final") == []  # the first use: no warning
    # queued but not finished: no test result has been seen, so c is not late
    assert fr.register(study, _plan(a, b, c), "hpo final --config c.yaml") == []
    _finished(runs, a, 1)
    _finished(runs, b, 1)
    assert fr.register(study, _plan(a, b), "hpo final") == []  # the same configs again
    d = _entry("d", 4e-3)
    warned = fr.register(study, _plan(a, b, d), "hpo final --config d.yaml")
    assert len(warned) == 1
    assert "already been used for 2 configs (a, b); d is marked in the table" in warned[0]
    rec = fr.record(study)
    assert rec["late"] == {d.digest: 2} and len(rec["ledger"]) == 4
    assert [x["label"] for x in rec["ledger"][3]["configs"]] == ["a", "b", "d"]
    assert set(fr.evaluated(study)) == {a.digest, b.digest}


def test_a_diverged_or_single_seed_row_gets_no_interval():
    study = optuna.create_study(direction="maximize")
    runs = fr.open_runs(study, study._storage)
    a, b = _entry("a", 1e-3, "winner"), _entry("b", 2e-3, "baseline")
    _finished(runs, a, 1, (0.6, 0.7))
    _finished(runs, a, 2, state=TrialState.PRUNED)  # diverged: no test result
    _finished(runs, b, 1, (0.5, 0.55))
    _finished(runs, b, 2, (0.52, 0.58))
    p = _plan(a, b)
    pixels = {"label": "raw pixels", "splits": [{k: v for k in ft.METRICS} for v in (0.4, 0.5)]}
    fr.set_study_record(study, "final", {"floors": {"dorsal right": {"pixels": pixels}}})
    table = fr.summarize(study, p, runs)
    (floor,) = table["aspects"][0]["floors"]  # no seed, but an interval over its splits
    assert floor["metrics"]["mAP"]["mean"] == pytest.approx(0.45)
    assert np.isfinite(floor["metrics"]["mAP"]["ci"]).all()
    rows = {r["label"]: r for r in table["aspects"][0]["rows"]}
    assert rows["a"]["seeds"] == [1] and rows["a"]["diverged"] == [2]
    assert rows["a"]["metrics"]["mAP"]["mean"] == pytest.approx(0.65)
    assert all(np.isnan(rows["a"]["metrics"]["mAP"]["ci"]))  # one seed: no interval
    assert ft.words(rows["a"]["vs_baseline"]["mAP"]) == "no interval yet (one seed)"
    assert np.isfinite(rows["b"]["metrics"]["mAP"]["ci"]).all()
    assert table["complete"] and table["missing"] == []  # diverged is an answer, not a gap
    assert "(1 of 2 seeds diverged)" in ft.markdown(table)
    assert fr.queue(runs, p) == []  # nothing is trained again, the diverged seed included


def test_a_config_digest_ignores_seed_and_aspect_but_not_what_trains():
    a = _entry("a", 1e-3)
    moved = fr.Entry("x", "config", "x", {**a.config, "seed": 7, "aspects": ["palmar left"]}, 2)
    assert moved.digest == a.digest
    assert _entry("a", 2e-3).digest != a.digest
    assert fr.Entry("a", "config", "a", a.config, 3).digest != a.digest


def test_a_final_run_trains_the_refit_on_a_fresh_seed():
    e = _entry("a", 1e-3)
    cfg = fr.run_config(e, fr.Aspect("palmar left", ("palmar left",)), 2)
    assert cfg.refit and not cfg.confirm_run and cfg.val_folds == 1
    assert cfg.seed == TrainConfig(**TINY).seed + fr.FINAL_SEED + 2
    assert cfg.aspects == ("palmar left",) and cfg.epochs == 2 and cfg.early_stop_patience == 0


def test_no_search_or_confirm_code_reads_a_final_record():
    """The test identities stay out of every decision: the modules that run, prune, confirm
    and compare never name the final runs, their record or their attributes."""
    import hpo

    root = Path(hpo.__file__).parent
    deciding = [*root.joinpath("search").glob("*.py"), *root.joinpath("fleet").glob("*.py")]
    deciding += [root / "decide" / f for f in ("confirm.py", "verdict.py", "compare.py")]
    for path in deciding:
        text = path.read_text()
        for word in ("decide.final", "final_test", "FINAL_SUFFIX", '"final"'):
            assert word not in text, f"{path.name} names {word}"


def test_the_dashboard_names_final_runs_as_part_of_their_study():
    from hpo.views.dashboard_app import shown_study_list

    listed = shown_study_list(
        [
            {"study_name": "s", "study_id": 1},
            {"study_name": "s.confirm", "study_id": 2},
            {"study_name": "s.final", "study_id": 3},
            {"study_name": "t.final", "study_id": 4},  # no study t: a study of its own
        ]
    )
    names = {s["study_id"]: s["study_name"] for s in listed}
    assert names == {1: "s", 2: "s › confirm runs", 3: "s › final runs", 4: "t.final"}


# ---- the files ----------------------------------------------------------------------------
def _cell(mean, lo, hi):
    return {"mean": mean, "se": 0.01, "df": 5.0, "ci": [lo, hi]}


def _table() -> dict:
    metrics = lambda m: {k: _cell(m, m - 0.02, m + 0.02) for k in ft.METRICS}  # noqa: E731
    return {
        "study": "s_1",
        "tuned_on": "dorsal right",
        "seeds": [1, 2, 3],
        "level": 0.95,
        "aspects": [
            {
                "aspect": "palmar left",
                "split": "random",
                "num_splits": 10,
                "test_identities": 40,
                "train_identities": 100,
                "study_subjects_in_test": 0,
                "rows": [
                    {"label": "winner (trial 4)", "role": "winner", "source": "trial 4",
                     "digest": "d1", "seeds": [1, 2, 3], "late": 0, "checkpoints": [],
                     "metrics": metrics(0.70),
                     "vs_baseline": {k: _cell(0.05, 0.01, 0.09) for k in ft.METRICS}},
                    {"label": "baseline default", "role": "baseline", "source": "trial 0",
                     "digest": "d2", "seeds": [1, 2, 3], "late": 0, "checkpoints": [],
                     "metrics": metrics(0.65), "vs_baseline": None},
                    {"label": "v8_tuned", "role": "config", "source": "v8.yaml", "digest": "d3",
                     "seeds": [1, 2], "late": 2, "checkpoints": [], "metrics": metrics(0.6),
                     "vs_baseline": {k: _cell(-0.05, -0.1, 0.01) for k in ft.METRICS}},
                ],
                "floors": [
                    {"label": "raw pixels", "kind": "pixels", "metrics": metrics(0.72)},
                ],
                "published": [
                    {"label": "PromptSG (CLIP-FH)", "backbone": "vitb16",
                     "metrics": {"rank1": 0.8586, "rank5": None, "rank10": None, "mAP": 0.8999},
                     "comparable": False, "differs": ["split"], "protocol": {}, "cite": ""},
                ],
            }
        ],
        "missing": ["palmar left: v8_tuned seed 3"],
        "complete": False,
        "configs_on_test": 3,
        "uses": 2,
        "notes": [],
        "updated": "2026-12-08 10:00:00",
    }  # fmt: skip


def test_markdown_puts_the_decision_first_and_marks_what_it_must():
    md = ft.markdown(_table())
    lines = md.splitlines()
    assert lines[2] == (
        "- palmar left: winner (trial 4) test mAP 70.0 [68.0, 72.0] %, +5.0 [+1.0, +9.0] vs the "
        "baseline: better than the baseline; below the pixel floor (72.0)"
    )
    assert "the study was tuned on dorsal right, not on this aspect alone" in md
    assert "† v8_tuned: added after the test identities had been used for 2 configs" in md
    assert "| v8_tuned † | 60.0 [58.0, 62.0] |" in md
    assert "not distinguishable from the baseline (partial: 2 of 3 seeds)" in md
    assert "| PromptSG (CLIP-FH) | 85.86 | - | - | 89.99 |  | published; not comparable |" in md
    assert "Partial: 1 runs missing (palmar left: v8_tuned seed 3)" in md


def test_latex_is_booktabs_with_its_text_escaped():
    tex = ft.latex(_table())
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrrl}"):
        assert token in tex
    assert r"v8\_tuned $^\dagger$" in tex and r"95 \% interval" in tex
    code = [line for line in tex.splitlines() if not line.startswith("%")]
    assert all(line.count("_") == line.count(r"\_") for line in code)  # every _ escaped
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert all(line.count("&") == 6 for line in body), body
    assert r"mAP (\%)" in tex and "better than the baseline" in tex


def test_csv_has_every_metric_of_every_row():
    rows = list(csv.DictReader(io.StringIO(ft.csv_text(_table()))))
    win = {r["metric"]: r for r in rows if r["row"] == "winner (trial 4)"}
    assert set(win) == set(ft.METRICS)
    assert float(win["mAP"]["mean_pct"]) == pytest.approx(70.0)  # % as in every other file
    assert float(win["rank1"]["diff_low_pct"]) == pytest.approx(1.0)
    assert win["mAP"]["note"] == "better than the baseline"
    late = [r for r in rows if r["row"] == "v8_tuned"]
    assert late and all(r["late"] == "2" and r["seeds"] == "2" for r in late)
    pub = [r for r in rows if r["kind"] == "published"]
    assert pub[0]["note"] == "published; not comparable"


def test_text_lines_fit_the_terminal():
    out = ft.text(_table(), columns=80)
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert out.splitlines()[1].startswith("  palmar left: winner (trial 4) test mAP 70.0")


def test_write_all_writes_four_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = ft.write_all(_table())
    assert sorted(p.name for p in paths.values()) == [
        "figure.png",
        "table.csv",
        "table.md",
        "table.tex",
    ]
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["markdown"].parent == tmp_path / "studies" / "s_1" / "final"


# ---- end to end (a real confirmed study) --------------------------------------------------
def _copy(confirmed, tmp_path: Path) -> tuple[Path, str]:
    """The session's confirmed study, copied: its database and artifacts (the data stays)."""
    root = tmp_path / "w"
    root.mkdir()
    shutil.copy(confirmed["root"] / "s.db", root / "s.db")
    if (confirmed["root"] / "studies").is_dir():
        shutil.copytree(confirmed["root"] / "studies", root / "studies")
    return root, f"sqlite:///{root}/s.db"


def _hpo(root: Path, monkeypatch, capsys, *args: str) -> tuple[str, str]:
    from hpo.cli import run

    monkeypatch.chdir(root)
    monkeypatch.setenv("COLUMNS", "100")
    assert run(list(args)) == 0
    return capsys.readouterr()


def _study(storage: str) -> optuna.Study:
    from tests.hpo.conftest import DEMO

    return optuna.load_study(study_name=DEMO, storage=storage)


def _evaluate(path: str, capsys) -> dict:
    from handreid.cli import run

    capsys.readouterr()
    assert run(["evaluate", "--checkpoint", path, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.integration
def test_the_table_equals_handreid_evaluate_on_its_checkpoints(
    confirmed, tmp_path, monkeypatch, capsys
):
    from tests.hpo.conftest import DEMO

    root, storage = _copy(confirmed, tmp_path)
    out, _ = _hpo(root, monkeypatch, capsys, "final", "--study", DEMO, "--storage", storage,
                  "--seeds", "2", "--quiet")  # fmt: skip
    study = _study(storage)
    table = fr.current(study)
    assert table["complete"] and out.index("final table") < out.index("wrote ")
    section = table["aspects"][0]
    for row in section["rows"]:
        assert len(row["checkpoints"]) == 2
        reports = [_evaluate(str(root / p), capsys) for p in row["checkpoints"]]
        for metric in ("mAP", "rank1"):
            mean = float(np.mean([r[metric] for r in reports]))
            assert row["metrics"][metric]["mean"] == pytest.approx(mean, abs=2e-6)
    folder = root / "studies" / DEMO / "final"
    assert {p.name for p in folder.iterdir()} >= {
        "table.md",
        "table.tex",
        "table.csv",
        "figure.png",
    }
    md = (folder / "table.md").read_text()
    assert f"{100 * section['rows'][0]['metrics']['mAP']['mean']:.1f}" in md
    assert "raw pixels (floor)" in md
    show, _ = _hpo(root, monkeypatch, capsys, "show", "--study", DEMO, "--storage", storage)
    assert "final table (test identities, used once" in show
    # the runs are a companion study, listed under the study, never a search of their own
    ls, _ = _hpo(root, monkeypatch, capsys, "ls", "--storage", storage)
    assert f"  {DEMO}.final: " in ls and "final runs (test identities)" in ls


@pytest.mark.integration
def test_a_second_final_reuses_runs_and_warns_for_new_configs(
    confirmed, tmp_path, monkeypatch, capsys
):
    from tests.hpo.conftest import DEMO

    root, storage = _copy(confirmed, tmp_path)
    base = ["final", "--study", DEMO, "--storage", storage, "--seeds", "2", "--quiet"]
    _, err = _hpo(root, monkeypatch, capsys, *base)
    assert "warning" not in err
    runs = fr.load_runs(_study(storage))
    first = {t.number for t in runs.get_trials(states=(TrialState.COMPLETE,))}
    _, err = _hpo(root, monkeypatch, capsys, *base)  # the same configs: nothing trains again
    assert "warning" not in err
    assert {t.number for t in runs.get_trials(states=(TrialState.COMPLETE,))} == first
    cfg = TrainConfig.from_dict(_winner_cfg(storage))
    extra = root / "v8.yaml"
    extra.write_text(cfg.replace(lr_modules=cfg.lr_modules * 3, data_root="/elsewhere").to_yaml())
    _, err = _hpo(root, monkeypatch, capsys, *base, "--config", str(extra))
    assert "the test identities have already been used for" in err and "v8 is marked" in err
    table = fr.current(_study(storage))
    late = next(r for r in table["aspects"][0]["rows"] if r["label"] == "v8")
    assert late["late"] >= 1 and len(late["seeds"]) == 2
    assert "v8 †" in (root / "studies" / DEMO / "final" / "table.md").read_text()
    assert any("data_root" in n for n in table["notes"])  # aligned with the study's test set


def _winner_cfg(storage: str) -> dict:
    study = _study(storage)
    return fr.plan(study, 2).entries[0].config


@pytest.mark.integration
def test_an_interrupted_final_keeps_its_runs_and_resumes(confirmed, tmp_path, monkeypatch, capsys):
    from handreid.engine import fit
    from hpo.search.objective import DataPool
    from tests.hpo.conftest import DEMO

    root, storage = _copy(confirmed, tmp_path)
    monkeypatch.chdir(root)
    study = _study(storage)
    p = fr.plan(study, 2)
    fr.register(study, p, "test")
    runs = fr.open_runs(study, study._storage)
    fr.queue(runs, p)
    calls = []

    def stopping_fit(cfg, **kw):
        calls.append(cfg.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second run
        return fit(cfg, **kw)

    with pytest.raises(KeyboardInterrupt):
        fr.work(runs, fr.FinalRun(DEMO, device="cpu", data=DataPool(), fit_fn=stopping_fit))
    done = runs.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 1 and len(runs.get_trials(states=(TrialState.FAIL,))) == 1
    partial = fr.summarize(study, p, runs)
    assert not partial["complete"] and len(partial["missing"]) == len(p.runs()) - 1
    assert "Partial: " in ft.markdown(partial)

    _hpo(root, monkeypatch, capsys, "final", "--study", DEMO, "--storage", storage,
         "--seeds", "2", "--quiet")  # fmt: skip
    complete = runs.get_trials(states=(TrialState.COMPLETE,))
    keys = [t.system_attrs["hpo:final_key"] for t in complete]
    assert len(keys) == len(set(keys)) == len(p.runs())  # every run once, none repeated
    assert done[0].number in {t.number for t in complete}
    assert fr.current(_study(storage))["complete"]


@pytest.mark.integration
def test_each_aspect_gets_its_section(confirmed, tmp_path, monkeypatch, capsys):
    from tests.hpo.conftest import DEMO

    root, storage = _copy(confirmed, tmp_path)
    _hpo(root, monkeypatch, capsys, "final", "--study", DEMO, "--storage", storage,
         "--seeds", "2", "--aspects", "each", "--quiet")  # fmt: skip
    table = fr.current(_study(storage))
    assert [s["aspect"] for s in table["aspects"]] == list(ASPECTS)
    assert all(s["rows"][0]["metrics"] for s in table["aspects"])
    md = (root / "studies" / DEMO / "final" / "table.md").read_text()
    assert md.count("not on this aspect alone") == 3  # the study tuned on dorsal right


@pytest.mark.integration
def test_final_on_the_11k_sample(tmp_path, monkeypatch, capsys):
    if not (SHARED_11K / "HandInfo.csv").is_file():
        pytest.skip(f"11k Hands sample not found at {SHARED_11K}")
    root = tmp_path / "s"
    root.mkdir()
    storage = f"sqlite:///{root}/s.db"
    common = ["--study", "sample", "--storage", storage]
    _hpo(root, monkeypatch, capsys, "run", "--backbone", "tiny-vit", "--trials", "2",
         "--epochs", "1", "--quiet", "--data", str(SHARED_11K), *common)  # fmt: skip
    _hpo(root, monkeypatch, capsys, "confirm", "--top", "2", "--seeds", "5", "--quiet", *common)
    _hpo(root, monkeypatch, capsys, "final", "--seeds", "2", "--quiet", *common)
    table = fr.current(optuna.load_study(study_name="sample", storage=storage))
    section = table["aspects"][0]
    assert section["split"] == "random" and section["test_identities"] > 5
    assert section["published"] and not any(p["comparable"] for p in section["published"])
    row = section["rows"][0]
    report = _evaluate(str(root / row["checkpoints"][0]), capsys)
    seed = row["seeds"][0]
    assert report["num_splits"] == section["num_splits"]
    runs = fr.load_runs(optuna.load_study(study_name="sample", storage=storage))
    t = next(
        t for t in runs.get_trials(states=(TrialState.COMPLETE,))
        if t.system_attrs["hpo:final_seed"] == seed
        and t.system_attrs["hpo:final_label"] == row["label"]
    )  # fmt: skip
    assert t.value == pytest.approx(report["mAP"], abs=2e-6)


def test_the_study_name_may_be_left_out_beside_its_companions(tmp_path):
    from hpo.search.study import load_study

    url = f"sqlite:///{tmp_path}/s.db"
    for name in ("s", "s.confirm", "s.final"):
        optuna.create_study(study_name=name, storage=url)
    assert load_study(url, None).study_name == "s"
