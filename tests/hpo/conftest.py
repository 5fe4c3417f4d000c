"""Studies that several test modules read: each is built once per session and never written
by a test (a test that writes copies the database first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.decide import confirm as cf
from hpo.fleet.progress import PROGRESS_ATTR
from hpo.records.space import parse_space
from hpo.records.storage import open_storage
from hpo.search.study import create_or_resume, run_until
from tests.hpo.test_confirm import SPACE, objective, stub_fit


def higher_lr_is_better(cfg) -> float:
    return 0.5 + 3 * cfg.lr_modules


@pytest.fixture(scope="session")
def stored(tmp_path_factory):
    """A 3-fold study in SQLite: the baseline, four tuned trials, a confirmation, and one
    trial in each other state (pruned, failed, running with progress, waiting)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('listing')}/s.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(SPACE)
    study = create_or_resume(
        open_storage(url),
        "s",
        space,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        context={"command": "test"},
    )
    fit = stub_fit(higher_lr_is_better)
    run_until(study, objective(space, fit, prune_between_runs=False), 5)
    p = cf.plan(study, 2, 2)
    companion = cf.open_companion(study, study._storage)
    cf.queue(study, companion, p)
    cf.work(companion, objective(space, fit, prune_between_runs=False, keep_identity_ap=True))
    study.set_user_attr("confirm", cf.summarize(study, companion, p))
    lr = {"lr_modules": FloatDistribution(1e-4, 1e-1, log=True)}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params={"lr_modules": 0.05},
            distributions=lr,
            intermediate_values={1: 0.2, 2: 0.25},
            user_attrs={
                "pruned_at": "fold 1/3, epoch 2",
                "prune_reason": "pruned at fold 1/3, epoch 2 (mAP 0.2500)",
                "epochs_run": 2,
                "seconds": 8.0,
            },
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"lr_modules": 0.02},
            distributions=lr,
            user_attrs={"error": "RuntimeError: CUDA error: device-side assert", "seconds": 3.0},
        )
    )
    running = study.ask({"lr_modules": lr["lr_modules"]})
    running.set_user_attr(PROGRESS_ATTR, {"where": "fold 2/3", "epoch": 1, "epochs": 3, "mAP": 0.5})
    study.enqueue_trial({"lr_modules": 0.001}, user_attrs={"retry_of": 1})
    return url, study


DEMO = "hands-demo"


def hpo_process(cwd: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess:
    """``hpo ARGS`` as a user runs it, in its own process; it must succeed."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="session")
def confirmed(tmp_path_factory) -> dict:
    """A 3-trial tiny-vit study on synthetic hands (``hpo run`` in ``root``, storage
    ``root/s.db``, artifacts in ``root/studies/artifacts``), confirmed on 3 seeds, with its
    report. Trained once per session; a test that writes into it works on a copy."""
    from handreid.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("decision")
    write_synthetic(root / "hands", ids=32, per_id=8, size=64, seed=0)
    storage = f"sqlite:///{root}/s.db"
    base = ["--storage", storage]
    run = ["run", "--backbone", "tiny-vit", "--trials", "3", "--epochs", "1", "--quiet"]
    ran = hpo_process(root, *run, "--data", str(root / "hands"), "--study", DEMO, *base)
    confirm = hpo_process(
        root, "confirm", "--study", DEMO, "--top", "3", "--seeds", "3", "--quiet", *base
    )
    hpo_process(root, "report", "--study", DEMO, *base)
    return {"root": root, "storage": storage, "run_out": ran.stdout, "confirm_out": confirm.stdout}
