"""`status.page` in voicepulse.yaml: defaults, every key read, and each bad value named by
file, key and what was expected; the docs' example parses as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scheduler.config import StatusPage
from voicepulse.config import parse_config
from voicepulse.configkit import ConfigError

BASE = """
targets:
  sim-fast: {url: "ws://127.0.0.1:8765/v1/realtime", model: sim-fast}
probes:
  - {target: sim-fast, every: 30s}
"""


def load(extra: str = ""):
    return parse_config(yaml.safe_load(BASE + extra), "voicepulse.yaml")


def test_defaults_and_every_key():
    assert load().service.status_page == StatusPage()
    assert StatusPage().runs == 6 and StatusPage().public is False
    page = load("status:\n  port: 0\n  page: {runs: 12, public: true, refresh: 30s, "
                "bar_span: 7d, title: Voice APIs}\n").service.status_page
    assert page == StatusPage(runs=12, public=True, refresh_s=30.0, bar_span_s=7 * 86400.0,
                              title="Voice APIs")


@pytest.mark.parametrize(("page", "message"), [
    ("{runs: 0}", "voicepulse.yaml: status.page.runs: expected at least 1, got 0"),
    ("{runs: six}", "voicepulse.yaml: status.page.runs: expected a whole number, got 'six'"),
    ("{public: yes please}", "voicepulse.yaml: status.page.public: expected true or false"),
    ("{refresh: 0.5s}", "voicepulse.yaml: status.page.refresh: expected a duration of at "
                        "least 1s"),
    ("{bar_span: 1m}", "voicepulse.yaml: status.page.bar_span: expected at least 90s"),
    ("{bar_span: soon}", "voicepulse.yaml: status.page.bar_span: expected a duration like"),
    ("{rums: 6}", "voicepulse.yaml: status.page.rums: unknown key (known here: bar_span, public, "
                  "refresh, runs, title)"),
    ("[6]", "voicepulse.yaml: status.page: expected a mapping, got [6]"),
])
def test_bad_values_name_file_key_and_expectation(page, message):
    with pytest.raises(ConfigError) as exc:
        load(f"status:\n  page: {page}\n")
    assert str(exc.value).startswith(message), str(exc.value)


def test_the_docs_example_parses():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "status-page.md").read_text()
    block = re.search(r"```yaml\n(status:.*?)```", doc, re.S)[1]
    page = load(block).service.status_page
    assert (page.runs, page.public, page.refresh_s, page.bar_span_s) == (6, False, 10.0, 86400.0)


def test_status_server_serves_the_page_with_its_headers_only_when_given_one():
    import json
    import urllib.error
    import urllib.request

    from scheduler.status_http import StatusServer

    class Page:
        def html(self) -> str:
            return "<!doctype html><p>cards</p>"

        def document(self) -> dict:
            return {"targets": [{"target": "a", "runs": 6}]}

    with_page = StatusServer(lambda: {"targets": {}}, "127.0.0.1", 0, page=Page()).start()
    bare = StatusServer(lambda: {"targets": {}}, "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(with_page.url + "/", timeout=5) as r:
            assert r.read().decode() == "<!doctype html><p>cards</p>"
            assert r.headers["Content-Type"].startswith("text/html")
            assert r.headers["Cache-Control"] == "no-store"
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        with urllib.request.urlopen(with_page.url + "/page.json?t=1", timeout=5) as r:
            assert json.loads(r.read()) == {"targets": [{"target": "a", "runs": 6}]}
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(bare.url + "/", timeout=5)
        assert exc.value.code == 404
    finally:
        with_page.stop()
        bare.stop()
