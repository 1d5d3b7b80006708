"""The status page of a real `voicepulse serve` against the simulator, in headless Chromium.

The cards show P50/P95, "x / N runs" and the last test; a fault window changes the error count
and the uptime bar on the open page without a reload; at 390 px nothing overflows; no request
leaves the machine; the numbers equal `voicepulse results --format json` for the page's window;
and with `public: true` a canary secret, the error text and the endpoints appear nowhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from telemetry.embedded import EmbeddedStore
from telemetry.query import EmbeddedQuery
from tests.reports.chrome import Chrome
from tests.sim_server import SimProcess

pytestmark = [pytest.mark.slow, pytest.mark.needs_tool("chromium")]
ROOT = Path(__file__).resolve().parents[2]
CANARY = "canary-3b9e1d7f"  # in the targets' URL query and as the API key
ERROR_TEXT = "Rate limit reached"  # the simulator's error_event message

CONFIG = """
targets:
  page-a:
    url: "{url}?token={canary}"
    model: vp-page-a
    api_key_env: SIM_API_KEY
  page-b:
    url: "{url}?token={canary}"
    model: vp-page-b
    api_key_env: SIM_API_KEY
scenarios:
  default: {{turns: 1, utterance_s: 0.3, trailing_silence_s: 0.5}}
store: {store}
agent: page-agent
status:
  port: 0
  page: {{runs: 6, refresh: 1s, bar_span: 3m, public: {public}}}
service: {{evaluate_every: 1s, shutdown_timeout: 3s}}
probes:
  - {{target: page-a, every: 3s}}
  - {{target: page-b, every: 3s}}
alerts:
  - {{name: a-errors, kind: threshold, target: page-a, expr: error_rate > 0.2, over: 20s}}
"""

#: every card's shown values (data-v), texts, bar and uptime; one render, read at once
CARDS_JS = r"""
(() => ({
  end: document.body.dataset.end, settled: document.body.dataset.settled,
  refreshes: +document.body.dataset.refreshes,
  cards: Array.from(document.querySelectorAll('.card')).map(c => {
    const v = {}, t = {};
    c.querySelectorAll('[data-k]').forEach(e => { v[e.dataset.k] = e.dataset.v; t[e.dataset.k] = e.textContent; });
    const f = c.querySelector('[data-k=runs_failed]');
    return {target: c.dataset.target, v, t, runs: f ? +f.dataset.runs : 0,
            bar: Array.from(c.querySelectorAll('.bar span')).map(s => s.dataset.state),
            tips: Array.from(c.querySelectorAll('.bar span')).map(s => s.title)};
  })
}))()
"""


@pytest.fixture
def serve(tmp_path):
    """start(public) -> (proc, base URL, sim, config path); everything stopped at teardown."""
    procs: list[subprocess.Popen] = []
    with SimProcess() as sim:
        for m in ("vp-page-a", "vp-page-b"):
            sim.set_profile(model=m, ttfa_ms=180 if m.endswith("a") else 260, reply_s=0.4,
                            speed=1.0)

        def start(public: bool) -> tuple[subprocess.Popen, str, SimProcess, Path]:
            cfg = tmp_path / f"page-{public}.yaml"
            cfg.write_text(CONFIG.format(url=sim.ws_url + "/v1/realtime", canary=CANARY,
                                         store=tmp_path / f"vp-{public}.db",
                                         public=str(public).lower()))
            log = tmp_path / f"serve-{public}.stderr"
            with open(log, "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "voicepulse.cli", "serve", "--config", str(cfg),
                     "--duration", "120s"], cwd=ROOT, env={**os.environ, "SIM_API_KEY": CANARY},
                    stdout=subprocess.DEVNULL, stderr=err)
            procs.append(proc)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                lines = [ln for ln in log.read_text(errors="replace").splitlines()
                         if "serving:" in ln]
                if lines:
                    base = lines[0].strip().rsplit(" ", 1)[-1].rsplit("/", 1)[0]
                    return proc, base, sim, cfg
                time.sleep(0.1)
            raise AssertionError("serve did not start: " + log.read_text(errors="replace"))

        try:
            yield start
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(5)


def cards(c: Chrome) -> dict:
    doc = c.evaluate(CARDS_JS)
    doc["by"] = {k["target"]: k for k in doc["cards"]}
    return doc


def wait_page(c: Chrome, pred, timeout: float, what: str) -> dict:
    """The page's cards until `pred(doc)` holds (bounded), polled every 0.2 s."""
    deadline = time.monotonic() + timeout
    while True:
        doc = cards(c)
        if pred(doc):
            return doc
        if time.monotonic() > deadline:
            brief = {k["target"]: {"t": k["t"], "bar": "".join(x[0] for x in k["bar"])}
                     for k in doc["cards"]}
            raise AssertionError(f"the page never showed {what} within {timeout} s: "
                                 f"refreshes {doc['refreshes']}, {brief}")
        time.sleep(0.2)


def bad_cells(card: dict) -> int:
    return sum(s in ("down", "degraded") for s in card["bar"])


def test_live_page_in_chromium(serve, tmp_path):
    proc, base, sim, cfg = serve(public=False)
    with Chrome(width=390, height=900, timeout=30) as c:
        c.open(base + "/", width=390, height=900)
        first = wait_page(c, lambda d: len(d["cards"]) == 2 and all(
            k["runs"] >= 6 for k in d["cards"]) and d["refreshes"] >= 1, 60, "6 runs per card")
        for k in first["cards"]:
            v, t = k["v"], k["t"]
            for key in ("runs_ttfa_p50_ms", "runs_ttfa_p95_ms", "window_ttfa_p50_ms",
                        "window_ttfa_p95_ms"):
                assert float(v[key]) > 100, (k["target"], key, v)  # the profiles' TTFA
                assert re.fullmatch(r"\d+\.\d ms", t[key]), t[key]
            assert float(v["runs_ttfa_p50_ms"]) <= float(v["runs_ttfa_p95_ms"])
            assert t["runs_failed"] == "0 / 6 runs", t  # N = status.page.runs
            assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC", t["last_at"]), t
            assert t["last_outcome"] == "ok" and bad_cells(k) == 0
            assert k["bar"].count("ok") >= 1 and len(k["bar"]) == 90
        assert float(first["by"]["page-a"]["v"]["runs_ttfa_p50_ms"]) < \
            float(first["by"]["page-b"]["v"]["runs_ttfa_p50_ms"])  # 180 ms vs 260 ms profiles
        text = c.evaluate("document.body.innerText")
        assert "/v1/realtime" in text and CANARY not in text  # the endpoint, without its query

        # a fault window on page-a only; the open page must change by itself
        c.evaluate("window.__vpMarker = 'same page'")
        sim.fault(kind="error_event", models=["vp-page-a"], duration_s=7)
        hit = wait_page(c, lambda d: int(d["by"]["page-a"]["v"]["runs_failed"]) >= 1
                        and bad_cells(d["by"]["page-a"]) >= 1, 40, "page-a's errors")
        a = hit["by"]["page-a"]
        assert re.fullmatch(r"[1-6] / 6 runs", a["t"]["runs_failed"]), a["t"]
        assert "server_error:rate_limit_exceeded" in a["t"]["runs_errors"]
        assert float(a["v"]["uptime_24h"]) < 1.0
        assert any("failed" in tip and not tip.endswith(" 0 failed") for tip in a["tips"])
        assert bad_cells(hit["by"]["page-b"]) == 0  # the other target is untouched
        assert c.evaluate("window.__vpMarker") == "same page"  # no reload
        navigations = [e for e in c.events if e["method"] == "Page.frameNavigated"
                       and not e["params"]["frame"].get("parentId")]
        assert len(navigations) == 1, navigations
        firing = wait_page(c, lambda d: "a-errors" in (d["by"]["page-a"]["t"].get("alerts")
                                                       or ""), 30, "the firing alert")
        assert "alerts" not in firing["by"]["page-b"]["t"]

        # the page's numbers == `results --format json` for the page's window
        def settled(d: dict) -> bool:
            return d["settled"] == "1" and d["refreshes"] > hit["refreshes"]

        snap = wait_page(c, settled, 60, "a refresh with no probe in flight")
        out = subprocess.run(
            [sys.executable, "-m", "voicepulse.cli", "results", "--config", str(cfg),
             "--since", "24h", "--until", snap["end"], "--kind", "probe", "--format", "json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert res["window"]["end"] == snap["end"] and res["runs"] == 6
        assert res["percentile_rule"].startswith("nearest rank")
        for card in res["targets"]:
            shown = snap["by"][card["target"]]
            v = shown["v"]
            for key in ("runs_ttfa_p50_ms", "runs_ttfa_p95_ms", "window_ttfa_p50_ms",
                        "window_ttfa_p95_ms"):
                assert float(v[key]) == card[key], (card["target"], key)
            assert (int(v["runs_failed"]), shown["runs"]) == (card["runs_failed"], card["runs"])
            assert v["last_at"] == card["last_at"] and v["last_outcome"] == card["last_outcome"]
            for w in ("24h", "7d", "30d"):
                assert float(v[f"uptime_{w}"]) == card["uptime"][w]["ratio"], w
            assert json.loads(v.get("runs_errors") or "{}") == card["runs_errors"]
            assert shown["bar"] == [i["state"] for i in card["bar"]]
        a_res = next(x for x in res["targets"] if x["target"] == "page-a")
        assert a_res["uptime"]["24h"]["runs"] > a_res["uptime"]["24h"]["ok"]  # the fault shows

        # 390 px: nothing wider than the viewport
        widths = c.evaluate("[document.documentElement.scrollWidth, "
                            "document.documentElement.clientWidth, Math.max(...Array.from("
                            "document.querySelectorAll('body *')).map(e => "
                            "e.getBoundingClientRect().right))]")
        widest = c.evaluate("Array.from(document.querySelectorAll('body *')).filter(e => "
                            "e.getBoundingClientRect().right > 390).map(e => e.tagName + '.' + "
                            "e.className + ': ' + e.textContent.slice(0, 40))")
        assert widths[0] <= widths[1] == 390 and widths[2] <= 390, (widths, widest)
        shot = c.screenshot(tmp_path / "status-390.png", width=390)
        png = shot.read_bytes()
        assert int.from_bytes(png[16:20], "big") == 390  # the IHDR width
        if os.environ.get("VP_STATUS_SCREENSHOT"):  # the docs' picture: docs/img/status-page.png
            shutil.copy(shot, os.environ["VP_STATUS_SCREENSHOT"])

        urls = c.requested_urls()
        assert urls and all(u.startswith(base + "/") for u in urls), urls
        assert sum(u.endswith("/page.json") for u in urls) >= 3
        assert c.console_errors() == []
        assert ERROR_TEXT not in c.evaluate("document.documentElement.outerHTML")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_public_page_shows_no_secret_error_text_or_endpoint(serve, tmp_path):
    proc, base, sim, _cfg = serve(public=True)
    sim.fault(kind="error_event", models=["vp-page-a"], count=2)
    with Chrome(width=390, height=900, timeout=30) as c:
        c.open(base + "/", width=390, height=900)
        wait_page(c, lambda d: len(d["cards"]) == 2 and int(
            d["by"]["page-a"]["v"]["runs_failed"]) >= 1 and d["by"]["page-a"]["runs"] >= 3,
            45, "page-a's failed runs")
        dom = c.evaluate("document.documentElement.outerHTML")
        text = c.evaluate("document.body.innerText")
        assert c.evaluate("document.getElementById('service').children.length") == 0
    page, page_json = fetch(base + "/"), fetch(base + "/page.json")
    # the check can fail: the store does hold the error text of page-a's failed runs
    q = EmbeddedQuery(EmbeddedStore(str(tmp_path / "vp-True.db")))
    try:
        errors = [r[1] for r in q.select("session", ("error",), 0, time.time_ns() + 1)]
    finally:
        q.close()
    assert any(ERROR_TEXT in (e or "") for e in errors), errors
    host = base.split("//", 1)[1]
    sim_host = sim.ws_url.split("//", 1)[1]
    for name, body in (("DOM", dom), ("page", page), ("page.json", page_json)):
        for secret in (CANARY, ERROR_TEXT, sim_host, "/v1/realtime", "page-agent"):
            assert secret not in body, (name, secret)
    assert "server_error:rate_limit_exceeded" in text  # the class is shown, not the text
    assert host not in page_json
    doc = json.loads(page_json)
    assert doc["public"] is True and "service" not in doc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
