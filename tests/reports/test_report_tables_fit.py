"""The report's tables fit their page, checked in headless Chromium at 1,400 and 390 px wide.

The widest per-target table a report makes (scripted-scenario columns, several error classes),
an alert with a long message, a capacity table and long run parameters: the page never
scrolls sideways, and each table's last column is visible, or scrolled to inside its own card.
At 1,400 px the per-target table fits outright (it was cut off at "errors by cl…").
"""

from __future__ import annotations

import pytest

from reports.html import render_html
from reports.verdict import evaluate

from .chrome import Chrome

pytestmark = [pytest.mark.slow, pytest.mark.needs_tool("chromium"), pytest.mark.timeout(90)]

FIT_JS = r"""
(() => {
  const vw = window.innerWidth;
  const tables = Array.from(document.querySelectorAll('table')).map(t => {
    const box = t.parentElement, card = t.closest('section, .facts');
    const last = t.querySelector('thead tr > :last-child');
    const scrolls = box.scrollWidth > box.clientWidth + 1;
    box.scrollLeft = box.scrollWidth;  // to the table's end, as a reader would swipe
    const l = last.getBoundingClientRect(), b = box.getBoundingClientRect(),
          c = card.getBoundingClientRect();
    const out = {
      id: t.id, scrolls, overflow: getComputedStyle(box).overflowX,
      last: last.textContent.trim(),
      last_visible: l.left >= b.left - 1 && l.right <= b.right + 1 && l.right <= vw + 1,
      box_in_card: b.left >= c.left - 1 && b.right <= c.right + 1,
    };
    box.scrollLeft = 0;
    return out;
  });
  return {vw, page: document.scrollingElement.scrollWidth, tables};
})()
"""


def _data():
    from reports.collect import ReportData
    from telemetry.query import Ratio, ScenarioSummary, TargetSummary

    def row(name, model, errors):
        return TargetSummary(target=name, model=model, provider="openai", sessions=1234,
                             ok_sessions=1200, success_ratio=0.9724, turns=4936,
                             ttfa_p50=312.4, ttfa_p95=1234.5, ttfa_p99=2345.6, ttfa_max=12345.6,
                             turn_p95=4567.8, connect_p95=123.4, rtf_mean=2.34, stalls=17,
                             errors=errors, cost_per_audio_min=0.1234)

    names = ["azure-eastus2-gpt-realtime", "gemini-live-europe-west4"]
    summary = [row(names[0], "gpt-4o-realtime-preview-2024-12-17",
                   {"timeout": 12, "ws_closed": 3, "server_error": 2, "empty_reply": 1}),
               row(names[1], "gemini-2.5-flash-native-audio", {"silent_reply": 4})]
    scenario = {n: ScenarioSummary(target=n, turns=40, barge_in_p95=456.7, tool_p95=789.1,
                                   wer_mean=0.123, wer_turns=40, checks_passed=38,
                                   checks_total=40, checks={"tool": Ratio(38, 40)})
                for n in names}
    capacity = {
        "stop": "bound", "found": True, "breaking_point": 40.0, "first_bad": 50.0,
        "unit": "sessions/s", "bounds": ["ttfa_ms.p95<1500", "error_rate<0.01"],
        "broken_bound": {"expr": "ttfa_ms.p95<1500", "actual": 1890.0}, "floor": None,
        "message": "a bound broke", "errors_at_break": {"timeout": 9},
        "steps": [{"level": float(lv), "hold_s": 60.0, "sessions": 600 * lv // 10,
                   "turns": 2400, "ttfa_p50": 300.0 + lv, "ttfa_p95": 900.0 + 20 * lv,
                   "ttfa_p99": 1200.0 + 30 * lv, "error_rate": 0.001 * lv,
                   "errors": {"timeout": lv, "ws_closed": 1}, "late_starts": 3,
                   "health": "ok", "passed": lv < 50,
                   "verdicts": [{"expr": "ttfa_ms.p95<1500", "ok": lv < 50, "actual": 1890.0}]}
                  for lv in (10, 20, 30, 40, 50)],
    }
    from telemetry.query import AlertRecord

    alert = AlertRecord(time_ns=1_700_000_000 * 10**9, rule="availability-slo-burn-rate",
                        target=names[0], severity="page", state="firing", value=14.4,
                        threshold=14.4, message="availability SLO burning 14.4x over 5m and 1h "
                        "(error budget exhausted in 2 d at this rate); 12 timeouts, 3 closes")
    return ReportData(
        title="Nightly load: azure-eastus2-gpt-realtime and gemini-live-europe-west4",
        start_ns=0, end_ns=10**18, first_ns=0, last_ns=10**12, bucket_s=10, targets=names,
        run_id="run-2026-12-03T14-00-00Z-7f3a9c", kinds=["load"], scenarios=["support-call"],
        models={names[0]: [summary[0].model], names[1]: [summary[1].model]},
        providers={n: "openai" for n in names}, summary=summary, latency={}, spectra=[],
        errors=[], outcomes=[], alerts=[alert], loadgen=[], scenario=scenario,
        capacity=capacity,
        params={"target url": "wss://example-resource.openai.azure.com/openai/realtime/"
                              "deployments/gpt-4o-realtime-preview-2024-12-17/sessions/long",
                "load model": "open, 20 sessions/s (poisson), 16 processes x 64 greenlets"})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data = _data()
    path = tmp_path_factory.mktemp("fit") / "report.html"
    path.write_text(render_html(data, evaluate(data), generated_ns=1_700_000_000 * 10**9))
    return path


@pytest.fixture(scope="module")
def chrome():
    with Chrome(timeout=60) as c:
        yield c


@pytest.mark.parametrize("width", [1400, 390])
def test_no_table_overflows_the_page(report, chrome, width, tmp_path):
    chrome.open(report.resolve().as_uri(), width=width, height=900)
    fit = chrome.evaluate(FIT_JS)
    chrome.screenshot(tmp_path / f"report-{width}.png", width=width)
    assert fit["vw"] == width
    assert fit["page"] <= fit["vw"], fit  # the page itself never scrolls sideways
    ids = {t["id"] for t in fit["tables"]}
    assert {"summary-table", "alerts-table", "capacity-table"} <= ids, ids
    for t in fit["tables"]:
        assert t["box_in_card"], t
        assert t["last_visible"], t  # the last column can be seen, scrolled to if need be
        if t["scrolls"]:
            assert t["overflow"] in ("auto", "scroll"), t
    summary = next(t for t in fit["tables"] if t["id"] == "summary-table")
    assert summary["last"] == "errors by class"
    if width == 1400:
        assert not summary["scrolls"], summary  # fits outright on a desktop screen
    else:
        assert summary["scrolls"], summary  # too wide for a phone: it scrolls in its card
