"""Integration: real Locust runs (child processes) against the simulator over loopback."""

import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from loadtests.plan import LoadConfig, Plan, default_target
from loadtests.run import child_env, locust_argv, run_load
from probes.spec import Scenario
from tests.sim_server import ROOT

pytestmark = pytest.mark.slow

SHORT = Scenario(name="short", turns=1, utterance_s=0.6, trailing_silence_s=0.6, pause_s=0.0)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("SIM_API_KEY", "test-key")


def make_plan(sim, tmp_path, scenario=SHORT, record=False, **load) -> Plan:
    tgt = default_target(sim.ws_url + "/v1/realtime", "sim-fast")
    return Plan(tgt, scenario, LoadConfig(**load), record=record,
                store=str(tmp_path / "store.db"), outbox=str(tmp_path / "outbox"),
                results_jsonl=str(tmp_path / "results.jsonl"))


def results(tmp_path) -> list[dict]:
    p = tmp_path / "results.jsonl"
    return [orjson.loads(line) for line in p.read_bytes().splitlines()] if p.exists() else []


def test_open_model_keeps_the_rate_within_5_percent(sim, tmp_path):
    rate, secs = 10.0, 20.0
    s = run_load(make_plan(sim, tmp_path, rate=rate, duration_s=secs), timeout_s=60)
    c = s.counters
    assert c["arrivals_due"] == rate * secs
    assert c["arrivals_started"] == c["arrivals_due"] and c["dropped"] == 0
    starts = sorted(r["connect_start_ns"] for r in results(tmp_path))
    assert len(starts) == rate * secs
    # the achieved rate is measured from the real starts: n starts span n - 1 periods, and the
    # engine's own connect marks (another clock, in another process) give the same figure
    engine_rate = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1e9)
    assert s.achieved_rate == pytest.approx(rate, rel=0.05)
    assert s.achieved_rate == pytest.approx(engine_rate, rel=0.01)
    # started sessions/s, measured from the engine's own connect marks, in 5 s windows
    t0 = starts[0] - int(0.5e9 / rate)  # the first arrival is due half a period in
    for w in range(4):
        lo, hi = t0 + int(w * 5e9), t0 + int((w + 1) * 5e9)
        n = sum(lo <= t < hi for t in starts)
        assert abs(n / 5.0 - rate) <= 0.05 * rate, (w, n)
    assert c["sessions_ok"] == c["sessions"]


def test_starved_slots_are_counted_late_or_no_slot(sim, tmp_path):
    plan = make_plan(sim, tmp_path, rate=6.0, duration_s=3.0, slots=2, max_start_lag_s=1.0)
    s = run_load(plan, timeout_s=60)
    c = s.counters
    assert c["arrivals_due"] == 18
    assert c["no_slot"] > 0
    assert c["late_starts"] + c["dropped"] > 0
    assert c["arrivals_started"] + c["dropped"] == c["arrivals_due"]  # none silently lost
    assert c["arrivals_started"] == len(results(tmp_path)) == c["sessions"]
    assert "no-slot" in s.table()


def test_two_processes_merge_exactly(sim, tmp_path):
    plan = make_plan(sim, tmp_path, record=True, rate=6.0, duration_s=8.0)
    s = run_load(plan, processes=2, timeout_s=90)
    raw = results(tmp_path)
    ttfa = sorted(t["ttfa_ms"] for r in raw for t in r["turns"] if t["ttfa_ms"] is not None)
    m = s.metric("ttfa_ms")
    assert s.workers == 2 and len(s.health) == 2
    assert m.count == len(ttfa) == s.counters["turns_ok"] > 0
    exact = ttfa[max(0, -(-99 * len(ttfa) // 100) - 1)]  # nearest-rank p99 of the raw values
    assert abs(m.p99 - exact) <= exact * 0.001 + 0.001
    db = sqlite3.connect(tmp_path / "store.db")
    per_worker = dict(db.execute("select worker, sum(sessions) from loadgen group by worker"))
    assert set(per_worker) == {"worker-0", "worker-1", "all"}
    assert per_worker["worker-0"] > 0 and per_worker["worker-1"] > 0
    assert per_worker["worker-0"] + per_worker["worker-1"] == per_worker["all"] == s.counters["sessions"]
    (lat_count,) = db.execute("select sum(count) from latency where metric='ttfa_ms'").fetchone()
    assert lat_count == m.count
    (turns,) = db.execute("select count(*) from turn").fetchone()
    assert turns == s.counters["turns"]


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "voicepulse.cli", "load", *args],
                          env=child_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_thresholds_decide_the_exit_status(sim, tmp_path):
    url = sim.ws_url + "/v1/realtime"
    cfg = tmp_path / "vp.yaml"
    cfg.write_text(f"targets:\n  s:\n    url: {url}\n    model: sim-fast\n"
                   f"    api_key_env: SIM_API_KEY\nscenarios:\n  one:\n    turns: 1\n"
                   f"    utterance_s: 0.5\n    trailing_silence_s: 0.6\nstore: {tmp_path}/x.db\n")
    common = ["s", "--config", str(cfg), "--scenario", "one", "--rate", "3", "--duration", "3s"]
    ok = _cli(*common, "--threshold", "ttfa_ms.p95<5000", "--threshold", "error_rate<0.01",
              "--summary-json", str(tmp_path / "ok.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS  ttfa_ms.p95<5000" in ok.stdout
    bad = _cli(*common, "--threshold", "ttfa_ms.p95<1", "--threshold", "error_rate<0.01")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  ttfa_ms.p95<1" in bad.stdout and "PASS  error_rate<0.01" in bad.stdout
    usage = _cli(*common, "--threshold", "ttfa_ms<800")
    assert usage.returncode == 2 and "--threshold" in usage.stderr


def test_abort_on_fail_stops_the_run_early(sim, tmp_path):
    t0 = time.monotonic()
    plan = make_plan(sim, tmp_path, rate=3.0, duration_s=60.0,
                     thresholds=["ttfa_ms.p95<1 abort_on_fail", "error_rate<0.5"])
    s = run_load(plan, timeout_s=60)
    took = time.monotonic() - t0
    assert s.aborted == "ttfa_ms.p95<1"
    assert not s.passed
    assert took < 20, took  # a 60 s run, stopped at the first report that shows the failure
    assert s.counters["arrivals_due"] < 60


def _free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def test_locust_ui_stats_carry_voicepulse_metric_names(sim, tmp_path):
    port = _free_port()
    plan = make_plan(sim, tmp_path, rate=3.0, duration_s=4.0)
    plan.summary_json = str(tmp_path / "s.json")
    argv = locust_argv(plan, web=True, web_port=port)
    proc = subprocess.Popen(argv, env=child_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    names: set[str] = set()
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not {"ttfa", "turn", "connect"} <= names:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests",
                                            timeout=2) as resp:
                    stats = json.load(resp)["stats"]
                names = {e["name"] for e in stats if e.get("method") == "voice"}
            except OSError:
                pass
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert {"ttfa", "turn", "connect", "ready", "session"} <= names, names


def test_ttfa_matches_simulator_truth_at_100_concurrent_sessions(sim, tmp_path):
    sc = Scenario(name="acc", turns=1, utterance_s=1.0, trailing_silence_s=0.6, pause_s=0.0)
    plan = make_plan(sim, tmp_path, scenario=sc, users=100, duration_s=8.0)
    s = run_load(plan, timeout_s=90)
    truth = {(t["session_id"], t["turn_index"]): t for t in sim.truth()["turns"]}
    errors = []
    for r in results(tmp_path):
        for t in r["turns"]:
            tt = truth.get((r.get("server_session_id"), t["index"]))
            if tt and t["first_audio_ns"] and tt["first_audio_ns"]:
                errors.append((t["first_audio_ns"] - tt["first_audio_ns"]) / 1e6)
    assert len(errors) >= 100 and len(errors) >= 0.9 * s.counters["turns"]
    errors.sort()
    p99 = errors[int(0.99 * len(errors)) - 1]
    assert errors[0] >= 0  # the client cannot see audio before it was sent
    assert p99 <= 5.0, f"ttfa error p50 {errors[len(errors) // 2]:.2f} ms, p99 {p99:.2f} ms"
