"""Scripted scenarios in the probe service, end to end against the simulator (~20 s).

One module-scoped run of a ProbeService (config loaded from a YAML file whose scenarios are the
repository's scenario files, embedded store, status endpoint): the support call (tool lookup)
and a long call on one target, the interrupting caller on another. Then a scripted probe job
whose results reach a real influxd through the v1 sink, as `voicepulse serve` builds it.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from probes.session import run_session
from scheduler.service import ProbeService
from scheduler.status_http import StatusServer
from telemetry.embedded import EmbeddedStore, qi
from telemetry.recorder import Recorder
from tests.sim_server import SimProcess
from voicepulse.config import load_config
from voicepulse.wiring import telemetry_for

# the scenario files speak: through espeak-ng, or the espeakng-loader wheel without it
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sim-secret-key-7f3a9c"  # must never show on the status endpoint
CANCEL_MS = 150

CONFIG = """
targets:
  vp-support: {url: "%(url)s", model: vp-support, api_key_env: SIM_API_KEY,
               simulator_hints: true}
  vp-barge:   {url: "%(url)s", model: vp-barge, api_key_env: SIM_API_KEY,
               simulator_hints: true}
scenarios:
  support: {file: %(root)s/scenarios/support-call.yaml}
  interrupting: {file: %(root)s/scenarios/interrupting-caller.yaml}
  long-call: {file: %(root)s/scenarios/long-call.yaml}
agent: scn
service: {workers: 4, shutdown_timeout: 6s}
status: {port: 0}
%(rest)s
"""
PROBES = """
probes:
  - {target: vp-support, scenario: support, every: 1s}
  - {target: vp-support, scenario: long-call, every: 1s}
  - {target: vp-barge, scenario: interrupting, every: 1s}
"""


def write_config(tmp_path: Path, sim, rest: str = PROBES) -> Path:
    path = tmp_path / "voicepulse.yaml"
    path.write_text(CONFIG % {"url": sim.ws_url + "/v1/realtime", "root": ROOT, "rest": rest})
    return path


def fast_profiles(sim) -> None:
    sim.set_profile(model="vp-support", ttfa_ms=150, reply_s=0.6, speed=4.0)
    # a reply long enough to be spoken over, stopped a fixed 150 ms after the caller starts
    sim.set_profile(model="vp-barge", ttfa_ms=150, reply_s=3.0, speed=1.0,
                    cancel_delay_ms=CANCEL_MS)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SIM_API_KEY", SECRET)
    tmp = tmp_path_factory.mktemp("scn")
    ended: list[tuple[str, str, float]] = []  # (scenario, outcome, monotonic end)

    def runner(target, scenario, **kw):
        res = run_session(target, scenario, **kw)
        ended.append((scenario.name, res.outcome, time.monotonic()))
        return res

    with SimProcess() as sim:
        fast_profiles(sim)
        cfg = load_config(write_config(tmp, sim))
        store = EmbeddedStore(str(tmp / "vp.db"))
        svc = ProbeService(cfg.service, cfg.targets, cfg.scenarios, Recorder(store),
                           runner=runner)
        http = StatusServer(svc.status, "127.0.0.1", 0).start()
        svc.start()
        states = svc.target_states
        done = wait_for(lambda: states()["probe:vp-support:support"].ok >= 1
                        and states()["probe:vp-barge:interrupting"].ok >= 1, 45)
        rec = {"done": done, "status": orjson.loads(get(http.url + "/status")),
               "status_raw": get(http.url + "/status").decode(),
               "metrics": get(http.url + "/metrics").decode()}
        t_stop = time.monotonic()
        rec["clean"] = svc.stop(6.0, close_recorder=False)
        rec["stop_s"], rec["t_stop"] = time.monotonic() - t_stop, t_stop
        http.stop()
        rec["states"], rec["ended"] = svc.target_states(), list(ended)
        rec["store"] = store
        yield rec
        store.close()
    mp.undo()


def turn_rows(store: EmbeddedStore, scenario: str, cols: list[str]) -> list[dict]:
    rows = store.select("turn", cols, f"{qi('scenario')} = ?", (scenario,))
    return [dict(zip(cols, r, strict=True)) for r in rows]


def test_both_scripted_jobs_succeeded(run) -> None:
    assert run["done"], {k: (s.runs, s.outcomes) for k, s in run["states"].items()}
    for job in ("probe:vp-support:support", "probe:vp-barge:interrupting"):
        st = run["states"][job]
        assert st.ok >= 1 and st.outcomes.get("ok") == st.ok, (job, st.outcomes)


def test_support_call_turns_carry_tool_checks_and_timings(run) -> None:
    rows = turn_rows(run["store"], "support", ["turn_index", "check_tool_called",
                                               "check_tool_args_match", "tool_ms",
                                               "tool_result_ms", "checks_failed", "wer"])
    first = [r for r in rows if r["turn_index"] == 0]
    assert first, rows
    for r in first:
        assert r["check_tool_called"] == 1 and r["check_tool_args_match"] == 1, r
        assert r["checks_failed"] == 0, r
        assert r["tool_ms"] > 0 and r["tool_result_ms"] > 0, r
        assert r["wer"] == 0.0, r  # the simulator heard the script's own text


def test_interrupting_caller_barge_in_is_at_least_the_cancel_delay(run) -> None:
    rows = turn_rows(run["store"], "interrupting", ["turn_index", "barge_in_ms",
                                                    "checks_failed"])
    barged = [r for r in rows if r["barge_in_ms"] is not None]
    assert barged, rows
    for r in barged:
        assert r["turn_index"] == 0
        assert CANCEL_MS <= r["barge_in_ms"] < CANCEL_MS + 250, r


def test_status_shows_the_scenario_results_without_secrets(run) -> None:
    targets = run["status"]["targets"]
    support = targets["probe:vp-support:support"]["last"]
    assert support["outcome"] == "ok" and support["turns"] == 2
    assert support["checks"] >= 3 and support["checks_failed"] == 0
    assert support["failed_checks"] == [] and support["wer"] == 0.0
    assert support["tool_ms"] > 0 and support["tool_result_ms"] > 0
    barge = targets["probe:vp-barge:interrupting"]["last"]
    assert barge["barge_in_ms"] >= CANCEL_MS and barge["checks_failed"] == 0
    assert SECRET not in run["status_raw"] and SECRET not in run["metrics"]
    assert "notes" not in support and "transcript" not in run["status_raw"]
    assert ('voicepulse_probe_last_checks_failed{agent="scn",target="vp-support",'
            'scenario="support"} 0') in run["metrics"]
    assert 'voicepulse_probe_last_wer{agent="scn",target="vp-support"' in run["metrics"]


def test_long_call_runs_beside_the_targets_other_probe(run) -> None:
    """The long call (up to 65 min) does not hold vp-support's turn: the support call ran while
    it was running, and it is shown as running, with no result yet."""
    long = run["status"]["targets"]["probe:vp-support:long-call"]
    assert long["running"] == 1 and long["running_since"] is not None
    assert long["last"] is None
    support = run["status"]["targets"]["probe:vp-support:support"]["last"]
    assert support["outcome"] == "ok"
    # the two overlapped: the long call began before the support call ended (and ran on)
    assert long["running_since"] < support["at"] + support["duration_s"]


def test_shutdown_aborts_the_long_call_at_once(run) -> None:
    ends = [(o, t) for name, o, t in run["ended"] if name == "long-call"]
    assert len(ends) == 1, run["ended"]
    outcome, t = ends[0]
    assert outcome == "stopped"
    assert t - run["t_stop"] < 1.5  # not after the 4 s grace other probes get
    assert run["states"]["probe:vp-support:long-call"].aborted == 1
    assert run["clean"] and run["stop_s"] < 6.5
    rows = turn_rows(run["store"], "long-call", ["turn_index"])
    assert rows == []  # an aborted run is not a measurement of the target


def test_scripted_probe_reaches_influxdb_v1(influxd, tmp_path, monkeypatch) -> None:
    """The support call's check fields are queryable in a real InfluxDB, through the same
    sink and outbox `voicepulse serve` builds from the config."""
    monkeypatch.setenv("SIM_API_KEY", SECRET)
    db = f"scn_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    influxd.create_database(db)
    sinks = (f"sinks:\n  - {{type: influx, api: v1, url: \"{influxd.url}\", database: {db}}}\n"
             f"outbox: {tmp_path / 'outbox'}\n")
    with SimProcess() as sim:
        fast_profiles(sim)
        path = write_config(tmp_path, sim, "probes:\n  - {target: vp-support, scenario: "
                                           "support, every: 1s}\n" + sinks)
        cfg = load_config(path)
        svc = ProbeService(cfg.service, cfg.targets, cfg.scenarios,
                           telemetry_for(cfg).recorder())
        svc.start()
        assert wait_for(lambda: svc.target_states()["probe:vp-support:support"].ok >= 1, 30)
        assert svc.stop(6.0)  # closes the recorder: the outbox is delivered
    rows = influxd.rows('SELECT "check_tool_called", "check_tool_args_json", "tool_ms", '
                        '"tool_result_ms", "checks_failed", "wer", "agent" FROM "turn" '
                        "WHERE \"scenario\" = 'support' AND \"target\" = 'vp-support'", db)
    first = [r for r in rows if r["check_tool_called"] is not None]
    assert first, rows
    assert all(r["check_tool_called"] == 1 and r["check_tool_args_json"] == 1
               and r["checks_failed"] == 0 for r in first), first
    assert all(r["tool_ms"] > 0 and r["tool_result_ms"] > 0 for r in first), first
    assert {r["agent"] for r in rows} == {"scn"}
    done = influxd.rows('SELECT "duration_s", "outcome" FROM "session" '
                        "WHERE \"scenario\" = 'support'", db)
    assert done and all(r["outcome"] == "ok" and r["duration_s"] > 0 for r in done), done

