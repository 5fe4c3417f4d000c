"""`hpo show` and `hpo trials`: text for people, JSON for programs, a trial's epoch table."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from hpo.cli import main
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
    # at 80 columns the columns that do not fit follow in a second table keyed the same way
    narrow = epoch_table(rows, columns=80).splitlines()
    assert max(map(len, narrow)) <= 80 and "" in narrow
    second = narrow[narrow.index("") + 1].split()
    assert second[:2] == ["fold", "epoch"] and second[-1] == "s"
    assert narrow[-1] == "* best val mAP of the run"


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
