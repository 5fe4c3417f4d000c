"""docs/cluster.md: the Kubernetes example's worker command is one `hpo` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hpo.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def _manifests() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_the_indexed_job_runs_hpo_run_workers_on_postgresql():
    docs = _manifests()
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] >= 2
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["hpo", "run"]
    args = build_parser().parse_args(command[1:])  # argparse exits on anything it refuses
    assert args.command == "run" and args.workers == 1 and args.slurm is None
    assert args.storage.startswith("postgresql://") and "@postgres:5432/" in args.storage
    assert args.heartbeat > 0, "dead pods are found by heartbeat"
    # the password placeholder is an environment variable the pod defines
    names = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\((\w+)\)", args.storage)) <= names
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert "postgres" in services
