"""``hpo dashboard`` and ``hpo report`` end to end; the browser checks use a headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from hpo.cli import main
from hpo.dashboard import make_dashboard, url
from hpo.report import FIGURES
from tests.hpo.test_report import fake_study

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (CI installs Debian's)"
)


def _get_json(address: str) -> dict:
    with urllib.request.urlopen(address, timeout=30) as resp:
        return json.load(resp)


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_dashboard_serves_the_studies_and_the_artifact_store(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    fake_study(storage, name="served")
    server = make_dashboard(storage, "127.0.0.1", 0, tmp_path / "artifacts")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = url(server).removesuffix("/dashboard")
        assert url(server).startswith("http://127.0.0.1:")
        names = [s["study_name"] for s in _get_json(f"{base}/api/studies")["study_summaries"]]
        assert names == ["served"]
        assert _get_json(f"{base}/api/meta")["artifact_is_available"] is True
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert (tmp_path / "artifacts").is_dir()


def test_port_in_use_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/s.db"
    fake_study(storage, n=1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = _cli(["dashboard", "--storage", storage, "--port", str(port)], capsys)
    assert code == 2
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert err.count("\n") == 1
    assert not Path("studies").exists()  # nothing created before the port was ours


@pytest.mark.parametrize(
    "args, message",
    [
        (["--storage", "sqlite:///missing/s.db"], "error: no study database at missing/s.db"),
        (["--port", "70000"], "error: --port=70000: must be between 0 and 65535"),
    ],
)
def test_dashboard_bad_input(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(["dashboard", *args], capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1


@pytest.fixture
def dashboard(tmp_path):
    """Start ``hpo dashboard`` as a user would, on a free loopback port; always stopped after."""
    procs = []

    def start(storage: str) -> str:
        log = tmp_path / "dashboard.out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "dashboard", "--storage", storage, "--port", "0"],
            cwd=tmp_path,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            for line in log.read_text().splitlines():
                if line.startswith("Listening on "):
                    return line.split()[2]
            time.sleep(0.2)
        raise AssertionError(f"dashboard did not start: {log.read_text()}")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _browse(address: str, shot: Path, height: int = 2400) -> str:
    """DOM after the page's scripts ran, plus a screenshot, from one headless Chromium run."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={shot.parent / 'chromium-profile'}",
        f"--window-size=1400,{height}",
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        "--dump-dom",
        address,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    return done.stdout


def _not_blank(png: Path) -> None:
    colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50


@pytest.mark.slow
@needs_chromium
def test_real_study_in_dashboard_and_report_in_browser(tmp_path, monkeypatch, capsys, dashboard):
    from handreid.data.synthetic import write_synthetic

    monkeypatch.chdir(tmp_path)
    write_synthetic(tmp_path / "hands", ids=32, per_id=8, size=64, seed=0)
    storage = f"sqlite:///{tmp_path}/s.db"
    code, out, err = _cli(
        [
            "run",
            "--backbone",
            "tiny-vit",
            "--trials",
            "2",
            "--epochs",
            "1",
            "--data",
            str(tmp_path / "hands"),
            "--storage",
            storage,
            "--study",
            "hands-demo",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    assert "saved the summary note and 4 figures to the study" in out

    address = dashboard(storage)
    base = address.removesuffix("/dashboard")
    summaries = _get_json(f"{base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["hands-demo"]
    study_id = summaries[0]["study_id"]
    detail = _get_json(f"{base}/api/studies/{study_id}")
    assert detail["note"]["body"].startswith("## hands-demo\n")
    assert len(detail["plotly_graph_objects"]) == len(FIGURES)

    dom = _browse(f"{address}/studies/{study_id}", tmp_path / "dashboard.png")
    assert "hands-demo" in dom
    for title in FIGURES.values():
        assert title in dom, title
    _not_blank(tmp_path / "dashboard.png")

    code, out, err = _cli(["report", "--storage", storage], capsys)
    assert code == 0, err
    folder = tmp_path / "studies" / "hands-demo" / "report"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.png" for n in FIGURES] + ["report.html"]
    )
    for name in FIGURES:
        assert Image.open(folder / f"{name}.png").size == (1100, 520)
    dom = _browse((folder / "report.html").as_uri(), tmp_path / "report.png", height=3000)
    for name, title in FIGURES.items():
        assert f'id="fig-{name}" class="plotly-graph-div js-plotly-plot"' in dom  # plotly drew it
        assert title in dom
    _not_blank(tmp_path / "report.png")
