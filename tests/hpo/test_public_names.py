"""Names that users and our docs cite keep working: every dotted ``hpo.`` name in the README
and docs resolves, and each flat module name of earlier versions imports as the very module at
its new home."""

from __future__ import annotations

import importlib
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hpo

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_NAMES = {"hpo.yaml", "hpo.py"}  # file names in prose, not Python names
# the names the README and docs cited before hpo/ was cut into layers
CITED_BEFORE = [
    "hpo.history.load_history",
    "hpo.optuna_internals",
    "hpo.confirm.decision",
    "hpo.confirm.decide",
    "hpo.study.make_pruner",
    "hpo.pruning.run_reference",
    "hpo.objective",
]


def resolve(dotted: str):
    """The module or attribute a dotted name means: the longest importable module prefix,
    then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def cited() -> list[str]:
    found = set()
    for doc in DOCS:
        found |= set(re.findall(r"\bhpo(?:\.[A-Za-z_]+)+", doc.read_text()))
    return sorted(found - NOT_NAMES)


@pytest.mark.parametrize("name", cited() + CITED_BEFORE)
def test_a_cited_name_resolves(name):
    assert resolve(name) is not None


@pytest.mark.parametrize("old, new", sorted(hpo.MOVED.items()))
def test_a_flat_name_of_earlier_versions_is_the_module_itself(old, new):
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new


def test_old_imports_monkeypatching_and_pickles_see_one_module(monkeypatch):
    from hpo.history import load_history

    from hpo.records import history

    assert load_history is history.load_history
    monkeypatch.setattr("hpo.history.HISTORY_FILE", "patched.json")
    assert history.HISTORY_FILE == "patched.json"
    assert pickle.loads(pickle.dumps(load_history)) is load_history


def test_an_old_import_works_in_a_fresh_interpreter():
    code = "from hpo.confirm import decision; from hpo.study import make_pruner; print(decision.__module__, make_pruner.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["hpo.decide.confirm", "hpo.search.study"]


def test_the_resolver_fails_on_a_name_that_does_not_exist():
    with pytest.raises(AttributeError):
        resolve("hpo.records.history.no_such_name")
