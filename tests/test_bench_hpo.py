"""The HPO-efficiency benchmark's bookkeeping: curves, thresholds and ratios on hand-made runs."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_hpo.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_hpo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trial(number, value, epochs, state="COMPLETE"):
    return {"number": number, "state": state, "value": value, "epochs": epochs}


def run(strategy, seed, trials, untrained=0.2):
    return {
        "strategy": strategy,
        "seed": seed,
        "trials": trials,
        "untrained_map": untrained,
        "seconds": 1.0,
    }


def test_curve_counts_pruned_epochs_but_only_completed_values(bench):
    r = run("tpe:median", 0, [trial(1, 0.5, 2, "PRUNED"), trial(0, 0.3, 8), trial(2, 0.6, 8)])
    xs, ys = bench.curve(r)
    assert xs == [8, 10, 18]  # sorted by trial number
    assert ys == [0.3, 0.3, 0.6]  # the pruned trial's 0.5 is not a result of the study
    assert bench.epochs_to_reach(r, 0.55) == 18
    assert bench.epochs_to_reach(r, 0.7) is None


def test_ratio_is_epochs_to_95_percent_of_the_seed_best_against_random(bench):
    runs = [
        # random: reaches 0.57 (>= 0.95 x 0.6) after its third trial, 24 epochs
        run("random:none", 0, [trial(0, 0.3, 8), trial(1, 0.4, 8), trial(2, 0.6, 8)]),
        # tpe: reaches 0.58 after 8 + 2 + 2 epochs, best 0.58
        run("tpe:median", 0, [trial(0, 0.3, 8), trial(1, 0.1, 2, "PRUNED"), trial(2, 0.58, 2)]),
    ]
    result = bench.analyse(runs)
    assert result["reference"] == {0: 0.6}
    tpe = result["summary"]["tpe:median"]
    assert tpe["to_95"] == 12 and result["summary"]["random:none"]["to_95"] == 24
    assert tpe["ratio_to_95"] == pytest.approx(0.5)
    assert tpe["ratio_epochs_total"] == pytest.approx(12 / 24)
    # gain threshold: 0.2 + 0.95 x 0.4 = 0.58
    assert tpe["to_95_gain"] == 12 and tpe["missed_95_gain"] == 0


def test_a_run_that_never_reaches_the_threshold_is_charged_its_budget(bench):
    runs = [
        run("random:none", 0, [trial(0, 0.9, 8)]),
        run("tpe:median", 0, [trial(0, 0.5, 8), trial(1, 0.2, 3, "PRUNED")]),
    ]
    tpe = bench.analyse(runs)["summary"]["tpe:median"]
    assert tpe["to_95"] == 11 and tpe["missed_95"] == 1


def test_result_names_follow_the_data(bench):
    assert bench.parse_args([]).name == "hpo_efficiency"
    assert bench.parse_args(["--synthetic"]).name == "hpo_efficiency_synthetic"
    assert bench.parse_args(["--from-json", "x/saved.json"]).name == "saved"
