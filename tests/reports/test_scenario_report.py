"""System test: scripted-scenario columns in the report's per-target table.

A real scripted session (a tool lookup answered, then the user talking over the next reply, with
input transcription scored against a WAV's transcript) and a plain probe session run against the
simulator and are recorded into an embedded store. The report of both shows barge-in p95, tool
p95, WER mean and checks passed/total for the scripted target only, checked in headless
Chromium; a report of the plain target alone has no such columns. The same data copied into a
real influxd gives the same scenario summary (query.scenario_summary on both backends).
"""

from __future__ import annotations

import threading
import time
import wave
from pathlib import Path

import pytest

from probes import audio
from probes.script import parse_script
from probes.session import run_session
from probes.spec import Scenario, Target
from reports import build_report
from reports.html import SCENARIO_COLUMNS, fmt_ms, fmt_wer
from telemetry.embedded import EmbeddedStore
from telemetry.query import InfluxQuery, open_query
from telemetry.recorder import Recorder

from .pagecheck import inspect
from .test_report_system import ARTIFACTS, _copy_to_influx

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

TOOLS = [{"type": "function", "name": "lookup_order", "description": "Find an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                         "required": ["order_id"]}}]
ASK = "where is my order A1234 please"
STEPS = [
    {"say": {"wav": "ask.wav", "transcript": ASK}},
    {"expect_tool": {"name": "lookup_order", "args": {"order_id": "A1234"}}},
    {"tool_result": {"output": {"status": "shipped"}, "delay_ms": 100}},
    "wait_reply",
    {"say": 0.6},
    {"interrupt_after": {"ms": 200, "say": {"duration": 0.5}}},
    "wait_reply",
]
HEADERS = [h for h, _k in SCENARIO_COLUMNS]


def _wav(path: Path, seconds: float = 1.2, rate: int = 16000) -> None:
    pcm = audio.speech(seconds, rate, seed=3)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


@pytest.fixture(scope="module")
def scenario_store(tmp_path_factory):
    from tests.sim_server import SimProcess

    tmp = tmp_path_factory.mktemp("scenario-report")
    _wav(tmp / "ask.wav")
    store = tmp / "run.db"
    scripted = Scenario(name="support", trailing_silence_s=0.6, tools=TOOLS,
                        transcription_model="whisper-1",
                        script=parse_script(STEPS, None, base_dir=str(tmp)))
    plain = Scenario(name="default", turns=1, utterance_s=0.5, trailing_silence_s=0.6)
    results: dict = {}
    with SimProcess() as sim:
        url = sim.ws_url + "/v1/realtime"
        # a reply long enough to talk over, stopped 150 ms after the user is heard; 10 % of
        # words misheard so WER has a value to show
        sim.set_profile(model="voice-agent", reply_s=2.0, speed=1.0, ttfa_ms=150,
                        cancel_delay_ms=150, wer=0.1)
        runs = {"voice-agent": (Target("voice-agent", url, "voice-agent", simulator_hints=True),
                                scripted),
                "plain": (Target("plain", url, "sim-fast"), plain)}

        def run(name: str) -> None:
            target, sc = runs[name]
            results[name] = run_session(target, sc, api_key="x", kind="probe")

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in runs]
        start_ns = time.time_ns()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    end_ns = time.time_ns() + 1
    assert set(results) == set(runs)
    for r in results.values():
        assert r.outcome == "ok", r.error
    rec = Recorder(EmbeddedStore(str(store)), interval_s=1.0)
    for r in results.values():
        rec.record(r)
    rec.close(timeout=10)
    query = open_query(store_path=str(store))
    yield {"store": store, "query": query, "start_ns": start_ns - 60_000_000_000,
           "end_ns": end_ns, "result": results["voice-agent"], "tmp": tmp}
    query.close()


def test_scenario_summary_is_exact_from_the_turns(scenario_store):
    q, r = scenario_store["query"], scenario_store["result"]
    (row,) = q.scenario_summary(start_ns=scenario_store["start_ns"], end_ns=scenario_store["end_ns"])
    assert row.target == "voice-agent"  # the plain probe carries no scenario data: no row
    ask, cut = r.turns[0], r.turns[1]
    assert ask.tool_ms is not None and cut.barge_in_ms is not None, (ask, cut)
    assert row.tool_p95 == ask.tool_ms and row.barge_in_p95 == cut.barge_in_ms  # one value each
    wers = [t.wer for t in r.turns if t.wer is not None]
    assert wers and row.wer_turns == len(wers)
    assert row.wer_mean == pytest.approx(sum(wers) / len(wers))
    checks = [ok for t in r.turns for ok in t.checks.values()]
    assert row.checks_total == len(checks) >= 4 and row.checks_passed == sum(checks)
    assert row.checks["tool_called"].ok == row.checks["tool_called"].total == 1


def test_scenario_summary_from_influxd_matches_the_embedded_store(scenario_store, influxd):
    db = "scenario_report"
    influxd.create_database(db)
    assert _copy_to_influx(scenario_store["store"], influxd, db) > 0
    start, end = scenario_store["start_ns"], scenario_store["end_ns"]
    got = InfluxQuery(influxd.url, db).scenario_summary(start_ns=start, end_ns=end)
    assert got == scenario_store["query"].scenario_summary(start_ns=start, end_ns=end)
    assert got and got[0].checks_total > 0


needs_chromium = pytest.mark.needs_tool("chromium")


@needs_chromium
def test_report_shows_scenario_columns_only_where_there_is_data(scenario_store):
    q, start, end = scenario_store["query"], scenario_store["start_ns"], scenario_store["end_ns"]
    out = build_report(q, scenario_store["tmp"] / "scenario.html", start_ns=start, end_ns=end)
    page = inspect(out, ARTIFACTS / "report-scenario.png")
    assert page["console_errors"] == []
    (s,) = q.scenario_summary(start_ns=start, end_ns=end)
    rows = {r["target"]: r["cells"] for r in page["table"]}
    assert set(rows) == {"voice-agent", "plain"}
    agent, plain = rows["voice-agent"], rows["plain"]
    assert agent["barge_in_p95"]["text"] == fmt_ms(s.barge_in_p95) != "-"
    assert float(agent["barge_in_p95"]["value"]) == s.barge_in_p95
    assert agent["tool_p95"]["text"] == fmt_ms(s.tool_p95) != "-"
    assert float(agent["tool_p95"]["value"]) == s.tool_p95
    assert agent["wer_mean"]["text"] == fmt_wer(s.wer_mean)
    assert agent["checks"]["text"] == f"{s.checks_passed}/{s.checks_total}"
    for key in ("barge_in_p95", "tool_p95", "wer_mean", "checks"):
        assert plain[key] == {"text": "-", "value": ""}  # no scenario data for this target
    assert all(h in page["text"] for h in HEADERS)


@needs_chromium
def test_plain_report_has_no_scenario_columns(scenario_store):
    q, start, end = scenario_store["query"], scenario_store["start_ns"], scenario_store["end_ns"]
    out = build_report(q, scenario_store["tmp"] / "plain.html", start_ns=start, end_ns=end,
                       targets=["plain"])
    page = inspect(out, ARTIFACTS / "report-plain-no-scenario.png")
    assert [r["target"] for r in page["table"]] == ["plain"]
    cells = page["table"][0]["cells"]
    assert not {"barge_in_p95", "tool_p95", "wer_mean", "checks"} & set(cells)
    assert not any(h in page["text"] for h in HEADERS)
    assert "ttfa_p95" in cells  # the ordinary table is still there
