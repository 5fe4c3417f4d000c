"""The confirm table as `hpo confirm` and `hpo show` print it: rows that fit the terminal, the
incumbent's mark and what it means, each comparison once, and whole sentences."""

from __future__ import annotations

import copy

import pytest

from hpo.decide.confirm import format_summary


@pytest.fixture
def summary(stored) -> dict:
    """The stored study's confirm summary: tuned trial 2 is the incumbent, the baseline
    (trial 0, hand-tuned) the reference; copied, so that a test may change it."""
    _, study = stored
    return copy.deepcopy(study.user_attrs["confirm"])


def baseline_is_the_incumbent(summary: dict, name: str = "hand-tuned") -> dict:
    """The same runs when the study's best trial was its baseline: every candidate's
    comparison with the incumbent is then its comparison with the baseline."""
    summary["incumbent"] = summary["reference_baseline"]
    for row in summary["rows"]:
        row["vs_incumbent"] = row["vs_baseline"]
        if row["role"] == "baseline":
            row["baseline"] = name
    return summary


def rows_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  #")]


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_the_table_fits_and_its_words_are_whole(summary, columns):
    text = format_summary(summary, columns)
    assert all(len(line) <= columns for line in text.splitlines()), text
    words = " ".join(text.split())
    assert "each config trained for its fixed epochs (ep) and measured at the last one" in words
    rows = rows_of(text)
    assert len(rows) == 3, "one line per config"
    for row in rows:
        assert row.split()[0].startswith("#") and row.split()[-1] == "6"  # n, the last column


def test_the_incumbent_is_marked_and_its_mark_explained_when_it_is_the_baseline(summary):
    text = format_summary(baseline_is_the_incumbent(summary), 80)
    (marked,) = [row for row in rows_of(text) if "*" in row]
    assert marked.split()[:4] == ["#0", "*", "baseline", "hand-tuned"]
    assert "  * the incumbent: the study's best trial and the reference baseline" in text
    # each candidate compared once: against the baseline, which is also the incumbent
    assert text.count("vs baseline") == 2 and "vs incumbent" not in text


def test_each_comparison_is_printed_once_when_they_differ(summary):
    text = format_summary(summary, 80)
    assert text.count("vs baseline") == 2  # trials 2 and 3 against the baseline
    assert text.count("vs incumbent") == 2  # trial 3 and the baseline against trial 2
    (marked,) = [row for row in rows_of(text) if "*" in row]
    assert marked.split()[:3] == ["#2", "*", "candidate"]
    assert "  * the incumbent: the study's best trial\n" in text + "\n"


def test_a_long_baseline_name_shortens_the_role_and_keeps_the_mark(summary):
    name = "hand-tuned-by-the-2023-sweep-over-eleven-settings"
    text = format_summary(baseline_is_the_incumbent(summary, name), 80)
    assert all(len(line) <= 80 for line in text.splitlines())
    (marked,) = [row for row in rows_of(text) if "*" in row]
    assert marked.split()[:3] == ["#0", "*", "baseline"]
    assert not [w for w in text.split() if name.startswith(w.strip("(),")) and len(w) > 4], (
        "the name is left out whole, never cut"
    )


def test_numbers_read_as_everywhere_else(summary):
    text = format_summary(summary, 80)
    best = next(r for r in summary["rows"] if r["trial"] == 2)
    lo, hi = best["ci"]
    (row,) = [r for r in rows_of(text) if r.startswith("  #2")]
    assert f"{best['objective']:.3f} ± {best['objective_se']:.3f}" in row  # value ± SE
    assert f"{best['mean']:.3f} [{lo:.3f}, {hi:.3f}]" in row  # a mean and its interval
    d = best["vs_baseline"]
    assert f"vs baseline   {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p=0.018" in text


def test_the_kept_models_sentence_is_finished(summary):
    summary["models"] = [[2, 7], [0, 9]]
    words = " ".join(format_summary(summary, 80).split())
    assert (
        "models kept (seed 1, fold 0, test metrics inside): trial 2 (confirm run 7), trial 0 "
        "(confirm run 9); `hpo export --checkpoint` copies the exported trial's model next to "
        "its YAML" in words
    )
