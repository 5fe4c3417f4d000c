"""`hpo show` and `hpo trials`: text for people, JSON for programs, a trial's epoch table."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from optuna.trial import TrialState

from hpo.cli import main
from hpo.common.attrs import attrs_of
from hpo.common.lines import number
from hpo.views.listing import epoch_rows, epoch_table


def hpo(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_show_lists_value_se_baselines_the_change_from_the_baseline_and_the_confirmation(
    stored, capsys, monkeypatch
):
    url, study = stored
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = hpo(["show", "--storage", url], capsys)
    assert code == 0, err
    lines, words = out.splitlines(), " ".join(out.split())  # words: across wrapped lines
    assert lines[0].startswith("confirmed winner: trial ")  # the decision is the headline
    assert "study s: 5 complete, 1 pruned, 1 failed, 1 running" in lines
    after = lines[lines.index("top trials (val mAP ± SE):") + 1 :]
    top = [line for line in after if line.startswith("  #")][:5]
    assert all(" ± " in line and "(3 folds)" in line for line in top)
    assert sum("baseline hand-tuned" in line for line in top) == 1
    best = study.best_trial
    assert best.number != 0  # a tuned trial beat the baseline (trial 0)
    assert f"best trial {best.number} vs baseline hand-tuned (trial 0): +0." in words
    assert "paired by fold and seed" in words
    changed = lines.index("  parameters changed from the baseline:")
    assert lines[changed + 1] == f"    lr_modules: 0.001 -> {best.params['lr_modules']:.4g}"
    confirm = lines.index(next(x for x in lines if x.startswith("confirmed on seeds [1, 2]")))
    assert confirm > changed
    assert all(len(line) <= 80 for line in lines), out


def test_show_json_is_the_summary_for_programs(stored, capsys):
    url, study = stored
    code, out, _ = hpo(["show", "--storage", url, "--json", "--top", "3"], capsys)
    data = json.loads(out)
    assert code == 0 and data["study"] == "s"
    assert data["counts"] == {
        "complete": 5,
        "pruned": 1,
        "fail": 1,
        "running": 1,
        "waiting": 1,
        "total": 9,
    }
    assert data["best"]["value"] == pytest.approx(study.best_value)
    assert data["best"]["value_se"] > 0 and data["best"]["n_folds"] == 3
    assert [t["number"] for t in data["top"]] == [
        t.number
        for t in sorted(
            (t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value
        )[:3]
    ]
    assert data["baselines"] == [0]
    cmp = data["baseline_comparison"]
    assert cmp["baseline"] == 0 and cmp["baseline_name"] == "hand-tuned"
    assert cmp["diff"] == pytest.approx(study.best_value - study.trials[0].value)
    assert data["confirm"]["seeds"] == [1, 2] and data["confirm_verdict"]


def header_names(lines: list[str]) -> list[str]:
    """The column names of a table whose long names take two header lines (right- or
    left-aligned under each other): the two lines' pieces joined."""
    top = {m.end(): m.group() for m in re.finditer(r"\S+", lines[0])}
    top |= {m.start(): m.group() for m in re.finditer(r"\S+", lines[0])}
    names = []
    for m in re.finditer(r"\S+( \S+)?", lines[1]):  # "val mAP": one space inside a name
        names.append(top.get(m.end(), top.get(m.start(), "")) + m.group())
    return names


def test_trials_table_is_one_row_per_trial_best_first(stored, capsys, monkeypatch):
    url, study = stored
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = hpo(["trials", "--storage", url, "--table"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert lines[0].split() == ["lr_"] or header_names(lines[:2])[:4] == [
        "trial",
        "state",
        "val mAP",
        "SE",
    ]
    names = header_names(lines[:2])
    assert names == ["trial", "state", "val mAP", "SE", "lr_modules"], names  # whole names
    rows = [line.split() for line in lines[2:11]]
    complete = sorted(
        (t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: -t.value
    )
    assert [int(r[0]) for r in rows[:5]] == [t.number for t in complete]  # best first
    assert [r[1] for r in rows] == ["COMPLETE"] * 5 + ["PRUNED", "FAIL", "RUNNING", "WAITING"]
    best = complete[0]
    assert rows[0][2:] == [
        f"{best.value:.3f}",
        f"{best.user_attrs['value_se']:.3f}",
        number(best.params["lr_modules"]),
    ]
    assert rows[6][2:] == ["-", "-", number(0.02)]  # a failed trial: no value, its parameter
    assert len(lines) == 11, "one line per trial, a header of two, no footer: all fit"


def test_trials_table_leaves_out_the_rightmost_parameters_and_says_so(capsys, monkeypatch):
    study = optuna.create_study(direction="maximize")
    wide = {
        "lr_clip_visual": 3e-3,
        "lr_modules": 1.49e-3,
        "max_norm": 0.649,
        "bnneck_dim": 128,
        "classifier": "arcface",
        "arcface_scale": 60.4,
        "supcon_temperature": 0.0319,
        "prompt_template": "A detailed photo of {}'s {aspect} hand for identification.",
    }
    for i in range(8):
        trial = study.ask()
        for k, v in wide.items():
            if isinstance(v, str):
                trial.suggest_categorical(k, [v])
            elif isinstance(v, int):
                trial.suggest_categorical(k, [v, 32])
            else:
                trial.suggest_float(k, v / 2, v * 2)
        study.tell(trial, 0.4 + i / 100)
    from hpo.views.listing import trials_table

    monkeypatch.setenv("COLUMNS", "80")
    lines = trials_table(study.trials).splitlines()
    assert all(len(line) <= 80 for line in lines)
    names = header_names(lines[:2])
    assert names[:4] == ["trial", "state", "val mAP", "SE"]
    assert names[4:] == list(wide)[: len(names) - 4] and len(names) > 6  # the leftmost ones
    footer = " ".join(" ".join(lines[10:]).split())  # across its wrapped lines
    left = list(wide)[len(names) - 4 :]
    assert footer.startswith(f"{len(left)} parameters left out to fit 80 columns: ")
    assert ", ".join(left) in footer
    assert [int(line.split()[0]) for line in lines[2:10]] == list(range(7, -1, -1))
    assert len(lines) < 14, "8 trials in at most 13 lines (the long form took 37)"


def test_trials_is_a_table_on_a_terminal_and_the_long_form_in_a_pipe(stored, capsys, monkeypatch):
    import sys

    url, _ = stored
    monkeypatch.setenv("COLUMNS", "80")
    _, piped, _ = hpo(["trials", "--storage", url], capsys)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    _, terminal, _ = hpo(["trials", "--storage", url], capsys)
    _, long, _ = hpo(["trials", "--storage", url, "--long"], capsys)
    assert piped.startswith("trial 0 (baseline hand-tuned) COMPLETE val mAP ")  # unchanged
    assert long.splitlines()[:7] == piped.splitlines()[:7]  # (a running trial's time moves)
    assert terminal.splitlines()[1].split()[:4] == ["trial", "state", "val", "mAP"]
    code, _, err = hpo(["trials", "--storage", url, "--long", "--table"], capsys)
    assert code == 2 and "not allowed with argument" in err


def test_ls_is_a_table_that_fits_with_the_companion_under_its_parent(
    stored, tmp_path, capsys, monkeypatch
):
    from hpo.records.companion import companion_name
    from hpo.views.headline import decision

    url, _ = stored
    name = "handreid-tiny-vit"  # the README's study: its companion's name is 25 characters
    copy = f"sqlite:///{tmp_path}/ls.db"
    for old, new in (("s", name), ("s.confirm", companion_name(name))):
        optuna.copy_study(from_study_name=old, from_storage=url, to_storage=copy, to_study_name=new)
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = hpo(["ls", "--storage", copy], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert lines[0].split() == [
        "study",
        "trials",
        "best",
        "confirmed",
        "[95%",
        "CI]",
        "vs",
        "baseline",
    ]
    d = decision(optuna.load_study(study_name=name, storage=copy))
    lo, hi = d["ci"]
    row = lines[1].split()
    assert row[:2] == [name, "9"]
    assert " ".join(row[3:7]) == f"#{d['winner']} {d['mean']:.3f} [{lo:.3f}, {hi:.3f}]"
    assert " ".join(row[7:]) in ("better", "not distinguishable", "worse", "is the baseline")
    runs = len(optuna.load_study(study_name=companion_name(name), storage=copy).trials)
    assert lines[2] == f"  {companion_name(name)}: {runs} confirm runs"
    assert len(lines) == 3


def test_show_summarises_the_best_trial_with_3_decimals(stored, capsys, monkeypatch):
    url, study = stored
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = hpo(["show", "--storage", url], capsys)
    best = study.best_trial
    se = best.user_attrs["value_se"]
    line = next(x for x in out.splitlines() if x.startswith(f"best trial {best.number}"))
    assert line == (
        f"best trial {best.number}: val mAP {best.value:.3f} ± {se:.3f} (3 folds), "
        f"rank1 {attrs_of(best)['rank1']:.3f}"
    )


def test_trials_lists_every_trial_with_its_state_and_why_it_ended(stored, capsys):
    url, _ = stored
    code, out, _ = hpo(["trials", "--storage", url], capsys)
    assert code == 0
    heads = [line for line in out.splitlines() if line.startswith("trial ")]
    assert len(heads) == 9
    assert heads[0].startswith("trial 0 (baseline hand-tuned) COMPLETE val mAP ")
    assert heads[5].startswith("trial 5 PRUNED at fold 1/3, epoch 2 (val mAP 0.250) · 2 epochs")
    assert heads[6].startswith("trial 6 FAIL · 3.0s · error: RuntimeError: CUDA error")
    assert heads[7].startswith("trial 7 RUNNING · fold 2/3 · epoch 1/3 · val mAP 0.500 · ")
    assert heads[8].startswith("trial 8 WAITING · retry of trial 1")

    code, out, _ = hpo(["trials", "--storage", url, "--state", "pruned", "fail", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and [t["state"] for t in data["trials"]] == ["PRUNED", "FAIL"]
    pruned, failed = data["trials"]
    assert pruned["pruned_at"] == "fold 1/3, epoch 2" and pruned["seconds"] == 8.0
    assert failed["error"].startswith("RuntimeError") and failed["params"] == {"lr_modules": 0.02}

    code, out, _ = hpo(["trials", "--storage", url, "--state", "waiting", "--json"], capsys)
    assert json.loads(out)["trials"][0]["state"] == "WAITING"
    code, out, _ = hpo(
        ["trials", "--storage", url, "--study", "s.confirm", "--state", "fail"], capsys
    )
    assert code == 0 and out == "study s.confirm has no trials in state fail\n"


def test_show_trial_prints_its_epochs_by_fold(stored, capsys):
    url, study = stored
    code, out, _ = hpo(["show", "--storage", url, "--trial", "1"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("trial 1 COMPLETE val mAP ")
    table = lines[lines.index(next(x for x in lines if x.startswith("fold"))) :]
    assert table[0].split() == ["fold", "epoch", "val", "mAP"]
    rows = [line.split() for line in table[1:-1]]
    assert [(r[0], r[1]) for r in rows] == [(str(f), str(e)) for f in (1, 2, 3) for e in (1, 2, 3)]
    assert [len(r) == 4 and r[3] == "*" for r in rows] == [False, False, True] * 3  # last is best
    values = study.trials[1].intermediate_values
    assert [float(r[2]) for r in rows] == pytest.approx([values[s] for s in range(1, 10)], abs=5e-4)

    code, out, _ = hpo(["show", "--storage", url, "--trial", "1", "--json"], capsys)
    data = json.loads(out)
    assert data["trial"]["number"] == 1 and len(data["epochs"]) == 9
    assert data["epochs"][3] == {"run": 1, "fold": 1, "epoch": 1, "step": 4, "mAP": values[4]}


def test_epoch_table_takes_the_full_history_of_a_trial():
    rows = [
        {
            "run": r,
            "fold": r,
            "epoch": e,
            "step": 2 * r + e,
            "mAP": m,
            "loss": 2.0 / e,
            "id": 1.5,
            "tri": 0.3,
            "supcon": 0.2,
            "lr_modules": 3e-4 * e,
            "lr_clip_visual": 1e-5,
            "rank1": m + 0.1,
            "rank5": 0.9,
            "rank10": 1.0,
            "seconds": 3.14159,
        }
        for r, pair in enumerate([(0.41, 0.45), (0.52, 0.50)])
        for e, m in enumerate(pair, start=1)
    ]
    lines = epoch_table(rows, columns=200).splitlines()  # one table on a wide terminal
    assert lines[0].split() == [
        "fold",
        "epoch",
        "val",
        "mAP",
        "rank1",
        "rank5",
        "rank10",
        "loss",
        "id",
        "tri",
        "supcon",
        "lr_clip_visual",
        "lr_modules",
        "s",
    ]
    assert lines[1].split() == [
        "1",
        "1",
        "0.410",
        "0.510",
        "0.900",
        "1.000",
        "2",
        "1.5",
        "0.3",
        "0.2",
        "1e-5",
        "3e-4",
        "3.1",
    ]
    assert lines[2].endswith("*") and lines[3].endswith("*")  # each fold's best epoch
    assert not lines[1].endswith("*") and not lines[4].endswith("*")
    assert lines[-1] == "* best val mAP of the run"
    # at 80 columns long names take two header lines, and the columns that still do not fit
    # follow in a second table keyed the same way, its rows marked as well
    narrow = epoch_table(rows, columns=80).splitlines()
    assert max(map(len, narrow)) <= 80 and "" in narrow
    first, second = blocks(narrow[:-1])
    assert first[0].split() == ["lr_clip_"] and first[1].split()[-1] == "visual"
    assert second[0].split() == ["lr_"] and second[1].split() == ["fold", "epoch", "modules", "s"]
    assert [line.endswith("*") for line in first[2:]] == [False, True, True, False]
    assert [line.endswith("*") for line in second[2:]] == [False, True, True, False]
    assert narrow[-1] == "* best val mAP of the run"


def blocks(lines: list[str]) -> list[list[str]]:
    """The tables of an epoch table, split at its empty lines."""
    out: list[list[str]] = [[]]
    for line in lines:
        if line:
            out[-1].append(line)
        else:
            out.append([])
    return out


def history(epochs: int = 2) -> list[dict]:
    """A real tiny-vit trial's history: the columns `hpo show --trial` prints for it."""
    return [
        {
            "run": 0,
            "fold": 0,
            "epoch": e,
            "step": e,
            "mAP": 0.469 + 0.05 * e,
            "rank1": 0.226,
            "rank5": 0.838,
            "rank10": 0.998,
            "loss": 9.282,
            "id": 7.628,
            "tri": 0.7709,
            "supcon": 3.53,
            "lr_clip_visual": 3e-3,
            "lr_modules": 3e-3,
            "seconds": 15.2,
        }
        for e in range(1, epochs + 1)
    ]


@pytest.mark.parametrize("columns", [60, 80, 100, 120, 200])
def test_the_best_epoch_mark_stays_beside_the_numbers_at_every_width(columns):
    """At 100 columns the mark once made a table of its own, with only the epoch numbers."""
    lines = epoch_table(history(), columns=columns).splitlines()
    assert max(map(len, lines)) <= columns
    for table in blocks(lines[:-1]):
        marked = [line for line in table if line.endswith("*")]
        assert len(marked) == 1, table  # the best epoch, in every table
        assert len(marked[0].split()) > 2, f"a table of the mark and the epoch only: {table}"


def test_epoch_rows_of_a_study_without_its_space_count_steps_as_epochs():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.3, 1)
    trial.report(0.4, 2)
    study.tell(trial, 0.4)
    rows = epoch_rows(study, study.trials[0])
    assert [(r["fold"], r["epoch"], r["mAP"]) for r in rows] == [(0, 1, 0.3), (0, 2, 0.4)]
    assert epoch_table(rows).splitlines()[0].split() == ["epoch", "val", "mAP"]
    assert epoch_table([]) == "no validated epoch recorded"


def test_the_best_trials_parameters_read_with_four_significant_figures():
    from hpo.views.listing import summary_lines

    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr_modules": 0.0007601067873161951, "max_norm": 0.5692121054602812, "dim": 64},
            distributions={
                "lr_modules": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
                "max_norm": optuna.distributions.FloatDistribution(0.1, 5.0),
                "dim": optuna.distributions.CategoricalDistribution([32, 64]),
            },
            value=0.5,
        )
    )
    lines = summary_lines(study)
    assert [line.split() for line in lines[2:5]] == [
        ["lr_modules", "7.601e-4"],
        ["max_norm", "0.5692"],
        ["dim", "64"],
    ]
