"""What ``hpo dashboard`` adds to optuna-dashboard's WSGI app, changing what is shown, never
what is stored (plain ``optuna-dashboard`` shows the same studies as before).

optuna-dashboard lays out a study's page itself: History across the first screen, then
importance and timeline, then the figures a study saved, then "Best Trial" (the unconfirmed
maximum) and the attributes; the note has a tab of its own. Nothing a study can store goes
above History, so this layer:

- serves a card (``hpo.views.dashboard_card``) and a small script that puts it first on a
  study's page (the dashboard's CSP runs only same-origin scripts, hence ``/hpo/dashboard.js``);
- lists each companion of confirm runs right below its parent, named ``<parent> › confirm
  runs``, and gives its page no "Best Trial" and no importance (its runs are seeds, not a search);
- shows the ``floors`` attribute as words, "Best Trial" with 3 decimals, the attributes table
  within its card, and ``curves.png`` on the trial page at its width.

The dashboard facts relied on (the API's field names, the ``main > .MuiBox-root`` page box,
MUI's class names, newest study first) are pinned by the Chromium tests in
``tests/hpo/test_dashboard.py``, so an optuna-dashboard upgrade fails there first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable

import optuna

from hpo.decide.floors import ATTR as FLOORS_ATTR
from hpo.decide.floors import floor_name
from hpo.records.companion import companion_kind, parent_name
from hpo.views.dashboard_card import companion_card, shown_name, study_card
from hpo.views.figures import TARGET

log = logging.getLogger("hpo")
SCRIPT = "/hpo/dashboard.js"
_CARD = re.compile(r"^/hpo/studies/(\d+)/card$")
_DETAIL = re.compile(r"^/api/studies/(\d+)$")
_IMPORTANCE = re.compile(r"^/api/studies/(\d+)/param_importances$")

# Puts the card first on a study's top page (``/dashboard/studies/<id>``), keeps it there while
# the dashboard re-renders, and fetches it again on arrival and every 30 s.
_JS = r"""(() => {
  const TOP = /\/dashboard\/studies\/(\d+)$/;
  let study = null, card = '', version = 0;
  const wanted = () => (location.pathname.replace(/\/+$/, '').match(TOP) || [])[1] || null;
  async function load(id) {
    if (id !== study) { study = id; card = ''; version++; }
    try {
      const reply = await fetch(`/hpo/studies/${id}/card`, {cache: 'no-store'});
      const text = reply.ok ? await reply.text() : '';
      if (study === id && text !== card) { card = text; version++; }
    } catch (e) { /* the dashboard works without its card */ }
    place();
  }
  function place() {
    const id = wanted(), old = document.getElementById('hpo-card');
    if (id !== study) { if (old) old.remove(); if (id) load(id); else study = null; return; }
    const page = document.querySelector('main > .MuiBox-root');
    if (old && (!card || old.parentNode !== page || old.dataset.version !== String(version))) {
      old.remove();
    } else if (old) {
      if (page.firstElementChild !== old) page.prepend(old);
      return;
    }
    if (!page || !card) return;
    const box = document.createElement('section');
    box.id = 'hpo-card';
    box.dataset.version = String(version);
    box.innerHTML = card;
    page.prepend(box);
  }
  new MutationObserver(place).observe(document.documentElement, {childList: true, subtree: true});
  setInterval(() => { const id = wanted(); if (id) load(id); }, 30000);
  place();
})();
"""

_CSS = """<style>
#hpo-card{margin:16px 16px 0;font-size:15px;line-height:1.45}
.hpo-card{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start;padding:12px 16px;
  border:1px solid #ddd;border-left:5px solid #1565c0;border-radius:4px;background:#fff;color:#222}
.hpo-card[data-state=open]{border-left-color:#e69500}
.hpo-card[data-state=companion]{border-left-color:#777;background:#fafafa}
.hpo-text{flex:1 1 420px;min-width:0;overflow-wrap:anywhere}
.hpo-text p{margin:0 0 6px}.hpo-kicker{font-size:12px;text-transform:uppercase;color:#666}
.hpo-lead{font-size:18px;font-weight:600}.hpo-small{font-size:13px;color:#555}
.hpo-warn{color:#a40}
.hpo-figure{flex:0 0 auto;max-width:100%;height:auto}
.MuiTypography-h3{overflow-wrap:anywhere}
table[aria-label="simple table"]{min-width:0!important}
.MuiCard-root:has(> div > img[alt="curves.png"]){width:min(100%,880px)!important}
div:has(> img[alt="curves.png"]){height:auto!important}
img[alt="curves.png"]{height:auto!important}
</style>"""


def shown_study_list(summaries: list[dict]) -> list[dict]:
    """``/api/studies``'s list as the dashboard should show it: a companion named as part of
    its parent and, in the dashboard's default order (newest first, the list reversed), right
    below it. Studies without a parent keep their order."""
    names = {s["study_name"]: s for s in summaries}

    def root(s: dict) -> tuple[int, int]:  # (the top parent's id, how deep below it)
        depth = 0
        while parent_name(s["study_name"]) in names and depth < len(names):
            s, depth = names[parent_name(s["study_name"])], depth + 1
        return s["study_id"], depth

    out = []
    for s in sorted(summaries, key=lambda s: (root(s)[0], -root(s)[1])):
        parent = parent_name(s["study_name"])
        kind = companion_kind(s["study_name"])
        out.append({**s, "study_name": shown_name(parent, kind)} if parent in names else s)
    return out


def floors_words(record: dict) -> str:
    """``what no training reaches, val / test mAP: pixel floor 0.555 / 0.427, backbone floor
    (untrained tiny-vit) 0.662 / 0.455``: the ``floors`` record without its internal keys."""

    def pair(values) -> str:
        return " / ".join("-" if v is None else f"{v:.3f}" for v in values)

    kinds = [k for k in ("pixels", "backbone") if record.get(k)]
    named = ", ".join(f"{floor_name(k, record)} {pair(record[k])}" for k in kinds)
    return f"what no training reaches, val / test mAP: {named}"


def readable_attrs(attrs: list[dict]) -> list[dict]:
    """The study's attributes with ``floors`` in words (its stored record is JSON with the
    split's digest, which only workers need)."""
    out = []
    for a in attrs:
        if a.get("key") == FLOORS_ATTR:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                a = {**a, "value": floors_words(json.loads(a["value"]))}
        out.append(a)
    return out


def rounded_best(trials: list[dict]) -> list[dict]:
    """The "Best Trial" card's value with 3 decimals (``0.5605137420010838`` ran off it)."""
    return [
        {**t, "values": [round(v, 3) if isinstance(v, float) else v for v in t["values"]]}
        if isinstance(t.get("values"), list)
        else t
        for t in trials
    ]


class DashboardLayer:
    """WSGI middleware over optuna-dashboard's app (``app``) on ``storage``."""

    def __init__(self, app: Callable, storage: optuna.storages.BaseStorage) -> None:
        self.app, self.storage = app, storage

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "").rstrip("/")
        if environ.get("REQUEST_METHOD") == "GET":
            if path == SCRIPT:
                return _reply(start_response, "200 OK", "text/javascript", _JS.encode())
            if card := _CARD.match(path):
                return self._card(int(card.group(1)), start_response)
            if path == "/api/studies":
                return self._rewrite(environ, start_response, self._list)
            if detail := _DETAIL.match(path):
                sid = int(detail.group(1))
                return self._rewrite(environ, start_response, lambda d: self._detail(sid, d))
            if (imp := _IMPORTANCE.match(path)) and self._parent_of(int(imp.group(1))):
                body = json.dumps({"param_importances": [[]]}).encode()
                return _reply(start_response, "200 OK", "application/json", body)
            if path == "/dashboard" or path.startswith("/dashboard/"):
                return self._page(environ, start_response)
        return self.app(environ, start_response)

    def _parent_of(self, study_id: int) -> tuple[str, int] | None:
        """(name, id) of the parent when the study is a companion of confirm runs."""
        try:
            parent = parent_name(self.storage.get_study_name_from_id(study_id))
            return (parent, self.storage.get_study_id_from_name(parent)) if parent else None
        except KeyError:
            return None

    def _list(self, data: dict) -> dict:
        return {**data, "study_summaries": shown_study_list(data.get("study_summaries", []))}

    def _detail(self, study_id: int, data: dict) -> dict:
        data = {**data, "user_attrs": readable_attrs(data.get("user_attrs", []))}
        data["best_trials"] = rounded_best(data.get("best_trials", []))
        parent = self._parent_of(study_id)
        if parent is not None:  # confirm runs: no "best" seed, and the metric has its name
            kind = companion_kind(self.storage.get_study_name_from_id(study_id))
            data |= {"name": shown_name(parent[0], kind), "best_trials": []}
            metric = "test mAP" if kind == "final" else TARGET
            data["objective_names"] = data.get("objective_names") or [metric]
        return data

    def _card(self, study_id: int, start_response: Callable) -> Iterable[bytes]:
        from hpo.records.companion import companion_name
        from hpo.views.model import load_view

        try:
            name = self.storage.get_study_name_from_id(study_id)
            parent = self._parent_of(study_id)
            if parent is not None:
                view = load_view(optuna.load_study(study_name=parent[0], storage=self.storage))
                runs = self.storage.get_n_trials(study_id)
                text = companion_card(view, parent[1], runs, name, companion_kind(name))
            else:
                view = load_view(optuna.load_study(study_name=name, storage=self.storage))
                try:
                    companion = self.storage.get_study_id_from_name(companion_name(name))
                except KeyError:
                    companion = None
                text = study_card(view, companion)
        except KeyError:
            return _reply(start_response, "404 Not Found", "text/plain", b"")
        except Exception as exc:  # noqa: BLE001 - the page works without its card
            log.warning("warning: no decision card for study %d: %s", study_id, exc)
            return _reply(start_response, "500 Internal Server Error", "text/plain", b"")
        return _reply(start_response, "200 OK", "text/html; charset=utf-8", text.encode())

    def _rewrite(self, environ: dict, start_response: Callable, change) -> Iterable[bytes]:
        status, headers, body = _call(self.app, environ)
        if status.startswith("200"):
            try:
                body = json.dumps(change(json.loads(body))).encode()
            except Exception as exc:  # noqa: BLE001 - the dashboard's own answer still serves
                log.warning("warning: could not adjust %s: %s", environ.get("PATH_INFO"), exc)
        return _reply(start_response, status, None, body, headers)

    def _page(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """index.html with the script and the style in its head; never answered "not
        modified", so a page cached before ``hpo dashboard`` served it is not reused."""
        fresh = {k: v for k, v in environ.items() if k not in _CONDITIONAL}
        status, headers, body = _call(self.app, fresh)
        if status.startswith("200") and b"</head>" in body:
            head = f'<script defer src="{SCRIPT}"></script>{_CSS}</head>'.encode()
            body = body.replace(b"</head>", head, 1)
            headers = [(k, v) for k, v in headers if k.lower() not in ("etag", "last-modified")]
            headers.append(("Cache-Control", "no-store"))
        return _reply(start_response, status, None, body, headers)


_CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_RANGE")


def _call(app: Callable, environ: dict) -> tuple[str, list, bytes]:
    """The inner app's whole answer: status, headers, body."""
    got: dict = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, list(headers)
        return lambda data: got.setdefault("written", []).append(data)

    result = app(environ, start_response)
    try:
        body = b"".join(got.get("written", [])) + b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return got["status"], got["headers"], body


def _reply(
    start_response: Callable, status: str, kind: str | None, body: bytes, headers=()
) -> list[bytes]:
    out = [(k, v) for k, v in headers if k.lower() != "content-length"]
    if kind is not None:
        out = [(k, v) for k, v in out if k.lower() != "content-type"] + [("Content-Type", kind)]
    start_response(status, [*out, ("Content-Length", str(len(body)))])
    return [body]


__all__ = ["DashboardLayer", "readable_attrs", "shown_study_list"]
