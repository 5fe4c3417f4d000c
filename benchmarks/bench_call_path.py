"""How far one command wanders through hpo's modules: the modules its calls pass through, in
call order, for ``hpo export --checkpoint`` on a confirmed study.

    python benchmarks/bench_call_path.py [--code DIR] [--keep DIR]

Builds a 3-trial tiny-vit study on synthetic hands in a temporary folder (``hpo run`` +
``hpo confirm``), then runs ``hpo export --checkpoint`` in-process under ``sys.setprofile``
and records every call into an ``hpo`` function (module bodies run by imports left out).
Consecutive calls in one module are one stay; the line gives the stays, the modules (rooms),
the stays in a module already left (returns), the most-entered modules, and the calls into
the study's storage (Optuna storage methods called from outside the storage). ``--code DIR`` runs another checkout's ``hpo`` (e.g. an older
commit in a worktree) on the same recipe, for a before/after.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRACE = r"""
import collections, json, sys
from hpo.cli import main
calls, reads = [], collections.Counter()
def profile(frame, event, arg):
    if event != "call" or frame.f_code.co_name == "<module>":  # imports are not the path
        return
    name = frame.f_globals.get("__name__", "")
    if name == "hpo" or name.startswith("hpo."):
        calls.append(name)
    elif name.startswith("optuna.storages") and not frame.f_code.co_name.startswith("_"):
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        in_memory = type(frame.f_locals.get("self")).__name__ == "InMemoryStorage"
        if not caller.startswith("optuna.storages") and not in_memory:  # a call into it
            reads[frame.f_code.co_name] += 1
sys.setprofile(profile)
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
finally:
    sys.setprofile(None)
stays = [m for i, m in enumerate(calls) if i == 0 or calls[i - 1] != m]
print("TRACE " + json.dumps({"code": code, "stays": stays, "reads": reads}))
"""


def hpo(cwd: Path, env: dict, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose hpo to trace")
    parser.add_argument("--keep", type=Path, help="folder to build the study in (kept)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.code), "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    work = args.keep or Path(tempfile.mkdtemp(prefix="call-path-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "studies" / "handreid.db").exists():
        hpo(
            work,
            env,
            "run",
            "--backbone",
            "tiny-vit",
            "--trials",
            "3",
            "--epochs",
            "1",
            "--data",
            "synthetic",
            "--quiet",
        )
        hpo(work, env, "confirm", "--top", "3", "--seeds", "3", "--quiet")
    out = subprocess.run(
        [sys.executable, "-c", TRACE, "export", "--checkpoint", "--out", "x/best.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    trace = json.loads(out.split("TRACE ", 1)[1])
    stays = trace["stays"]
    seen, returns = set(), 0
    for m in stays:
        returns += m in seen
        seen.add(m)
    entered = collections.Counter(stays).most_common(4)
    most = ", ".join(f"{m.removeprefix('hpo.')} x{n}" for m, n in entered)
    print(
        f"hpo export --checkpoint ({args.code}): exit {trace['code']}, {len(stays)} stays in "
        f"{len(seen)} modules, {returns} returns to a module already left; most entered: {most}; "
        f"{sum(trace['reads'].values())} calls into the study's storage"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
