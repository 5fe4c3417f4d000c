"""`hpo export --trial N` says how trial N, not the study's winner, stands against the floors."""

from __future__ import annotations

import optuna
import pytest

from hpo.cli import main


def hpo(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def floored(stored, tmp_path) -> str:
    """The stored study with a pixel floor of 0.555: the confirmed winner (trial 2, 95 % CI
    about [0.560, 0.571]) clears it; the baseline (trial 0, about [0.496, 0.549]) is below it."""
    url, _ = stored
    copy = f"sqlite:///{tmp_path}/floors.db"
    for name in ("s", "s.confirm"):
        optuna.copy_study(from_study_name=name, from_storage=url, to_storage=copy)
    study = optuna.load_study(study_name="s", storage=copy)
    record = {"pixels": [0.555, 0.5], "backbone": [0.3, 0.3], "backbone_label": "untrained x"}
    study.set_user_attr("floors", record)
    return copy


def test_export_of_a_chosen_trial_warns_about_its_own_floor(floored, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out_yaml = tmp_path / "t0.yaml"
    code, out, err = hpo(["export", "--storage", floored, "--trial", 0, "--out", out_yaml], capsys)
    assert code == 0, err
    words = " ".join(out.split())
    assert "warning: the exported trial 0 (confirmed val mAP [0.493, 0.545]) is below the " in words
    assert "pixel floor (0.555)" in words and "the confirmed winner" not in words
    assert all(len(line) <= 80 for line in out.splitlines())
    header = out_yaml.read_text()
    assert "# warning: the exported trial 0 (confirmed val mAP [0.493, 0.545]) is below" in header

    code, out, err = hpo(["export", "--storage", floored, "--out", tmp_path / "w.yaml"], capsys)
    assert code == 0, err
    assert "warning" not in out, "the confirmed winner clears the floor"


def test_an_unconfirmed_trial_is_judged_by_its_value_and_2_se(floored, tmp_path, capsys):
    study = optuna.load_study(study_name="s", storage=floored)
    raced = {r["trial"] for r in study.user_attrs["confirm"]["rows"]}
    unraced = [t for t in study.trials if t.state.name == "COMPLETE" and t.number not in raced]
    verbs = set()
    for trial in unraced:
        se = trial.user_attrs["value_se"]
        lo, hi = trial.value - 2 * se, trial.value + 2 * se
        argv = ["export", "--storage", floored, "--trial", trial.number]
        code, out, _ = hpo([*argv, "--out", tmp_path / f"{trial.number}.yaml"], capsys)
        assert code == 0 and lo < 0.555  # (the study's values: each reaches below the floor)
        verb = "is below" if hi < 0.555 else "does not clear"
        verbs.add(verb)
        assert (
            f"warning: the exported trial {trial.number} (val mAP {trial.value:.3f}, ± 2 SE "
            f"[{lo:.3f}, {hi:.3f}]) {verb} the pixel floor (0.555)" in " ".join(out.split())
        )
    assert verbs == {"is below", "does not clear"}
