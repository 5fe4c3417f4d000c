"""How wide our studies print: the plain Optuna CLI (the longest line of ``optuna studies``, of
``optuna trials`` as a table and as YAML, and the longest study and trial user attribute in
JSON characters), and ``hpo``'s own commands at a terminal width (``--columns``): the longest
line and the number of lines of ``hpo ls``, ``show``, ``trials`` (long form and table) and
``show --trial`` of the best trial, for every study in a storage.

Usage: ``python benchmarks/bench_cli_width.py sqlite:///studies/handreid.db [--columns 80]
[--code DIR]`` (``--code`` runs another checkout's ``hpo``, put first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]


def longest(args: list[str]) -> int:
    cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(cli), *args], capture_output=True, text=True, check=True).stdout
    return max(map(len, out.splitlines()), default=0)


def hpo_shape(args: list[str], columns: int, code: str) -> str:
    """``longest line / lines`` of ``hpo ARGS`` at ``columns`` (stdout, as in a pipe)."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": code, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], env=env, capture_output=True, text=True
    ).stdout
    lines = out.splitlines()
    return f"{max(map(len, lines), default=0)} / {len(lines)}"


def main(storage: str, columns: int = 80, code: str = str(ROOT)) -> dict:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    result = {
        "optuna studies": longest(["studies", "--storage", storage]),
        f"hpo ls at {columns} (longest / lines)": hpo_shape(
            ["ls", "--storage", storage], columns, code
        ),
    }
    for summary in optuna.get_all_study_summaries(storage):
        name = summary.study_name
        study = optuna.load_study(study_name=name, storage=storage)
        trials = ["trials", "--storage", storage, "--study-name", name]
        ours = ["--storage", storage, "--study", name]
        result[name] = {
            "optuna trials (table)": longest(trials),
            "optuna trials -f yaml": longest([*trials, "-f", "yaml"]),
            "longest study attribute": max(
                (len(json.dumps(v)) for v in study.user_attrs.values()), default=0
            ),
            "longest trial attribute": max(
                (len(json.dumps(v)) for t in study.trials for v in t.user_attrs.values()),
                default=0,
            ),
        }
        shapes = {
            "hpo show": ["show", *ours],
            "hpo trials (long)": ["trials", *ours],  # a pipe: the long form on any version
            "hpo trials --table": ["trials", "--table", *ours],
        }
        complete = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
        if complete:
            best = max(complete, key=lambda t: t.value).number
            shapes["hpo show --trial (best)"] = ["show", "--trial", str(best), *ours]
        for label, args in shapes.items():
            result[name][f"{label} at {columns} (longest / lines)"] = hpo_shape(args, columns, code)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage")
    parser.add_argument("--columns", type=int, default=80)
    parser.add_argument("--code", default=str(ROOT), help="checkout whose hpo to run")
    args = parser.parse_args()
    print(json.dumps(main(args.storage, args.columns, args.code), indent=1))
