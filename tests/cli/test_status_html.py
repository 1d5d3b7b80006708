"""`voicepulse status --html FILE`: one self-contained file, opened from disk in headless
Chromium: it draws the same cards `results --format json` prints for its window, requests
nothing but itself, and `--public` leaves out the service section."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.cli.test_results_format import ERROR_TEXT, alpha_runs, result
from tests.reports.chrome import Chrome
from tests.scheduler.test_status_page import CARDS_JS
from voicepulse.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.needs_tool("chromium")]


@pytest.fixture
def store(tmp_path):
    import time

    from telemetry.embedded import EmbeddedStore
    from telemetry.recorder import Recorder

    path = str(tmp_path / "vp.db")
    now = time.time()
    rec = Recorder(EmbeddedStore(path), interval_s=10.0)
    for at, ttfa, outcome in alpha_runs(now):
        rec.record(result("alpha", at, ttfa, outcome))
    assert rec.close(timeout=10.0)
    return path


def test_static_page_agrees_with_results_and_stays_offline(store, tmp_path):
    html = tmp_path / "status.html"
    out = CliRunner().invoke(main, ["status", "--html", str(html), "--store", store])
    assert out.exit_code == 0, out.output
    assert "1 targets" in out.output
    body = html.read_text()
    assert ERROR_TEXT not in body and "<script src" not in body and "<link" not in body
    with Chrome(width=390, height=900) as c:
        c.open(html.resolve().as_uri(), width=390, height=900)
        page = c.wait_for(f"(() => {{ const d = {CARDS_JS}; return d.cards.length ? d : null; }})()")
        urls = c.requested_urls()
        errors = c.console_errors()
        widths = c.evaluate("[document.documentElement.scrollWidth, "
                            "document.documentElement.clientWidth]")
    assert urls == [html.resolve().as_uri()] and errors == [], (urls, errors)
    assert widths[0] <= widths[1] == 390
    res = json.loads(CliRunner().invoke(main, [
        "results", "--store", store, "--since", "24h", "--until", page["end"], "--kind", "probe",
        "--format", "json"]).output)
    (card,), (shown,) = res["targets"], page["cards"]
    assert shown["target"] == card["target"] == "alpha"
    for key in ("runs_ttfa_p50_ms", "runs_ttfa_p95_ms", "window_ttfa_p50_ms",
                "window_ttfa_p95_ms"):
        assert float(shown["v"][key]) == card[key], key
    assert int(shown["v"]["runs_failed"]) == card["runs_failed"] >= 1
    assert shown["t"]["runs_failed"] == f"{card['runs_failed']} / 6 runs"
    for w in ("24h", "7d", "30d"):
        assert float(shown["v"][f"uptime_{w}"]) == card["uptime"][w]["ratio"]
    assert shown["bar"] == [i["state"] for i in card["bar"]]
    assert page["refreshes"] == 0  # a file: nothing to refresh from


def test_public_flag_and_an_empty_store(store, tmp_path):
    cfg = tmp_path / "svc.yaml"
    cfg.write_text(f"""
targets:
  alpha: {{url: "wss://user:pw-canary@voice.example.com/v1/realtime?key=k-canary", model: m}}
store: {store}
probes:
  - {{target: alpha, every: 30s}}
""")
    html = tmp_path / "private.html"
    assert CliRunner().invoke(main, ["status", "--config", str(cfg), "--html",
                                     str(html)]).exit_code == 0
    doc_private = html.read_text()
    assert "wss://voice.example.com/v1/realtime" in doc_private  # its endpoint, no secrets
    public = tmp_path / "public.html"
    assert CliRunner().invoke(main, ["status", "--config", str(cfg), "--html", str(public),
                                     "--public"]).exit_code == 0
    doc_public = public.read_text()
    for text in (doc_private, doc_public):
        assert "canary" not in text and ERROR_TEXT not in text
    assert "voice.example.com" not in doc_public and '"public":true' in doc_public
    empty = tmp_path / "empty.html"
    out = CliRunner().invoke(main, ["status", "--html", str(empty), "--store",
                                    str(tmp_path / "none.db")])
    assert out.exit_code == 0 and "0 targets" in out.output
