"""Scripted scenarios in load runs: per-turn checks and WER merge exactly across workers and
reports, and show in the printed summary and `--summary-json`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import orjson
import pytest

from loadtests.metrics import Delta, ScenarioTally
from loadtests.plan import LoadConfig, Plan
from loadtests.run import run_load
from loadtests.summary import LoadSummary, scenario_stats
from probes.results import SessionResult, TurnResult
from telemetry.stats import percentile as nearest_rank
from tests.sim_server import ROOT, SimProcess

SUPPORT_CALL = Path(ROOT) / "scenarios" / "support-call.yaml"


def _session(wers: list[float | None], stopped: bool) -> SessionResult:
    turns = [TurnResult(i, wer=w, checks={"transcribed": w is not None,
                                          "reply_stopped": stopped} if i == 0 else
                        {"transcribed": w is not None})
             for i, w in enumerate(wers)]
    return SessionResult("t", "openai", "m", turns=turns)


def _wire(d: Delta) -> Delta:
    """What the master gets from a worker: encoded, through msgpack as Locust sends it."""
    return Delta.decode(msgpack.unpackb(msgpack.packb(d.encode()), raw=False))


def test_checks_and_wer_merge_exactly_whatever_the_split():
    sessions = [_session([0.1, 0.25], True), _session([None, 1 / 3], False),
                _session([0.0, 0.125], True), _session([0.5], False), _session([2 / 7, 0.1], True)]
    one = Delta()
    for s in sessions:
        one.add_result(s)
    merged = Delta()
    for part in ([sessions[0], sessions[3]], [sessions[1]], [sessions[2], sessions[4]]):
        d = Delta()
        for s in part:
            d.add_result(s)
        merged.add(_wire(d))
    assert merged.scenario == one.scenario
    assert merged.scenario.checks == {"transcribed": [8, 9], "reply_stopped": [3, 5]}
    raw = sorted(t.wer for s in sessions for t in s.turns if t.wer is not None)
    checks, wer = scenario_stats(merged.scenario)
    assert checks["transcribed"] == {"passed": 8, "total": 9}
    assert wer.turns == len(raw) == 8
    assert wer.mean == pytest.approx(sum(raw) / len(raw), abs=5e-5)
    assert wer.p95 == pytest.approx(nearest_rank(raw, 95), abs=5e-5)
    assert merged.scenario.wer_percentile(50) == pytest.approx(nearest_rank(raw, 50), abs=5e-5)


def test_a_plain_run_has_no_scenario_block():
    d = Delta()
    d.add_result(SessionResult("t", "openai", "m", turns=[TurnResult(0, ttfa_ms=500.0)]))
    assert not d.scenario and "scenario" not in d.encode()
    assert scenario_stats(d.scenario) == ({}, None)
    assert ScenarioTally.decode(None) == ScenarioTally()


def _results(tmp_path: Path) -> list[dict]:
    return [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_support_call_over_two_processes_sums_checks_and_wer(tmp_path, monkeypatch):
    from voicepulse.config import load_scenario_file, sim_target

    monkeypatch.setenv("SIM_API_KEY", "test-key")
    with SimProcess(args=["--reply-s", "0.6"]) as sim:
        sim.set_profile(model="sim-fast", wer=0.2)  # transcripts with errors: WER varies
        plan = Plan(sim_target("sim-fast", sim.ws_url + "/v1/realtime"),
                    load_scenario_file(SUPPORT_CALL),
                    LoadConfig(rate=1.0, duration_s=4.0, interval_s=2.0, drain_s=30.0),
                    store=str(tmp_path / "store.db"), outbox=str(tmp_path / "outbox"),
                    results_jsonl=str(tmp_path / "results.jsonl"),
                    summary_json=str(tmp_path / "summary.json"))
        s = run_load(plan, processes=2, timeout_s=80)
    raw = _results(tmp_path)
    turns = [t for r in raw for t in r["turns"]]
    assert s.workers == 2 and s.complete and s.counters["sessions"] == len(raw) == 4
    assert s.counters["turns"] == len(turns) == 8
    db = sqlite3.connect(tmp_path / "store.db")
    per_worker = dict(db.execute("select worker, sum(sessions) from loadgen group by worker"))
    assert per_worker["worker-0"] > 0 and per_worker["worker-1"] > 0  # both shipped turns
    # per check name: passed/total are the sums over every turn of both workers
    want: dict[str, dict] = {}
    for t in turns:
        for name, ok in t["checks"].items():
            c = want.setdefault(name, {"passed": 0, "total": 0})
            c["passed"] += ok
            c["total"] += 1
    assert s.checks == want
    assert s.checks["transcribed"]["total"] == len(turns)  # every turn is transcribed
    assert s.checks["tool_called"] == {"passed": 4, "total": 4}  # one lookup per call
    wers = sorted(t["wer"] for t in turns if t["wer"] is not None)
    assert s.wer.turns == len(wers) == len(turns)
    assert s.wer.mean == pytest.approx(sum(wers) / len(wers), abs=5e-5)
    assert s.wer.p95 == pytest.approx(nearest_rank(wers, 95), abs=5e-5)
    assert s.wer.mean > 0  # the injected errors were scored
    # tool timings flow as HDR metrics into the table, counted once per tool turn
    assert s.metric("tool_ms").count == s.metric("tool_result_ms").count == 4
    # the JSON written for --summary-json round-trips with the block, and the table prints it
    again = LoadSummary.from_dict(orjson.loads((tmp_path / "summary.json").read_bytes()))
    assert again.checks == s.checks and again.wer == s.wer
    table = s.table()
    assert "scenario checks:" in table and "tool_ms" in table and "tool_result_ms" in table
    assert f"{want['tool_args_match']['passed']:>6}/{want['tool_args_match']['total']}" in table
    assert f"mean {s.wer.mean:.3f}  p95 {s.wer.p95:.3f}  ({len(wers)} turns)" in table
