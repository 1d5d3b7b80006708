"""`voicepulse load --master` with two `voicepulse load --worker` processes, on loopback.

The distributed path as a user runs it (README "Distributed runs"): a master that waits for two
remote workers, and two worker processes that get the whole run from it. The master binds
127.0.0.1 on a free port (Locust's LOCUST_MASTER_BIND_* variables; the workers' _NODE_PORT), so
nothing listens beyond loopback and parallel runs never collide on 5557. A short bounded run
against the simulator; the merged summary must equal the sum of the workers: per-worker counts
in the store, the store's session and turn points, and the simulator's own session count.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from loadtests.run import child_env
from tests.servers import free_port
from tests.sim_server import ROOT, SimProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

RATE, DURATION_S = 4.0, 6.0


def test_master_and_two_workers_merge_to_the_sum_of_the_workers(tmp_path) -> None:
    port = free_port()
    store = tmp_path / "store.db"
    with SimProcess() as sim:
        cfg = tmp_path / "vp.yaml"
        cfg.write_text(f"targets:\n  s:\n    url: {sim.ws_url}/v1/realtime\n"
                       f"    model: sim-fast\n    api_key_env: SIM_API_KEY\n"
                       f"scenarios:\n  one:\n    turns: 2\n    utterance_s: 0.5\n"
                       f"    trailing_silence_s: 0.6\n    pause_s: 0.1\n"
                       f"store: {store}\noutbox: {tmp_path}/outbox\n")
        env = {**child_env(), "SIM_API_KEY": "test-key"}
        master_env = {**env, "LOCUST_MASTER_BIND_HOST": "127.0.0.1",
                      "LOCUST_MASTER_BIND_PORT": str(port)}
        worker_env = {**env, "LOCUST_MASTER_NODE_PORT": str(port)}
        summary_json = tmp_path / "summary.json"
        procs: list[subprocess.Popen] = []
        logs = [open(tmp_path / f"{n}.log", "w+") for n in ("master", "worker-a", "worker-b")]
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "voicepulse.cli", "load", "s", "--config", str(cfg),
                 "--scenario", "one", "--rate", str(RATE), "--duration", f"{DURATION_S:g}s",
                 "--master", "--processes", "2", "--summary-json", str(summary_json)],
                cwd=ROOT, env=master_env, stdout=logs[0], stderr=subprocess.STDOUT, text=True))
            for log in logs[1:]:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "voicepulse.cli", "load", "--worker",
                     "--master-host", "127.0.0.1"],
                    cwd=tmp_path, env=worker_env, stdout=log, stderr=subprocess.STDOUT,
                    text=True))
            t0 = time.monotonic()
            codes = [p.wait(timeout=150) for p in procs]
            took = time.monotonic() - t0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
        out = []
        for log in logs:
            log.seek(0)
            out.append(log.read())
            log.close()
        truth_sessions = sim.truth(model="sim-fast")["sessions"]
    print(f"\nmaster + 2 workers: exits {codes} after {took:.1f} s")
    assert codes[0] == 0, out[0][-3000:]
    assert codes[1:] == [0, 0], [o[-2000:] for o in out[1:]]

    s = json.loads(summary_json.read_text())
    c = s["counters"]
    print({k: c[k] for k in ("arrivals_due", "arrivals_started", "sessions", "sessions_ok",
                             "turns", "turns_ok")})
    assert s["workers"] == 2 and len(s["health"]) == 2
    assert c["arrivals_due"] == RATE * DURATION_S == c["arrivals_started"] == c["sessions"]
    assert c["sessions_ok"] == c["sessions"] and c["turns"] == 2 * c["sessions"]

    db = sqlite3.connect(store)
    per_worker = {w: row for w, *row in db.execute(
        "select worker, sum(sessions), sum(arrivals_due), sum(arrivals_started) from loadgen "
        "group by worker")}
    assert set(per_worker) == {"worker-0", "worker-1", "all"}, per_worker
    w0, w1 = per_worker["worker-0"], per_worker["worker-1"]
    assert w0[0] > 0 and w1[0] > 0  # both workers ran sessions
    assert [a + b for a, b in zip(w0, w1, strict=True)] == per_worker["all"] == \
        [c["sessions"], c["arrivals_due"], c["arrivals_started"]]
    sessions, turns = db.execute("select count(*), sum(turns) from session").fetchone()
    (turn_points,) = db.execute("select count(*) from turn").fetchone()
    assert (sessions, turns, turn_points) == (c["sessions"], c["turns"], c["turns"])
    (distinct,) = db.execute("select count(distinct session_id) from session").fetchone()
    assert distinct == sessions == len(truth_sessions)  # no session twice; what the server saw
    print(f"workers: {per_worker}; simulator saw {len(truth_sessions)} sessions")
