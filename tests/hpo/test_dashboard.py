"""``hpo dashboard`` and ``hpo report`` end to end; the browser checks use a headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from PIL import Image

from hpo.cli import main
from hpo.records.artifacts import open_artifact_store, record_config, save_space
from hpo.records.history import save_history
from hpo.records.optuna_internals import set_attr
from hpo.records.space import load_space
from hpo.views.dashboard import make_dashboard, url
from hpo.views.figures import DASHBOARD_FIGURES, FIGURES
from hpo.views.report import annotate_study, write_report
from tests.hpo.conftest import DEMO
from tests.hpo.test_report import FLOORS, fake_study

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (CI installs Debian's)"
)


def needs_chromium(test):
    """A test in a real browser: the integration tier, skipped without Chromium."""
    return pytest.mark.integration(_chromium(test))


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


def _app(storage: str, tmp_path: Path):
    """The WSGI app ``hpo dashboard`` serves, without a socket to serve it on."""
    server = make_dashboard(storage, "127.0.0.1", 0, tmp_path / "artifacts")
    server.server_close()
    return server.get_app()


def _get(app, path: str, **headers: str) -> tuple[str, dict, bytes]:
    """GET ``path`` from a WSGI ``app``: status, headers, body."""
    from wsgiref.util import setup_testing_defaults

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    environ |= {f"HTTP_{k.upper()}": v for k, v in headers.items()}
    setup_testing_defaults(environ)
    got = {}

    def start_response(status, response_headers, exc_info=None):
        got.update(status=status, headers=dict(response_headers))

    body = b"".join(app(environ, start_response))
    return got["status"], got["headers"], body


def test_companion_listed_right_below_its_parent_and_named_as_its_part(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    for name in ("a", "b", "a.confirm", "x.confirm"):  # a confirm made after another study
        optuna.create_study(study_name=name, storage=storage, direction="maximize")
    summaries = json.loads(_get(_app(storage, tmp_path), "/api/studies")[2])["study_summaries"]
    shown = [s["study_name"] for s in reversed(summaries)]  # the dashboard shows newest first
    assert shown == ["x.confirm", "b", "a", "a › confirm runs"]  # x.confirm has no parent
    ids = {s["study_name"]: s["study_id"] for s in summaries}
    assert ids["a › confirm runs"] == 3 and ids["a"] == 1  # the links still lead to each
    assert optuna.load_study(study_name="a.confirm", storage=storage)  # stored as it was


def test_study_data_floors_in_words_best_in_3_decimals_companion_without_best(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="a", storage=storage, direction="maximize")
    study.set_user_attr("floors", FLOORS)
    for value in (0.41, 0.5605137420010838):
        study.add_trial(optuna.trial.create_trial(value=value))
    runs = optuna.create_study(study_name="a.confirm", storage=storage, direction="maximize")
    for value in (0.5737, 0.52):
        runs.add_trial(optuna.trial.create_trial(value=value, user_attrs={"candidate": 1}))
    app = _app(storage, tmp_path)

    detail = json.loads(_get(app, "/api/studies/1")[2])
    floors = {a["key"]: a["value"] for a in detail["user_attrs"]}["floors"]
    assert floors == (
        "what no training reaches, val / test mAP: pixel floor 0.555 / 0.427, "
        "backbone floor (untrained tiny-vit) 0.662 / 0.455"
    )
    assert [t["values"] for t in detail["best_trials"]] == [[0.561]]  # it ran off its card
    assert [t["values"] for t in detail["trials"]] == [[0.41], [0.5605137420010838]]

    detail = json.loads(_get(app, "/api/studies/2")[2])
    assert detail["name"] == "a › confirm runs"
    assert detail["best_trials"] == []  # the luckiest seed is no best trial
    assert detail["objective_names"] == ["val mAP"]  # not "Objective 0"
    importances = json.loads(_get(app, "/api/studies/2/param_importances")[2])
    assert importances == {"param_importances": [[]]}  # 4 seeds are no search
    assert json.loads(_get(app, "/api/studies/1")[2])["name"] == "a"


def test_dashboard_page_loads_the_card_script_even_when_cached_before(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="a", storage=storage)
    app = _app(storage, tmp_path)
    status, headers, page = _get(
        app, "/dashboard/studies/1", if_modified_since="Tue, 01 Jan 2999 00:00:00 GMT"
    )
    assert status.startswith("200") and int(headers["Content-Length"]) == len(page)
    assert b'<script defer src="/hpo/dashboard.js"></script>' in page  # same origin: the CSP
    assert "script-src 'self'" in headers["Content-Security-Policy"]  # allows it, not inline
    assert headers["Cache-Control"] == "no-store" and "ETag" not in headers
    status, headers, script = _get(app, "/hpo/dashboard.js")
    assert headers["Content-Type"] == "text/javascript" and b"/hpo/studies/" in script


def test_card_names_the_winner_interval_difference_floors_and_the_best_trial(stored, tmp_path):
    from hpo.common.lines import diff_text, interval_text
    from hpo.decide.confirm import current
    from hpo.records.optuna_internals import study_id
    from hpo.views.headline import decision

    url, _ = stored
    shutil.copy(url.removeprefix("sqlite:///"), tmp_path / "s.db")
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.load_study(study_name="s", storage=storage)
    study.set_user_attr("floors", FLOORS)
    d = decision(study)
    app = _app(storage, tmp_path)
    status, headers, body = _get(app, f"/hpo/studies/{study_id(study)}/card")
    assert status.startswith("200") and headers["Content-Type"].startswith("text/html")
    card = html.unescape(body.decode())
    assert f"trial {d['winner']}, val mAP {d['mean']:.3f} {interval_text(*d['ci'])}" in card
    diff = d["diff"]
    assert f"{diff_text(diff['diff'])} {interval_text(*diff['ci'], signed=True)}" in card
    assert "pixel floor 0.555, backbone floor (untrained tiny-vit) 0.662" in card
    best = max(t.value for t in study.trials if t.state.name == "COMPLETE")
    assert '"Best Trial" and History below show the search\'s own values' in card
    assert f"reached val mAP {best:.3f}" in card
    rows = current(study)["rows"]
    assert card.count("<circle ") == len(rows) >= 2  # the figure: a mean and interval each

    companion = optuna.load_study(study_name="s.confirm", storage=storage)
    body = _get(app, f"/hpo/studies/{study_id(companion)}/card")[2].decode()
    assert "Confirm runs, not a search" in body and "confirm runs of study" in body
    assert _get(app, "/hpo/studies/99/card")[0].startswith("404")


def test_card_before_confirm_says_the_best_trial_is_not_confirmed(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = fake_study(storage, name="open", se=True)
    card = html.unescape(_get(_app(storage, tmp_path), "/hpo/studies/1/card")[2].decode())
    best = study.best_trial
    assert f"Not confirmed yet: best trial {best.number}, val mAP {best.value:.3f}" in card
    assert "none confirmed" in card and "<svg" not in card


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


def test_dashboard_away_from_the_artifacts_says_so(tmp_path, dashboard):
    """Started in another folder than the run, the dashboard would serve every artifact as an
    error (each curves.png a broken image): it says so on start, and where to start it."""
    from hpo.views.dashboard import artifacts_elsewhere

    storage = f"sqlite:///{tmp_path}/s.db"
    store_dir = tmp_path / "project" / "studies" / "artifacts"
    study = optuna.create_study(study_name="away", storage=storage, direction="maximize")
    trial = study.ask()
    save_history(trial, open_artifact_store(store_dir), _history(trial.number, epochs=3))
    study.tell(trial, 0.6)
    (tmp_path / "studies" / "artifacts").mkdir(parents=True)
    assert artifacts_elsewhere(storage, store_dir) == 0  # history.json and curves.png there
    assert artifacts_elsewhere(storage, tmp_path / "studies" / "artifacts") == 2
    optuna.create_study(study_name="bare", storage=f"sqlite:///{tmp_path}/bare.db")
    assert artifacts_elsewhere(f"sqlite:///{tmp_path}/bare.db", tmp_path / "nothing") == 0

    dashboard(storage)  # in tmp_path: studies/artifacts there is empty
    log = (tmp_path / "dashboard.out").read_text()
    assert (
        "warning: none of the 2 artifacts the studies name is in studies/artifacts "
        "(images will show broken): start `hpo dashboard` in the folder where `hpo run` ran, "
        "or pass --artifacts\n"
    ) in log


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


_FACTS = """document.body === null ? "{}" : JSON.stringify({
  scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  client: document.documentElement.clientWidth,
  text: document.body.innerText, parcoords: document.querySelectorAll('.parcoords').length,
  images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
  wide: [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth
      && [...e.children].every(
        c => c.getBoundingClientRect().right <= document.documentElement.clientWidth))
    .slice(0, 5).map(e => e.tagName + ' ' + Math.round(e.getBoundingClientRect().right) + ': '
      + (e.textContent || '').slice(0, 80))})"""


# Where plotly drew each parallel-coordinates axis (``x``, ``top``, ``bottom`` of its line), its
# title and its tick labels, each label as the four corners of its box on the screen (the
# titles are turned, so an upright box would overstate them), and the card's left and right.
_PARCOORDS = """JSON.stringify([...document.querySelectorAll('.parcoords')].map(svg => {
  const corners = e => { const b = e.getBBox(), m = e.getScreenCTM();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
      .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]); };
  const card = svg.closest('.js-plotly-plot').getBoundingClientRect();
  return {left: card.left, right: card.right, axes: [...svg.querySelectorAll('.y-axis')].map(a => ({
    x: a.getScreenCTM().e, top: a.getScreenCTM().f,
    bottom: a.querySelector('.axis-extent-bottom').getScreenCTM().f,
    title: [a.querySelector('.axis-title').textContent, corners(a.querySelector('.axis-title'))],
    ticks: [...a.querySelectorAll('.tick text')].map(t => [t.textContent, corners(t)])}))};
}))"""


def _gap(a: list, b: list) -> float:
    """Distance between two convex quadrilaterals along the best separating axis (their edge
    normals): exact for boxes turned alike; <= 0 where they overlap."""
    best = -math.inf
    for quad in (a, b):
        for (x0, y0), (x1, y1) in zip(quad, quad[1:] + quad[:1], strict=True):
            nx, ny = y0 - y1, x1 - x0
            norm = math.hypot(nx, ny) or 1.0
            pa = [(x * nx + y * ny) / norm for x, y in a]
            pb = [(x * nx + y * ny) / norm for x, y in b]
            best = max(best, min(pb) - max(pa), min(pa) - max(pb))
    return best


LABEL_GAP = 4  # px between labels of different axes, at least
LINE_GAP = 6  # px between a tick label and another axis's line, at least


def _parcoords_problems(plot: dict) -> tuple[list[str], float, float]:
    """What makes a parallel-coordinates figure unreadable: more than 6 ticks on an axis, a
    tick off its axis, labels of two axes closer than ``LABEL_GAP``, a tick label within
    ``LINE_GAP`` of another axis's line (it reads as that axis's), a label outside the card.
    Also the smallest gap between labels of different axes, and between a tick label and
    another axis's line."""
    problems, smallest, nearest_line = [], math.inf, math.inf
    axes = plot["axes"]
    for i, ax in enumerate(axes):
        name = ax["title"][0]
        if len(ax["ticks"]) > 6:
            problems.append(f"{name}: {len(ax['ticks'])} ticks")
        for text, quad in ax["ticks"]:
            mid = sum(y for _, y in quad) / 4
            if not ax["top"] - 1 <= mid <= ax["bottom"] + 1:
                problems.append(f"{name}: tick {text!r} off the axis")
            xs = [x for x, _ in quad]
            for other in axes[:i] + axes[i + 1 :]:
                off = max(min(xs) - other["x"], other["x"] - max(xs), 0)
                nearest_line = min(nearest_line, off)
                if min(xs) - LINE_GAP < other["x"] < max(xs) + LINE_GAP:
                    problems.append(f"{name}: tick {text!r} on the line of {other['title'][0]}")
        for text, quad in [ax["title"], *ax["ticks"]]:
            xs = [x for x, _ in quad]
            if min(xs) < plot["left"] or max(xs) > plot["right"]:
                problems.append(f"{name}: {text!r} outside the card")
            for other in axes[i + 1 :]:
                for other_text, other_quad in [other["title"], *other["ticks"]]:
                    gap = _gap(quad, other_quad)
                    smallest = min(smallest, gap)
                    if gap < LABEL_GAP:
                        problems.append(f"{text!r} ({name}) {gap:.1f} px from {other_text!r}")
    return problems, smallest, nearest_line


# The trial page's curves.png as the reader sees it: scrolled into view (the dashboard scrolls
# inside a window-high box, so an image below it is never painted, not even in a screenshot
# beyond the viewport) and decoded; its box in the window and its size as served.
_CURVES = """(async () => {
  const img = [...document.images].find(i => i.alt === 'curves.png');
  if (!img) return JSON.stringify(null);
  img.scrollIntoView({block: 'center'});
  const decoded = await img.decode().then(() => true, () => false);
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const r = img.getBoundingClientRect();
  return JSON.stringify({decoded, src: img.getAttribute('src'), width: img.naturalWidth,
    height: img.naturalHeight, box: [r.left, r.top, r.right, r.bottom]});
})()"""


# Text that runs out of the box that clips it (or out of the window): a line of each, at most
# 10. Left out: the collapsed side drawer's labels, text cut with an ellipsis on purpose, text
# not shown (hidden, or in a 1 px box for screen readers) and the dashboard's shrunk form labels.
_OVERFLOW = """(() => {
  const out = [], W = document.documentElement.clientWidth;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement, style = getComputedStyle(el);
    if (!n.textContent.trim() || el.closest('svg, script, style, .MuiDrawer-root, .MuiInputLabel-root')
        || style.textOverflow === 'ellipsis' || style.visibility !== 'visible'
        || style.opacity === '0') {
      continue;
    }
    let clip = el;
    while (clip !== document.body && getComputedStyle(clip).overflowX === 'visible') {
      clip = clip.parentElement;
    }
    const box = clip === document.body ? {left: 0, right: W} : clip.getBoundingClientRect();
    if (box.right - box.left <= 2) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    const out_of = [...range.getClientRects()].find(r => r.width > 0
      && (r.right > Math.min(box.right, W) + 1 || r.left < Math.max(box.left, 0) - 1));
    if (out_of) out.push(`${n.textContent.trim().slice(0, 60)} (${Math.round(out_of.left)}-`
      + `${Math.round(out_of.right)} px in ${Math.round(box.left)}-${Math.round(box.right)})`);
  }
  return JSON.stringify(out.slice(0, 10));
})()"""


def _seen(texts: list[str]) -> str:
    """A JS expression: where each of ``texts`` is on the screen (``box``: left, top, right,
    bottom) and whether it is what the window shows there (``on_top``); null box when absent."""
    return """JSON.stringify(WANTED.map(w => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const at = n.textContent.indexOf(w);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(n, at);
    range.setEnd(n, at + w.length);
    const r = range.getBoundingClientRect();
    const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    return {text: w, box: [r.left, r.top, r.right, r.bottom],
      on_top: hit !== null && (hit === n.parentElement || n.parentElement.contains(hit))};
  }
  return {text: w, box: null, on_top: false};
}))""".replace("WANTED", json.dumps(texts))


def _together(**expressions: str) -> str:
    """One JS expression giving the JSON of each named expression's (awaited) JSON value."""
    parts = ", ".join(f"{k}: JSON.parse(await ({v}))" for k, v in expressions.items())
    return f"(async () => JSON.stringify({{{parts}}}))()"


def _first_screen(seen: list[dict], width: int = 1280, height: int = 900) -> list[str]:
    """Those of ``_seen``'s texts that a reader does not see without scrolling."""
    return [
        s["text"]
        for s in seen
        if s["box"] is None
        or not s["on_top"]
        or min(s["box"][0], s["box"][1]) < 0
        or s["box"][2] > width
        or s["box"][3] > height
    ]


def _page_facts(
    address: str, wait_for: str, width: int = 1280, extra: str = "", shot: Path | None = None
) -> dict:
    """Page width (``scroll``), window width (``inner``) and the width left beside a vertical
    scrollbar (``client``), the visible text, plotly parcoords drawn and the elements sticking
    out (``wide``), once ``wait_for`` shows; from a headless Chromium driven over the DevTools
    protocol (what kaleido uses). ``scroll <= client`` means no sideways scrolling at all.
    ``extra``: one more expression giving JSON (or a promise of it), evaluated then, its
    value under ``extra``; ``shot``: a PNG of the window after that."""
    from choreographer import Browser

    async def facts() -> dict:
        async with Browser(path=CHROMIUM, headless=True) as browser:
            tab = await browser.create_tab("about:blank")
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            await tab.send_command("Emulation.setDeviceMetricsOverride", params=metrics)
            await tab.send_command("Page.navigate", params={"url": address})
            deadline = time.monotonic() + 60
            while True:
                reply = await tab.send_command(
                    "Runtime.evaluate", params={"expression": _FACTS, "returnByValue": True}
                )
                got = json.loads(reply["result"]["result"].get("value", "{}"))  # {} while loading
                if wait_for in got.get("text", "") or time.monotonic() > deadline:
                    await asyncio.sleep(1.0)  # late layout (plots, tables) settles
                    reply = await tab.send_command(
                        "Runtime.evaluate", params={"expression": _FACTS, "returnByValue": True}
                    )
                    got = json.loads(reply["result"]["result"]["value"])
                    if extra:
                        params = {"expression": extra, "returnByValue": True, "awaitPromise": True}
                        reply = await tab.send_command("Runtime.evaluate", params=params)
                        got["extra"] = json.loads(reply["result"]["result"]["value"])
                    if shot:
                        reply = await tab.send_command("Page.captureScreenshot")
                        shot.write_bytes(base64.b64decode(reply["result"]["data"]))
                    return got
                await asyncio.sleep(0.3)

    got = asyncio.run(facts())
    assert wait_for in got["text"], got["text"][-2000:]
    return got


def _not_blank(png: Path) -> None:
    colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50


@pytest.mark.integration
@needs_chromium
def test_real_study_in_dashboard_and_report_in_browser(
    tmp_path, monkeypatch, capsys, dashboard, confirmed
):
    """The session's confirmed study (``hpo run`` + ``confirm`` + ``report``), copied here with
    its artifact folder, as ``hpo dashboard`` started in the folder ``hpo run`` used serves it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(confirmed["root"] / "s.db", tmp_path / "s.db")
    shutil.copytree(confirmed["root"] / "studies", tmp_path / "studies")
    storage = f"sqlite:///{tmp_path}/s.db"
    # parallel coordinates and value +- SE
    assert "saved the summary note and 2 figures to the study" in confirmed["run_out"]

    address = dashboard(storage)
    base = address.removesuffix("/dashboard")
    summaries = _get_json(f"{base}/api/studies")["study_summaries"]
    # (the dashboard shows the list reversed: the parent, then its confirm runs)
    assert [s["study_name"] for s in summaries] == ["hands-demo › confirm runs", "hands-demo"]
    study_id = summaries[1]["study_id"]
    detail = _get_json(f"{base}/api/studies/{study_id}")
    assert detail["note"]["body"].startswith("## hands-demo\n")
    ids = sorted(g["id"] for g in detail["plotly_graph_objects"])  # stored in no fixed order
    assert ids == ["hpo-parallel", "hpo-value_se"]

    dom = _browse(f"{address}/studies/{study_id}", tmp_path / "dashboard.png")
    assert "hands-demo" in dom
    _not_blank(tmp_path / "dashboard.png")
    page = _page_facts(f"{address}/studies/{study_id}", wait_for=FIGURES["parallel"][:30])
    assert page["parcoords"] == 1  # plotly drew the saved parallel coordinates
    assert page["scroll"] <= page["client"], page["wide"]
    # a trial's page lists its records; the curves picture is the one image among them, drawn
    trial_page = _page_facts(f"{address}/studies/{study_id}/trials", wait_for="curves.png")
    assert "history.json" in trial_page["text"] and "config.yaml" in trial_page["text"]
    assert trial_page["images"] >= 1
    # (1 px: the dashboard's trial page rounds a sub-pixel width up on some runs)
    assert trial_page["scroll"] <= trial_page["client"] + 1, trial_page["wide"]

    code, out, err = _cli(["report", "--storage", storage], capsys)
    assert code == 0, err
    folder = tmp_path / "studies" / "hands-demo" / "report"
    drawn = list(FIGURES)  # every trial has a standard error (identity bootstrap)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.png" for n in drawn] + ["report.html"]
    )
    for name in drawn:
        assert Image.open(folder / f"{name}.png").size == (1100, 520)
    dom = _browse((folder / "report.html").as_uri(), tmp_path / "report.png", height=3000)
    for name in drawn:
        assert f'id="fig-{name}" class="plotly-graph-div js-plotly-plot"' in dom  # plotly drew it
        assert FIGURES[name] in dom
    _not_blank(tmp_path / "report.png")
    page = _page_facts((folder / "report.html").as_uri(), wait_for="Top trials")
    assert page["scroll"] <= page["client"], page["wide"]  # the table and figures fit 1280 px


@needs_chromium
def test_first_screens_after_confirm_show_the_decision(tmp_path, monkeypatch, dashboard, confirmed):
    """After ``hpo run`` + ``hpo confirm``, at 1280 x 900: the study page's first screen shows
    the confirmed value, its interval, the difference to the baseline and the floors; the
    companion is listed right below its parent, named as its part, and says it holds confirm
    runs; the trial page shows curves.png at least 400 px wide; no text runs out of its box."""
    from hpo.common.lines import diff_text, interval_text
    from hpo.decide.confirm import companion_name
    from hpo.records.optuna_internals import study_id
    from hpo.views.headline import decision

    monkeypatch.chdir(tmp_path)
    shutil.copy(confirmed["root"] / "s.db", tmp_path / "s.db")
    shutil.copytree(confirmed["root"] / "studies", tmp_path / "studies")
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.load_study(study_name=DEMO, storage=storage)
    companion = optuna.load_study(study_name=companion_name(DEMO), storage=storage)
    d = decision(study)
    value = f"confirm mAP {d['mean']:.3f} {interval_text(*d['ci'])}"
    diff = f"{diff_text(d['diff']['diff'])} {interval_text(*d['diff']['ci'], signed=True)}"
    address = dashboard(storage)
    shots = tmp_path / "shots"
    shots.mkdir()

    listing = _page_facts(address, wait_for="Direction", extra=_OVERFLOW)
    shown = listing["text"]
    assert shown.index(f"1. {DEMO}") < shown.index(f"2. {DEMO} › confirm runs")
    assert "confirm runs" not in shown.split(f"1. {DEMO}")[0]  # nothing of it above its parent
    assert listing["extra"] == []

    wanted = [value, diff, "pixel floor", "backbone floor", '"Best Trial"']
    page = _page_facts(
        f"{address}/studies/{study_id(study)}",
        wait_for=value,
        extra=_together(seen=_seen(wanted), over=_OVERFLOW),
        shot=shots / "study.png",
    )
    assert _first_screen(page["extra"]["seen"]) == []
    assert page["extra"]["over"] == []
    assert page["scroll"] <= page["client"], page["wide"]

    runs = f"confirm runs of study {DEMO}"
    page = _page_facts(
        f"{address}/studies/{study_id(companion)}",
        wait_for=runs,
        extra=_together(
            seen=_seen(["are the confirm runs of study", "not a search"]), over=_OVERFLOW
        ),
        shot=shots / "companion.png",
    )
    assert _first_screen(page["extra"]["seen"]) == []
    assert page["extra"]["over"] == []
    assert f"{DEMO} › confirm runs (id={study_id(companion)})" in page["text"]  # its title
    assert "Best Trial (" not in page["text"] and "Objective 0" not in page["text"]

    page = _page_facts(
        f"{address}/studies/{study_id(study)}/trials",
        wait_for="curves.png",
        extra=_together(curves=_CURVES, over=_OVERFLOW),
        shot=shots / "trial.png",
    )
    curves = page["extra"]["curves"]
    left, top, right, bottom = curves["box"]
    assert curves["decoded"] and right - left >= 400, curves  # legible, not a thumbnail
    assert page["extra"]["over"] == []
    for shot in shots.iterdir():
        _not_blank(shot)


def _history(number: int, epochs: int) -> dict:
    """A one-run history document as the objective writes it, its loss falling."""
    from types import SimpleNamespace

    from hpo.records.history import history_document

    def metrics(e: int) -> dict:
        return {"mAP": 0.2 * e, "loss": 3 - e / 2, "id": 2 - e / 4, "supcon": e / 10}

    records = [  # the fields of hpo.search.objective.EpochRecord that the history keeps
        SimpleNamespace(run=0, fold=0, epoch=e, step=e, metrics=metrics(e))
        for e in range(1, epochs + 1)
    ]
    return history_document(
        number, "completed", [dict(run=0, fold=0, seed=0, epochs=epochs)], records
    )


def _more_trials(study: optuna.Study, space, baselines: int = 2, n: int = 5) -> None:
    """The space's first ``baselines``, a trial without the ArcFace pair (an "n/a" tick) and
    random ones, so every axis shows its whole range."""
    study.sampler = optuna.samplers.RandomSampler(seed=0)
    for config in space.baselines[:baselines]:
        study.enqueue_trial({k: v for k, v in config.items() if k != "name"})
    study.enqueue_trial({"classifier": "linear"})
    for i in range(baselines + 1 + n):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.41 + 0.037 * i)


@needs_chromium
def test_trial_and_study_pages_fit_the_window(tmp_path, dashboard):
    """A trial as the objective records it (config as a YAML artifact and a short attribute)
    and a study with its space as an artifact: no horizontal scrolling at 1280 px."""
    storage = f"sqlite:///{tmp_path}/s.db"
    store_dir = tmp_path / "studies" / "artifacts"
    store = open_artifact_store(store_dir)  # what `hpo dashboard` serves
    space = load_space("tiny-vit")
    study = optuna.create_study(study_name="fits", storage=storage, direction="maximize")
    save_space(study, store, space)
    for key, value in {"backbone": "tiny-vit", "command": "hpo run --backbone tiny-vit"}.items():
        study.set_user_attr(key, value)
    # the baseline, as every study starts
    baseline = {k: v for k, v in space.baselines[0].items() if k != "name"}
    study.enqueue_trial(baseline, user_attrs={"baseline": "default"})
    trial = study.ask()
    cfg = space.config(space.suggest(trial))
    record_config(trial, cfg, store)
    metrics = {"rank1": 0.8125, "rank5": 0.9375, "rank10": 1.0, "mAP": 0.7712345678901234}
    metrics |= {"best_epoch": 3, "epochs_run": 4, "seconds": 81.73, "peak_memory_mb": 0.0}
    metrics |= {"status": "complete", "value_se": 0.0312, "n_folds": 3}
    metrics |= {"fold_values": [0.74123456789, 0.79876543210, 0.77370370370]}
    for key, value in metrics.items():
        set_attr(trial, key, value)  # as the objective records them
    for epoch in range(1, 5):
        trial.report(0.2 * epoch, epoch)
    save_history(trial, store, _history(trial.number, epochs=4))  # history.json, curves.png
    study.tell(trial, metrics["mAP"])
    _more_trials(study, space, baselines=0)
    annotate_study(study)
    for name in ("rn50", "vitb16"):  # the real spaces: 10 and 9 parameters
        other = optuna.create_study(
            study_name=f"fits-{name}", storage=storage, direction="maximize"
        )
        save_space(other, store, load_space(name))
        _more_trials(other, load_space(name))
        annotate_study(other)

    address = dashboard(storage)
    assert "warning" not in (tmp_path / "dashboard.out").read_text()  # the artifacts are here
    shot = tmp_path / "trial.png"
    trial_page = _page_facts(
        f"{address}/studies/1/trials", wait_for="value_se", extra=_CURVES, shot=shot
    )
    assert "config.yaml" in trial_page["text"]  # the full config is one click away
    # (1 px: the dashboard's trial page rounds a sub-pixel width up on some runs)
    assert trial_page["scroll"] <= trial_page["client"] + 1, trial_page["wide"]
    # curves.png: served as a PNG, byte for byte what the store holds, and painted
    curves = trial_page["extra"]
    assert curves is not None, "no curves.png image on the trial page"
    assert curves["decoded"] and (curves["width"], curves["height"]) == (880, 640)
    with urllib.request.urlopen(address.removesuffix("/dashboard") + curves["src"]) as resp:
        assert resp.headers["Content-Type"] == "image/png"
        served = resp.read()
    assert served == (store_dir / curves["src"].rsplit("/", 1)[1]).read_bytes()
    assert Image.open(io.BytesIO(served)).size == (880, 640)
    left, top, right, bottom = (round(v) for v in curves["box"])
    assert right - left >= 400 and 0 <= top < bottom <= 900  # legible, not a thumbnail
    thumb = Image.open(shot).convert("RGB").crop((left, top, right, bottom))
    colours = thumb.getcolors(maxcolors=1 << 20)
    blue = sum(n for n, (r, _, b) in colours if b > 150 and b - r > 60)  # run 0's line
    assert blue >= 10, f"curves.png not drawn: {blue} blue pixels"  # 18 when drawn
    # (the other studies' trials have no standard error, so no value +- SE figure)
    shown = ((1, "tiny-vit", "value_se"), (2, "rn50", "parallel"), (3, "vitb16", "parallel"))
    for number, name, last in shown:  # the parallel coordinates' card is half the page wide
        study_page = _page_facts(
            f"{address}/studies/{number}", wait_for=FIGURES[last][:30], extra=_PARCOORDS
        )
        assert study_page["parcoords"] == 1 and "space_params" in study_page["text"]
        assert study_page["scroll"] <= study_page["client"], study_page["wide"]
        (plot,) = study_page["extra"]
        assert len(plot["axes"]) == 1 + len(load_space(name).names)  # val mAP + each parameter
        assert plot["right"] - plot["left"] < 700
        problems, smallest, line = _parcoords_problems(plot)
        gaps = f"labels of different axes >= {smallest:.1f} px apart, tick to line >= {line:.1f}"
        print(f"{name}: {len(plot['axes'])} axes, {gaps}")
        assert not problems, (name, gaps, problems[:10])
    assert len(DASHBOARD_FIGURES) == 2

    html = write_report(study, tmp_path / "report", png=False).html
    report_page = _page_facts(html.as_uri(), wait_for="Top trials")
    assert report_page["parcoords"] == 1
    assert report_page["scroll"] <= report_page["client"], report_page["wide"]
