"""GPT-Live under gevent (issue 15): 100 concurrent sessions as greenlets in one monkey-patched
process, as in a Locust worker, against the simulator's /v1/live/sessions. Each turn's audible
onset (`ttfa_ms`, the first output chunk over the gate) is compared with the simulator's truth
(the first audible delta written, same monotonic clock): p99 of the error <= 5 ms.

The sessions run in tests/probes/gevent_sessions.py --serve, a child that stays up between
attempts, so tests/timing.bounded can watch its and the simulator's CPU wait and retry once on
a busy machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim_server import SimProcess
from tests.timing import bounded

N, TURNS = 100, 2


def _p99(values: list[float]) -> float:
    """Nearest-rank p99 of the absolute errors."""
    s = sorted(abs(v) for v in values)
    return s[max(math.ceil(0.99 * len(s)) - 1, 0)]


@pytest.mark.slow
def test_100_gpt_live_greenlets_audible_ttfa_p99_within_5ms_of_truth():
    script = Path(__file__).with_name("gevent_sessions.py")
    with SimProcess(["--ttfa-ms", "150", "--reply-s", "0.6"]) as sim:
        child = subprocess.Popen(
            [sys.executable, str(script), "--serve", sim.ws_url + "/v1/live/sessions", "sim-fast",
             "openai-live"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()[-2000:]

            def measure() -> dict:
                sim.request("DELETE", "/truth")
                child.stdin.write(f"{N} {TURNS} 20\n")
                child.stdin.flush()
                line = child.stdout.readline()
                assert line, child.stderr.read()[-2000:]
                data = json.loads(line)
                assert data["patched"] and data["thread_class"].startswith("gevent")
                assert data["max_os_threads"] < 10  # greenlets, not OS threads
                sessions = data["sessions"]
                assert len(sessions) == N
                assert all(s["outcome"] == "ok" for s in sessions), [
                    (s["outcome"], s["error"]) for s in sessions if s["outcome"] != "ok"][:5]
                errs = []
                for s in sessions:
                    truth = [t for t in sim.truth(session_id=s["server_session_id"])["turns"]
                             if t["status"] == "completed"]
                    assert len(truth) == len(s["turns"]) == TURNS
                    for mine, tt in zip(s["turns"], truth, strict=True):
                        assert mine["outcome"] == "ok"
                        # GPT-Live's TTFA is the audible onset: both metrics are that one mark
                        assert mine["ttfa_ms"] == mine["ttfa_audible_ms"]
                        err = (mine["first_audio_ns"] - tt["first_audio_ns"]) / 1e6
                        # ttfa_ms is E -> our onset mark, so its error vs truth is the mark's
                        truth_ttfa = (tt["first_audio_ns"] - mine["speech_end_ns"]) / 1e6
                        assert mine["ttfa_ms"] - truth_ttfa == pytest.approx(err, abs=1e-3)
                        errs.append(err)
                assert len(errs) == N * TURNS
                return {"p99_ms": _p99(errs), "max_ms": max(map(abs, errs)),
                        "worst": sorted(errs, key=abs)[-5:]}

            out = bounded(measure, lambda m: [] if m["p99_ms"] <= 5.0 else [m],
                          pids=[sim.pid, child.pid], budget_ms=5.0,
                          what=f"{N} GPT-Live greenlets, audible TTFA vs truth")
            print(f"gpt-live {N} greenlets: |err| p99 {out['p99_ms']:.3f} ms, "
                  f"max {out['max_ms']:.3f} ms")
        finally:
            child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
