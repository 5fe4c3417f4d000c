"""hpo/ is built in layers: each subpackage imports only the layers below it, and no module
imports another in a circle. Every import statement counts, also those inside functions, so a
lazy import cannot hide an upward edge; imports under ``if TYPE_CHECKING:`` do not run and do
not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hpo

ROOT = Path(hpo.__file__).parent
# bottom to top; commands and cli sit on top of everything
LAYERS = ("common", "records", "fleet", "search", "decide", "views", "commands", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1] + [node.module or ""]).strip(".")
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in graph.items():
        here = _layer(mod)
        for t in targets:
            there = _layer(t)
            if here is not None and there is not None and there > here:
                bad.append(f"{mod} -> {t} ({LAYERS[here]} imports {LAYERS[there]})")
    return sorted(bad)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_layer():
    loose = [m for m in _modules() if m != "hpo" and _layer(m) is None]
    assert loose == [], f"modules outside the layers {LAYERS}: {loose}"


def test_no_layer_imports_a_layer_above_it():
    assert upward_imports(_graph()) == []


def test_no_import_circle():
    assert circles(_graph()) == []


@pytest.mark.parametrize(
    "graph, upward, circle",
    [
        ({"hpo.records.a": {"hpo.views.b"}, "hpo.views.b": set()}, 1, 0),
        ({"hpo.decide.a": {"hpo.decide.b"}, "hpo.decide.b": {"hpo.decide.a"}}, 0, 1),
        ({"hpo.views.a": {"hpo.records.b"}, "hpo.records.b": set()}, 0, 0),
    ],
)
def test_the_checks_see_what_they_look_for(graph, upward, circle):
    assert len(upward_imports(graph)) == upward
    assert len(circles(graph)) == circle


def test_each_layer_says_what_it_owns_and_what_it_may_import():
    for layer in LAYERS[:-1]:
        doc = ast.get_docstring(ast.parse((ROOT / layer / "__init__.py").read_text())) or ""
        assert "Imports" in doc, f"hpo/{layer}/__init__.py: no 'Imports ...' line in its docstring"
