"""A load run over WebRTC (issue 16): `load --processes 2` with a `transport: webrtc` target
against the simulator's WebRTC routes. Each Locust worker is gevent-patched, so this runs the
engine's asyncio bridge (probes/rtc_loop.py) in real workers, name resolution included:
sessions complete in both, and their turn and session points are stored with the transport
tag."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from loadtests.plan import LoadConfig, Plan, default_target
from loadtests.run import run_load
from probes.spec import Scenario
from simulator.process import SimProcess

pytestmark = pytest.mark.slow

SHORT = Scenario(name="short", turns=1, utterance_s=0.6, trailing_silence_s=0.6, pause_s=0.0)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("SIM_API_KEY", "test-key")


def test_two_worker_processes_store_webrtc_points(tmp_path):
    with SimProcess(["--http-port", "0", "--ttfa-ms", "150", "--reply-s", "0.5"]) as sim:
        # a host name, not an address: signalling resolves it from the loop thread, whose
        # executor calls gevent would otherwise make greenlets nobody runs (probes/rtc_loop.py)
        url = sim.http_url.replace("127.0.0.1", "localhost") + "/v1/realtime"
        tgt = dataclasses.replace(default_target(url, "sim-fast"), transport="webrtc")
        plan = Plan(tgt, SHORT, LoadConfig(rate=2.0, duration_s=4.0), record=True,
                    store=str(tmp_path / "store.db"), outbox=str(tmp_path / "outbox"),
                    results_jsonl=str(tmp_path / "results.jsonl"))
        s = run_load(plan, processes=2, timeout_s=90)
    c = s.counters
    assert s.workers == 2 and c["sessions"] == 8, c
    assert c["sessions_ok"] == c["sessions"], (c, s.table())
    db = sqlite3.connect(tmp_path / "store.db")
    per_worker = dict(db.execute("select worker, sum(sessions) from loadgen group by worker"))
    assert per_worker["worker-0"] > 0 and per_worker["worker-1"] > 0
    assert dict(db.execute("select transport, count(*) from turn group by transport")) == {
        "webrtc": c["turns"]}
    assert dict(db.execute("select transport, count(*) from session group by transport")) == {
        "webrtc": c["sessions"]}
    (ttfa_n,) = db.execute("select count(*) from turn where ttfa_ms > 0").fetchone()
    assert ttfa_n == c["turns"]
