"""The report's capacity section (reports/capacity.py), drawn in headless Chromium: the finding,
a row per step, TTFA p50/p95/p99 against level and error rate against level, no console errors
and no request leaving the page. The result is built by the search's own code (capacity.result)
from plain steps, so the section sees exactly what `--find-capacity` hands it."""

from __future__ import annotations

import pytest

from loadtests import capacity as cap
from reports import build_report
from telemetry.query import open_query

from .pagecheck import inspect
from .test_report_system import ARTIFACTS

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]
needs_chromium = pytest.mark.needs_tool("chromium")

LEVELS = {30: (450, 530, 553, 0.0), 45: (455, 548, 596, 0.155), 38: (455, 528, 610, 0.0),
          42: (454, 547, 604, 0.07), 40: (458, 544, 609, 0.0)}


def capacity_result() -> dict:
    cfg = cap.SearchConfig(start=30, integer=True, factor=1.5, unit="users")
    steps = []
    while (d := cap.next_step(cfg, steps)).level is not None:
        p50, p95, p99, er = LEVELS[int(d.level)]
        steps.append(cap.Step(level=d.level, hold_s=8, sessions=180, turns=180, error_rate=er,
                              errors={"http_429": round(er * 180)} if er else {},
                              ttfa_p50=p50, ttfa_p95=p95, ttfa_p99=p99,
                              verdicts=[{"expr": "error_rate<0.01", "ok": er < 0.01,
                                         "actual": er}]))
    return {**cap.result(cfg, steps, d).to_dict(), "bounds": ["error_rate<0.01"]}


@needs_chromium
def test_capacity_section_draws_in_chromium(tmp_path):
    res = capacity_result()
    assert res["breaking_point"] == 40 and len(res["steps"]) == 5
    q = open_query(store_path=str(tmp_path / "empty.db"))
    try:
        out = build_report(q, tmp_path / "capacity.html", start_ns=0, end_ns=10**18,
                           run_id="cap-1", capacity=res)
    finally:
        q.close()
    page = inspect(out, ARTIFACTS / "report-capacity.png")
    plots = {p["id"]: p for p in page["plots"]}
    lat, err = plots["capacity-latency"], plots["capacity-errors"]
    assert lat["rendered"] and err["rendered"]
    assert lat["names"] == ["TTFA p50", "TTFA p95", "TTFA p99"] and lat["points"] == 15
    assert lat["svg_lines"] == 3 and err["svg_lines"] == 1 and err["points"] == 5
    assert page["console_errors"] == []
    assert all(u.startswith(("file:", "data:", "about:")) for u in page["requests"])
    text = page["text"]
    assert "Breaking point: 40 users." in text
    assert "First bound broken: error_rate<0.01 at 42 users (0.07)" in text
    assert "http_429 13" in text
    html = out.read_text()
    assert html.count('<tr data-level=') == 5 and 'data-breaking-point="40.0"' in html


def test_no_capacity_section_without_a_search(tmp_path):
    q = open_query(store_path=str(tmp_path / "empty.db"))
    try:
        out = build_report(q, tmp_path / "plain.html", start_ns=0, end_ns=10**18)
    finally:
        q.close()
    assert 'id="capacity"' not in out.read_text()
