"""System test: the audible-TTFA columns of the report's per-target table (issue 15).

A GPT-Live session (its TTFA is the audible onset) and an OpenAI Realtime session whose replies
start with 300 ms of digital silence (first byte before first sound) run against the simulator
and are recorded into an embedded store, beside an older-style result that has no
`ttfa_audible_ms` (data written before the metric existed). The report, read in headless
Chromium, shows an audible TTFA p95 equal to the exact nearest-rank value of each target's
turns, "-" for the target without them; a report of that target alone has no such columns.
And the widest per-target table (tests/reports/test_report_tables_fit.py's) with the column
added still fits a 1,400 px page.
"""

from __future__ import annotations

import threading
import time

import pytest

from probes.results import SessionResult, TurnResult
from probes.session import run_session
from probes.spec import Scenario, Target
from reports import build_report
from reports.collect import AudibleSummary
from reports.html import AUDIBLE_COLUMNS, fmt_ms, render_html
from reports.verdict import evaluate
from telemetry.embedded import EmbeddedStore
from telemetry.query import open_query
from telemetry.recorder import Recorder
from telemetry.stats import percentile

from .chrome import Chrome
from .pagecheck import inspect
from .test_report_system import ARTIFACTS
from .test_report_tables_fit import FIT_JS, _data

pytestmark = [pytest.mark.system, pytest.mark.needs_tool("chromium"), pytest.mark.timeout(90)]

HEADERS = [h for h, _k, _a in AUDIBLE_COLUMNS]
KEYS = [k for _h, k, _a in AUDIBLE_COLUMNS]


@pytest.fixture(scope="module")
def audible_store(tmp_path_factory):
    from tests.sim_server import SimProcess

    tmp = tmp_path_factory.mktemp("audible-report")
    store = tmp / "run.db"
    results: dict = {}
    start_ns = time.time_ns()
    with SimProcess(["--ttfa-ms", "150", "--reply-s", "0.6"]) as sim:
        sim.set_profile(model="lead-silence", lead_silence_ms=300, speed=1.0, delta_ms=100)
        runs = {
            "gpt-live": Target("gpt-live", sim.ws_url + "/v1/live/sessions", "sim-live-fast",
                               provider="openai-live"),
            "realtime": Target("realtime", sim.ws_url + "/v1/realtime", "lead-silence"),
        }
        sc = Scenario(turns=2, utterance_s=0.5, trailing_silence_s=0.6, pause_s=0.1,
                      quiet_ms=400)

        def run(name: str) -> None:
            results[name] = run_session(runs[name], sc, api_key="x", kind="probe")

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert set(results) == set(runs)
    for r in results.values():
        assert r.outcome == "ok", r.error
        assert all(t.ttfa_audible_ms is not None for t in r.turns)
    # recorded before ttfa_audible_ms existed: a TTFA, no audible value
    results["legacy"] = SessionResult("legacy", "openai", "old-model", kind="probe",
                                      turns=[TurnResult(0, ttfa_ms=420.0, turn_ms=900.0)])
    rec = Recorder(EmbeddedStore(str(store)), interval_s=1.0)
    for r in results.values():
        rec.record(r)
    rec.close(timeout=10)
    query = open_query(store_path=str(store))
    yield {"query": query, "start_ns": start_ns - 60_000_000_000, "end_ns": time.time_ns() + 1,
           "results": results, "tmp": tmp}
    query.close()


def test_audible_column_holds_each_targets_exact_p95(audible_store):
    q, start, end = audible_store["query"], audible_store["start_ns"], audible_store["end_ns"]
    out = build_report(q, audible_store["tmp"] / "audible.html", start_ns=start, end_ns=end)
    page = inspect(out, ARTIFACTS / "report-audible.png")
    assert page["console_errors"] == []
    rows = {r["target"]: r["cells"] for r in page["table"]}
    assert set(rows) == {"gpt-live", "realtime", "legacy"}
    for name in ("gpt-live", "realtime"):
        want = percentile([t.ttfa_audible_ms for t in audible_store["results"][name].turns], 95)
        cell = rows[name]["ttfa_audible_p95"]
        assert cell["text"] == fmt_ms(want) != "-" and float(cell["value"]) == want, name
    live, rt = rows["gpt-live"], rows["realtime"]
    # GPT-Live: TTFA is the audible onset, so the two columns agree
    assert live["ttfa_audible_p95"] == live["ttfa_p95"]
    # a reply that starts with silence: its first sound comes after its first byte
    assert float(rt["ttfa_audible_p95"]["value"]) > float(rt["ttfa_p95"]["value"])
    assert rows["legacy"]["ttfa_audible_p95"] == {"text": "-", "value": ""}
    assert all(h in page["text"] for h in HEADERS)
    # the column sits after the TTFA ones
    order = list(rows["gpt-live"])
    assert order.index("ttfa_max") + 1 == order.index("ttfa_audible_p95")
    assert order.index("ttfa_audible_p95") + 1 == order.index("turn_p95")


def test_no_audible_column_for_targets_without_the_metric(audible_store):
    q, start, end = audible_store["query"], audible_store["start_ns"], audible_store["end_ns"]
    out = build_report(q, audible_store["tmp"] / "legacy.html", start_ns=start, end_ns=end,
                       targets=["legacy"])
    page = inspect(out, ARTIFACTS / "report-no-audible.png")
    assert [r["target"] for r in page["table"]] == ["legacy"]
    cells = page["table"][0]["cells"]
    assert not set(KEYS) & set(cells)
    assert not any(h in page["text"] for h in HEADERS)
    assert "ttfa_p95" in cells


def test_the_widest_table_with_the_audible_column_still_fits_a_desktop_page(tmp_path):
    data = _data()  # scenario columns, several error classes, long names
    data.audible = {t: AudibleSummary(t, 4936, 1534.5) for t in data.targets}
    path = tmp_path / "report.html"
    path.write_text(render_html(data, evaluate(data), generated_ns=1_700_000_000 * 10**9))
    with Chrome(timeout=60) as c:
        c.open(path.resolve().as_uri(), width=1400, height=900)
        fit = c.evaluate(FIT_JS)
        c.screenshot(tmp_path / "report-audible-1400.png", width=1400)
    assert fit["page"] <= fit["vw"] == 1400, fit
    summary = next(t for t in fit["tables"] if t["id"] == "summary-table")
    assert summary["last"] == "errors by class" and summary["last_visible"], summary
    assert not summary["scrolls"], summary  # fits outright, as without the column
