"""A load run whose scenario has `callers:` (probes/callers.py): over two worker processes each
session plays one of the run's drawn callers, and the stored session and turn points say which."""

from __future__ import annotations

import sqlite3

import orjson
import pytest

from loadtests.plan import LoadConfig, Plan
from loadtests.run import run_load
from probes.callers import CallerPool
from probes.spec import Scenario
from tests.sim_server import SimProcess

# 35 dB and up: quiet enough for the simulator's energy VAD to end every turn where it should. At
# 20..40 dB the babble callers (measured: babble at 23.2 dB) had the noise in their trailing
# silence heard as speech, which cancelled the reply (response_failed:turn_detected).
CALLERS = {"noise_snr_db": [35, 50], "noise": ["pink", "white", "babble"],
           "pause_ms": [0, 300], "variants": 4}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sessions_play_varied_callers_and_store_which(tmp_path, monkeypatch):
    from voicepulse.config import sim_target

    monkeypatch.setenv("SIM_API_KEY", "test-key")
    sc = Scenario(name="crowd", turns=2, utterance_s=0.6, trailing_silence_s=0.6, pause_s=0.2,
                  callers=CALLERS)
    with SimProcess(args=["--reply-s", "0.4"]) as sim:
        plan = Plan(sim_target("sim-fast", sim.ws_url + "/v1/realtime"), sc,
                    LoadConfig(rate=3.0, duration_s=4.0, interval_s=2.0, drain_s=20.0, seed=5),
                    store=str(tmp_path / "store.db"), outbox=str(tmp_path / "outbox"),
                    results_jsonl=str(tmp_path / "results.jsonl"))
        s = run_load(plan, processes=2, timeout_s=80)
    raw = [orjson.loads(x) for x in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    assert s.complete and len(raw) == s.counters["sessions"] == 12
    pool = {c.label for c in CallerPool(sc, seed=5).callers}
    labels = [r["caller"] for r in raw]
    assert set(labels) <= pool and len(set(labels)) >= 2, labels  # a fleet, from the pool
    # the run's session index picks the caller: over the 12 sessions, the same multiset
    want = sorted(CallerPool(sc, seed=5).pick(i)[0].label for i in range(12))
    assert sorted(labels) == want
    assert all(r["outcome"] == "ok" and r["scenario"] == "crowd" for r in raw), [
        (r["caller"], r["outcome"], r["error"], [t["vad_ms"] for t in r["turns"]]) for r in raw]
    # the summary's per-caller block counts each caller's sessions and turns as stored
    assert {k: (v["sessions"], v["turns"]) for k, v in s.callers.items()} == {
        k: (labels.count(k), 2 * labels.count(k)) for k in set(labels)}
    assert all(v["ok"] == v["sessions"] and v["ttfa_p50"] > 0 and v["no_speech"] == 0
               for v in s.callers.values())
    assert "callers:" in s.table() and all(k in s.table() for k in set(labels))
    db = sqlite3.connect(tmp_path / "store.db")
    stored = dict(db.execute("select session_id, caller from session"))
    assert stored == {r["session_id"]: r["caller"] for r in raw}
    turns = db.execute("select session_id, caller from turn").fetchall()
    assert len(turns) == 24 and all(c == stored[sid] for sid, c in turns)
