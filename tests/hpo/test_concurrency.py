"""Processes started together on one study evaluate distinct parameters, on every storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.common.attrs import attrs_of
from hpo.records.storage import open_storage
from hpo.search.study import FINISHED, process_seed, run_until
from tests.hpo.test_workers import env, pg_url, run_args  # noqa: F401 - pg_url is a fixture


def test_each_process_and_each_start_draws_its_own_seed():
    seeds = {process_seed(0) for _ in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**32 for s in seeds)
    code = "from hpo.search.study import process_seed; print(process_seed(0))"
    others = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env()
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(others) == 2 and not {int(s) for s in others} & seeds


def few_values(trial: optuna.Trial) -> dict:
    return {"x": trial.suggest_int("x", 0, 3)}


def test_a_trial_that_repeats_another_trials_parameters_is_drawn_again():
    """Four values, four trials: every repeat is caught before it trains and drawn again."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trained = []
    run_until(
        study,
        lambda t: trained.append(few_values(t)["x"]) or 1.0,
        4,
        suggest=few_values,
        attrs={"sampler_seed": 0},
    )
    done = [t for t in study.trials if t.state in FINISHED]
    assert sorted(t.params["x"] for t in done) == [0, 1, 2, 3] == sorted(trained)
    repeats = [t for t in study.trials if t.state == TrialState.FAIL]
    assert repeats, "seed 0 draws some value twice among its first draws"
    assert all(t.user_attrs["error"].startswith("duplicate of trial") for t in repeats)
    assert all(attrs_of(t)["sampler_seed"] == 0 for t in study.trials)


def test_a_baseline_enqueued_twice_runs_once():
    """Two processes creating a study at once may both enqueue a baseline; the later copy
    yields to the earlier one, the earlier never to the later."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"x": 2})
    study.enqueue_trial({"x": 2})
    run_until(study, lambda t: float(few_values(t)["x"]), 2, suggest=few_values)
    trials = study.trials
    assert trials[0].params == {"x": 2} and trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs["error"] == "duplicate of trial 0; drawn again"
    assert len({t.params["x"] for t in trials if t.state in FINISHED}) == 2


def three_at_once(
    data: Path, storage: str, name: str, cwd: Path
) -> list[subprocess.CompletedProcess]:
    args = run_args(data, storage, name, 6, 1, 1, "--set", "num_splits=1")
    # one thread each: three processes share two cores
    procs = [
        subprocess.Popen(
            args,
            cwd=cwd,
            env={**env(), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def assert_six_distinct(results, storage: str, name: str) -> None:
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=open_storage(storage, create=False))
    trials = study.get_trials()
    done = [t for t in trials if t.state in FINISHED]
    assert len(done) == 6, [(t.number, t.state.name, t.user_attrs.get("error")) for t in trials]
    params = {tuple(sorted(t.params.items())) for t in done}
    assert len(params) == 6, "six distinct parameter sets"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.user_attrs.get("baseline") == "default" for t in done) == 1
    seeds = {attrs_of(t)["worker"]: attrs_of(t)["sampler_seed"] for t in trials}
    assert len(set(seeds.values())) == len(seeds), "one seed per process, recorded per trial"


@pytest.mark.integration
def test_three_processes_on_one_sqlite_study(synthetic_root, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    assert_six_distinct(three_at_once(synthetic_root, storage, "c", tmp_path), storage, "c")


@pytest.mark.integration
def test_three_processes_on_one_journal_file(synthetic_root, tmp_path):
    storage = str(tmp_path / "s.log")
    assert_six_distinct(three_at_once(synthetic_root, storage, "c", tmp_path), storage, "c")


@pytest.fixture
def fresh_pg_database(pg_url):  # noqa: F811
    """A new, empty database on the test server: machines started together on a new database
    also race to create Optuna's tables."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    name = f"handreid_c_{os.getpid()}_{time.time_ns()}"
    admin = sqlalchemy.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        pytest.skip(f"cannot create a database on the test server: {exc}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.integration
def test_three_processes_on_one_postgres_study(synthetic_root, tmp_path, fresh_pg_database):
    url = fresh_pg_database
    assert_six_distinct(three_at_once(synthetic_root, url, "c", tmp_path), url, "c")


def _take_queued(storage: str, name: str, start, out) -> None:
    """One process: ask until Optuna makes a new trial, reporting each queued trial it got."""
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage, create=False))
        start.wait()
        got = []
        while True:
            trial = study.ask()
            queued = "fixed_params" in study._storage.get_trial(trial._trial_id).system_attrs
            study.tell(trial, state=TrialState.FAIL)
            if not queued:
                break
            got.append(trial.number)
        out.put(got)
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        out.put(f"{type(exc).__name__}: {exc}")


def claims_by_three_processes(storage: str, name: str, queued: int) -> list:
    import multiprocessing

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=open_storage(storage))
    for i in range(queued):
        study.enqueue_trial({"x": i})
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_take_queued, args=(storage, name, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.mark.parametrize("repeat", range(10))
def test_a_queued_trial_is_taken_by_exactly_one_of_three_processes(tmp_path, repeat):
    """Three processes started together on one SQLite study take the queued trials (the
    baseline is one): each is taken once, by one process, and no process fails."""
    storage = f"sqlite:///{tmp_path}/s.db"
    results = claims_by_three_processes(storage, "q", 8)
    assert all(isinstance(r, list) for r in results), results
    taken = [n for r in results for n in r]
    assert sorted(taken) == list(range(8)), results


@pytest.mark.integration
def test_a_queued_trial_is_taken_once_on_postgres(fresh_pg_database):
    for repeat in range(3):
        results = claims_by_three_processes(fresh_pg_database, f"q{repeat}", 8)
        assert sorted(n for r in results for n in r) == list(range(8)), results
