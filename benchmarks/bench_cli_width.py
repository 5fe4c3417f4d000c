"""How wide the plain Optuna CLI prints our studies: the longest line of ``optuna studies``
(table), of ``optuna trials`` (table and YAML) and the longest study and trial user attribute
(JSON characters), for every study in a storage.

Usage: ``python benchmarks/bench_cli_width.py sqlite:///studies/handreid.db``
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna


def longest(args: list[str]) -> int:
    cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(cli), *args], capture_output=True, text=True, check=True).stdout
    return max(map(len, out.splitlines()), default=0)


def main(storage: str) -> dict:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    result = {"optuna studies": longest(["studies", "--storage", storage])}
    for summary in optuna.get_all_study_summaries(storage):
        name = summary.study_name
        study = optuna.load_study(study_name=name, storage=storage)
        trials = ["trials", "--storage", storage, "--study-name", name]
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
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), indent=1))
