"""The probe service end to end against the simulator, in ONE shared ~70 s run (embedded store).

Four targets are probed by the real engine on real schedules (config parsed from YAML, windows
shrunk by time_scale = 1/180, so 30 m -> 10 s and 24 h -> 480 s):

* vp-stable: left alone -> no alert of any kind may fire (no false positives);
* vp-reg:    TTFA x1.5 through PUT /profile at t=25 s, restored at t=45 s -> the regression rule
             fires within its bound, the webhook receiver gets the documented payload, and a
             resolved notification follows the restore;
* vp-out:    a 100 % failure window (HTTP 503 on upgrade) from t=25 s to t=35 s -> the 14.4x
             availability page fires and resolves after recovery;
* vp-slow:   sessions longer than the interval -> counted skips, never two at once.

The schedule lateness of every run (jitter excluded) is printed; its p99 must be <= 50 ms.
"""

from __future__ import annotations

import queue
import time

import numpy as np
import orjson
import pytest
import yaml

from scheduler.service import ProbeService
from scheduler.source import TelemetrySource
from scheduler.status_http import StatusServer
from telemetry.embedded import EmbeddedStore
from telemetry.query import EmbeddedQuery
from telemetry.recorder import Recorder
from tests.scheduler.receiver import Receiver
from tests.sim_server import SimProcess
from voicepulse.config import parse_config

pytestmark = pytest.mark.slow

SCALE = 1 / 180  # 30 m -> 10 s
CHANGE_AT, OUTAGE_S, RUN_S, RESOLVE_BY = 25.0, 10.0, 62.0, 85.0
RESTORE_BOUND = 20.0  # restore the profile at the latest this long after the change
EVAL_S = 180 * SCALE  # `service.evaluate_every: 180s` -> 1 s
RECENT_S = 1800 * SCALE

CONFIG = """
targets:
  vp-stable: {url: "%(url)s", model: vp-stable, api_key_env: SIM_API_KEY,
             instructions: Answer briefly.}
  vp-reg:    {url: "%(url)s", model: vp-reg, api_key_env: SIM_API_KEY,
             instructions: Answer briefly.}
  vp-out:    {url: "%(url)s", model: vp-out, api_key_env: SIM_API_KEY,
             instructions: Answer briefly.}
  vp-slow:   {url: "%(url)s", model: vp-slow, api_key_env: SIM_API_KEY,
             instructions: Answer briefly.}
scenarios:
  default: {turns: 2, utterance_s: 0.4, trailing_silence_s: 0.6, pause_s: 0.1}
  long:    {turns: 1, utterance_s: 0.4, trailing_silence_s: 0.6}
agent: test-eu
time_scale: %(scale)r
service: {evaluate_every: 180s, workers: 8, shutdown_timeout: 10s}
status: {port: 0}
probes:
  - {target: vp-stable, every: 450s, jitter: 54s}      # 2.5 s, jitter up to 0.3 s
  - {target: vp-reg, every: 450s}
  - {target: vp-out, every: 450s}
  - {target: vp-slow, scenario: long, every: 270s}     # 1.5 s, sessions take ~4 s
slos:
  - {name: stable-availability, target: vp-stable, kind: availability, objective: 99, period: 30d}
  - {name: stable-ttfa, target: vp-stable, kind: latency, metric: ttfa_ms, below_ms: 1000,
     objective: 95}
  - {name: out-availability, target: vp-out, kind: availability, objective: 99, period: 30d}
alerts:
  - {name: reg-ttfa-regression, kind: regression, target: vp-reg, metric: ttfa_ms,
     recent: 30m, baseline: 24h, min_effect: 15%%, min_samples: 8}
  - {name: stable-ttfa-regression, kind: regression, target: vp-stable, metric: ttfa_ms,
     recent: 30m, baseline: 24h, min_effect: 15%%, min_samples: 8}
  - {name: stable-ttfa-p95, kind: threshold, target: vp-stable, expr: ttfa_ms.p95 > 900,
     over: 10m, for: 2m}
notifiers:
  - {type: webhook, url_env: VP_TEST_WEBHOOK, link: "http://grafana.local/d/vp?target={target}"}
  - {type: slack, url_env: VP_TEST_SLACK}
  - {type: log}
"""

FAST = {"ttfa_ms": {"dist": "lognormal", "median": 300, "sigma": 0.12, "floor": 150},
        "reply_s": 0.4, "speed": 4.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the whole scenario once; every test below asserts on what it recorded."""
    mp = pytest.MonkeyPatch()
    hook, slack = Receiver(), Receiver()
    mp.setenv("VP_TEST_WEBHOOK", hook.url("/hook/secret-token"))
    mp.setenv("VP_TEST_SLACK", slack.url("/services/T/B/secret"))
    mp.setenv("SIM_API_KEY", "sim")
    tmp = tmp_path_factory.mktemp("svc")
    with SimProcess() as sim:
        for model in ("vp-stable", "vp-reg", "vp-out"):
            sim.set_profile(model=model, **FAST)
        sim.set_profile(model="vp-slow", **{**FAST, "reply_s": 6.0, "speed": 2.0})
        cfg = parse_config(yaml.safe_load(CONFIG % {"url": sim.ws_url + "/v1/realtime",
                                                    "scale": SCALE}), "svc.yaml")
        store = EmbeddedStore(str(tmp / "vp.db"))
        recorder = Recorder(store, interval_s=10.0)
        svc = ProbeService(cfg.service, cfg.targets, cfg.scenarios, recorder,
                           TelemetrySource(EmbeddedQuery(store)))
        events: queue.Queue = queue.Queue()
        svc.engine.listeners.append(lambda e: events.put((time.monotonic(), e)))
        status_http = StatusServer(svc.status, "127.0.0.1", 0).start()
        t0 = time.monotonic()
        svc.start()
        rec: dict = {"t0": t0}

        def at(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        at(CHANGE_AT)
        rec["changed"] = time.monotonic()
        sim.set_profile(model="vp-reg", ttfa_scale=1.5)
        sim.fault(kind="http_status", status=503, per="session", models=["vp-out"],
                  duration_s=OUTAGE_S)
        at(CHANGE_AT + OUTAGE_S / 2)
        rec["status_mid"] = _get(status_http.url + "/status")
        rec["metrics_mid"] = _get(status_http.url + "/metrics", raw=True)
        rec["healthz"] = _get(status_http.url + "/healthz", raw=True)
        # restore a little after the regression fired (bounded), so the resolve that follows
        # is caused by the restore and not by the baseline absorbing the slow period
        key = ("reg-ttfa-regression", "vp-reg")
        deadline = t0 + CHANGE_AT + RESTORE_BOUND
        while time.monotonic() < deadline and key not in {
                (s.rule, s.target) for s in svc.engine.firing()}:
            time.sleep(0.1)
        time.sleep(2.0)
        rec["firing_at_restore"] = key in {(s.rule, s.target) for s in svc.engine.firing()}
        rec["restored"] = time.monotonic() - t0
        sim.set_profile(model="vp-reg", ttfa_scale=1.0)
        at(RUN_S)
        # keep probing until both alerts resolved (bounded), then stop
        deadline = t0 + RESOLVE_BY
        while time.monotonic() < deadline:
            firing = {(s.rule, s.target) for s in svc.engine.firing()}
            if ("reg-ttfa-regression", "vp-reg") not in firing and not any(
                    r.startswith("out-availability:page") for r, _ in firing):
                break
            time.sleep(0.2)
        rec["status_end"] = svc.status()
        rec["lateness"] = {t: svc.lateness_ms(t) for t in cfg.targets}
        rec["states"] = svc.target_states()
        t_stop = time.monotonic()
        rec["clean"] = svc.stop(timeout=10.0)
        rec["stop_s"] = time.monotonic() - t_stop
        status_http.stop()
    rec["events"] = []
    while not events.empty():
        rec["events"].append(events.get())
    rec["hook"] = _drain(hook)
    rec["slack"] = _drain(slack)
    hook.close()
    slack.close()
    mp.undo()
    reader = EmbeddedStore(str(tmp / "vp.db"))
    rec["alert_rows"] = EmbeddedQuery(reader).alerts()
    rec["schedule_rows"] = reader.select("schedule", ("target", "event", "lateness_ms", "skips"))
    rec["sessions"] = reader.select("session", ("target", "outcome", "agent"))
    rec["latency_rows"] = reader.select("latency", ("target", "metric", "count"))
    return rec


def _get(url: str, raw: bool = False):
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read()
    return body.decode() if raw else orjson.loads(body)


def _drain(receiver: Receiver) -> list[dict]:
    out = []
    while not receiver.posts.empty():
        out.append(receiver.posts.get()[1])
    return out


def _events(run, rule_prefix: str, target: str):
    return [(t - run["t0"], e) for t, e in run["events"]
            if e.rule.startswith(rule_prefix) and e.target == target]


def test_probes_fire_on_schedule(run) -> None:
    lat = np.array([v for vs in run["lateness"].values() for v in vs])
    runs = {t: len(v) for t, v in run["lateness"].items()}
    p50, p99, mx = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
    print(f"\nschedule lateness over {len(lat)} runs in {RUN_S:.0f}+ s (jitter excluded): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.2f} ms; runs per target {runs}")
    assert runs["vp-stable"] >= 23 and runs["vp-reg"] >= 23  # every 2.5 s for >= 60 s
    assert p99 <= 50.0
    assert lat.min() >= -1.0  # never early
    stored = [r for r in run["schedule_rows"] if r[1] == "run"]
    assert len(stored) >= len(lat) and all(r[2] is not None for r in stored)


def test_slow_target_skips_and_never_overlaps(run) -> None:
    st = [s for s in run["states"].values() if s.target == "vp-slow"][0]
    print(f"\nvp-slow: {st.runs} runs, {st.skips} skips, max concurrent {st.max_running}")
    assert st.skips >= 5 and st.max_running == 1
    stored = [r for r in run["schedule_rows"] if r[0] == "vp-slow" and r[1] == "skip"]
    assert len(stored) == st.skips
    for s in run["states"].values():
        assert s.max_running == 1


def test_regression_fires_notifies_and_resolves(run) -> None:
    ev = _events(run, "reg-ttfa-regression", "vp-reg")
    assert [e.state for _, e in ev] == ["firing", "resolved"], ev
    fired_after = ev[0][0] - CHANGE_AT
    bound = RECENT_S + 2 * EVAL_S + 2.5  # the recent window, two evaluations, one probe
    print(f"\nregression fired {fired_after:.1f} s after TTFA x1.5 (bound {bound:.1f} s), "
          f"resolved {ev[1][0] - run['restored']:.1f} s after the restore: {ev[0][1].message}")
    assert 0 < fired_after <= bound
    assert run["firing_at_restore"] and ev[1][0] > run["restored"]
    hooks = [h for h in run["hook"] if h["rule"] == "reg-ttfa-regression"]
    assert [h["state"] for h in hooks] == ["firing", "resolved"]
    h = hooks[0]
    assert set(h) >= {"rule", "target", "severity", "state", "value", "threshold", "window",
                      "started_at", "link"}
    assert h["target"] == "vp-reg" and h["value"] >= 0.15 and h["threshold"] == 0.15
    assert h["window"] == "10s vs 8m" and h["agent"] == "test-eu"
    assert h["link"] == "http://grafana.local/d/vp?target=vp-reg"
    assert h["started_at"].endswith("Z")
    slack = [s for s in run["slack"] if "reg-ttfa-regression" in s["text"]]
    assert len(slack) == 2 and "[RESOLVED]" in slack[1]["text"]


def test_outage_pages_and_resolves(run) -> None:
    ev = _events(run, "out-availability:page-1h", "vp-out")
    assert [e.state for _, e in ev] == ["firing", "resolved"], ev
    print(f"\noutage page fired {ev[0][0] - CHANGE_AT:.1f} s into the outage, resolved "
          f"{ev[1][0] - CHANGE_AT - OUTAGE_S:.1f} s after it: {ev[0][1].message}")
    assert CHANGE_AT < ev[0][0] <= CHANGE_AT + OUTAGE_S
    assert ev[1][0] > CHANGE_AT + OUTAGE_S
    assert ev[0][1].severity == "page" and ev[0][1].window == "20s&7.5s"  # short window floored at 3 probe intervals
    pages = [h for h in run["hook"] if h["rule"] == "out-availability:page-1h"]
    assert [h["state"] for h in pages] == ["firing", "resolved"]
    failed = [r for r in run["sessions"] if r[0] == "vp-out" and r[1] != "ok"]
    assert failed and {r[1] for r in failed} == {"http_503"}


def test_stable_target_raises_nothing(run) -> None:
    stable = [e for _, e in run["events"] if e.target == "vp-stable"]
    assert stable == [], stable
    sessions = [r for r in run["sessions"] if r[0] == "vp-stable"]
    assert sessions and all(r[1] == "ok" and r[2] == "test-eu" for r in sessions)


def test_every_state_change_is_an_alert_point(run) -> None:
    stored = [(a.rule, a.target, a.state) for a in run["alert_rows"]]
    emitted = [(e.rule, e.target, e.state) for _, e in run["events"]]
    assert sorted(stored) == sorted(emitted) and len(stored) >= 4


def test_status_endpoint_mid_run(run) -> None:
    st = run["status_mid"]
    assert run["healthz"] == "ok\n"
    assert st["agent"] == "test-eu"
    reg = st["targets"]["probe:vp-reg:default"]
    assert reg["last"]["outcome"] == "ok" and reg["next_run"] > st["now"] - 1
    assert reg["last_hour"]["success_ratio"] == 1.0 and reg["last_hour"]["ttfa_p95_ms"] > 0
    out = st["targets"]["probe:vp-out:default"]
    assert out["last"]["outcome"] == "http_503" and out["last_hour"]["success_ratio"] < 1
    paging = [a["rule"] for a in st["alerts"]
              if a["rule"].startswith("out-availability:page") and a["state"] == "firing"]
    assert paging
    assert st["outbox"]["pending"] == 0
    m = run["metrics_mid"]
    assert "# TYPE voicepulse_probe_runs_total counter" in m
    # the page that is firing (page-1h or page-6h: with 2.5 s probes the 1h pair's scaled short
    # window of 1.7 s may hold no probe at the snapshot) shows as firing in the metrics too
    for rule in paging:
        assert f'voicepulse_alert_firing{{rule="{rule}",target="vp-out",severity="page"}} 1' in m
    assert "secret" not in orjson.dumps(st).decode() and "secret" not in m


def test_telemetry_latency_points_and_clean_stop(run) -> None:
    metrics = {(r[0], r[1]) for r in run["latency_rows"]}
    assert ("vp-stable", "ttfa_ms") in metrics  # the recorder's 10 s aggregation ran
    assert run["clean"] and run["stop_s"] < 10.0
