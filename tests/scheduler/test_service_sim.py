"""The probe service end to end against the simulator: four short scenarios, one per concern.

Each scenario is its own run (a module fixture: its own simulator, service and embedded store),
so a stall in one fails only that concern's tests. Targets are probed by the real engine on real
schedules (config parsed from YAML, windows shrunk by time_scale = 1/180, so 30 m -> 10 s and
24 h -> 480 s):

* schedule (30 s): vp-stable (with jitter) and two peers left alone -> no alert of any kind may
  fire on vp-stable (no false positives); the schedule lateness of every run (jitter excluded) is
  printed and its p99 must be <= 50 ms; the recorder's 10 s aggregation runs; stop is clean;
* slow:     vp-slow's sessions are longer than its interval -> counted skips, never two at once;
* regression: vp-reg's TTFA x1.5 through PUT /profile at t=15 s, restored once the rule fired ->
  it fires within its bound, the webhook receiver gets the documented payload, and a resolved
  notification follows the restore;
* outage:   a 100 % failure window (HTTP 503 on upgrade) on vp-out from t=10 s to t=20 s -> the
  14.4x availability page fires and resolves after recovery; /status and /metrics mid-outage.
"""

from __future__ import annotations

import os
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
from tests.timing import LoadWatch
from voicepulse.config import parse_config

pytestmark = pytest.mark.slow

SCALE = 1 / 180  # 30 m -> 10 s
EVAL_S = 180 * SCALE  # `service.evaluate_every: 180s` -> 1 s
RECENT_S = 1800 * SCALE
SCHEDULE_S = 30.0  # the schedule scenario's length
LATENESS_P99_MS = 50.0  # the service's scheduling promise
CHANGE_AT, RESTORE_BOUND, REG_RESOLVE_BY = 15.0, 20.0, 60.0  # regression scenario
OUT_AT, OUTAGE_S, OUT_RESOLVE_BY = 10.0, 10.0, 45.0  # outage scenario

COMMON = """
scenarios:
  default: {turns: 2, utterance_s: 0.4, trailing_silence_s: 0.6, pause_s: 0.1}
  long:    {turns: 1, utterance_s: 0.4, trailing_silence_s: 0.6}
agent: test-eu
time_scale: %(scale)r
service: {evaluate_every: 180s, workers: 8, shutdown_timeout: 10s}
status: {port: 0}
notifiers:
  - {type: webhook, url_env: VP_TEST_WEBHOOK, link: "http://grafana.local/d/vp?target={target}"}
  - {type: slack, url_env: VP_TEST_SLACK}
  - {type: log}
"""


def target(name: str) -> str:
    return (f'  {name}: {{url: "%(url)s", model: {name}, api_key_env: SIM_API_KEY, '
            f"instructions: Answer briefly.}}\n")


SCHEDULE = "targets:\n" + target("vp-stable") + target("vp-peer") + target("vp-peer2") + """
probes:
  - {target: vp-stable, every: 450s, jitter: 54s}      # 2.5 s, jitter up to 0.3 s
  - {target: vp-peer, every: 450s}
  - {target: vp-peer2, every: 450s}
slos:
  - {name: stable-availability, target: vp-stable, kind: availability, objective: 99, period: 30d}
  - {name: stable-ttfa, target: vp-stable, kind: latency, metric: ttfa_ms, below_ms: 1000,
     objective: 95}
alerts:
  - {name: stable-ttfa-regression, kind: regression, target: vp-stable, metric: ttfa_ms,
     recent: 30m, baseline: 24h, min_effect: 15%%, min_samples: 8}
  - {name: stable-ttfa-p95, kind: threshold, target: vp-stable, expr: ttfa_ms.p95 > 900,
     over: 10m, for: 2m}
"""
SLOW = "targets:\n" + target("vp-slow") + """
probes:
  - {target: vp-slow, scenario: long, every: 270s}     # 1.5 s, sessions take ~4 s
"""
REGRESSION = "targets:\n" + target("vp-reg") + """
probes:
  - {target: vp-reg, every: 450s}
alerts:
  - {name: reg-ttfa-regression, kind: regression, target: vp-reg, metric: ttfa_ms,
     recent: 30m, baseline: 24h, min_effect: 15%%, min_samples: 8}
"""
OUTAGE = "targets:\n" + target("vp-ok") + target("vp-out") + """
probes:
  - {target: vp-ok, every: 450s}
  - {target: vp-out, every: 450s}
slos:
  - {name: out-availability, target: vp-out, kind: availability, objective: 99, period: 30d}
"""

FAST = {"ttfa_ms": {"dist": "lognormal", "median": 300, "sigma": 0.12, "floor": 150},
        "reply_s": 0.4, "speed": 4.0}


class Run:
    """One scenario: the service against a fresh simulator; `script(run)` drives it."""

    def __init__(self, tmp, sim: SimProcess, svc: ProbeService, status_url: str):
        self.tmp, self.sim, self.svc, self.status_url = tmp, sim, svc, status_url
        self.t0 = time.monotonic()
        self.rec: dict = {"t0": self.t0}

    def at(self, t: float) -> None:
        """Sleep until `t` s into the run (the scenario's own clock, not a synchronisation)."""
        time.sleep(max(0.0, self.t0 + t - time.monotonic()))

    def until(self, cond, t: float, poll: float = 0.1) -> bool:
        """Poll `cond` until it holds or `t` s into the run; whether it held."""
        while not cond():
            if time.monotonic() >= self.t0 + t:
                return False
            time.sleep(poll)
        return True

    def firing(self) -> set[tuple[str, str]]:
        return {(s.rule, s.target) for s in self.svc.engine.firing()}


def scenario(tmp_path_factory, name: str, body: str, profiles: dict, script) -> dict:
    """Run `script` against a service built from COMMON + `body`; record what it produced."""
    mp = pytest.MonkeyPatch()
    hook, slack = Receiver(), Receiver()
    mp.setenv("VP_TEST_WEBHOOK", hook.url("/hook/secret-token"))
    mp.setenv("VP_TEST_SLACK", slack.url("/services/T/B/secret"))
    mp.setenv("SIM_API_KEY", "sim")
    tmp = tmp_path_factory.mktemp(name)
    try:
        with SimProcess() as sim:
            for model, prof in profiles.items():
                sim.set_profile(model=model, **prof)
            cfg = parse_config(yaml.safe_load((COMMON + body) % {
                "url": sim.ws_url + "/v1/realtime", "scale": SCALE}), f"{name}.yaml")
            store = EmbeddedStore(str(tmp / "vp.db"))
            recorder = Recorder(store, interval_s=10.0)
            svc = ProbeService(cfg.service, cfg.targets, cfg.scenarios, recorder,
                               TelemetrySource(EmbeddedQuery(store)))
            events: queue.Queue = queue.Queue()
            svc.engine.listeners.append(lambda e: events.put((time.monotonic(), e)))
            status_http = StatusServer(svc.status, "127.0.0.1", 0).start()
            run = Run(tmp, sim, svc, status_http.url)
            svc.start()
            try:
                script(run)
            finally:
                rec = run.rec
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
    finally:
        hook.close()
        slack.close()
        mp.undo()
    reader = EmbeddedStore(str(tmp / "vp.db"))
    rec["alert_rows"] = EmbeddedQuery(reader).alerts()
    rec["schedule_rows"] = reader.select("schedule", ("target", "event", "lateness_ms", "skips"))
    rec["sessions"] = reader.select("session", ("target", "outcome", "agent"))
    rec["latency_rows"] = reader.select("latency", ("target", "metric", "count"))
    return rec


def lateness_p99(rec: dict) -> float:
    return float(np.percentile([v for vs in rec["lateness"].values() for v in vs], 99))


@pytest.fixture(scope="module")
def schedule_run(tmp_path_factory):
    """Three healthy targets every 2.5 s for SCHEDULE_S, with vp-stable's alert rules. The
    service runs in this process: if its lateness p99 misses the bound while this process
    waited for a CPU longer than the bound (tests/timing.py), the scenario runs once more."""
    loads = []
    for _attempt in (1, 2):
        with LoadWatch([os.getpid()]) as w:
            rec = scenario(tmp_path_factory, "schedule", SCHEDULE,
                           {m: FAST for m in ("vp-stable", "vp-peer", "vp-peer2")},
                           lambda run: run.at(SCHEDULE_S))
        loads.append(w.load)
        if lateness_p99(rec) <= LATENESS_P99_MS or not w.load.busy(LATENESS_P99_MS):
            break
    rec["loads"] = loads
    return rec


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    """vp-slow until it has been skipped 5 times and ran twice (bounded)."""
    def script(run: Run) -> None:
        def enough() -> bool:
            st = [s for s in run.svc.target_states().values() if s.target == "vp-slow"][0]
            return st.skips >= 5 and st.runs >= 2
        run.rec["enough"] = run.until(enough, 40.0)

    return scenario(tmp_path_factory, "slow", SLOW,
                    {"vp-slow": {**FAST, "reply_s": 6.0, "speed": 2.0}}, script)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    def script(run: Run) -> None:
        run.at(CHANGE_AT)
        run.rec["changed"] = time.monotonic()
        run.sim.set_profile(model="vp-reg", ttfa_scale=1.5)
        # restore a little after the regression fired (bounded), so the resolve that follows
        # is caused by the restore and not by the baseline absorbing the slow period
        key = ("reg-ttfa-regression", "vp-reg")
        run.until(lambda: key in run.firing(), CHANGE_AT + RESTORE_BOUND)
        time.sleep(2.0)  # the slow period goes on 2 s past the fire (part of the scenario)
        run.rec["firing_at_restore"] = key in run.firing()
        run.rec["restored"] = time.monotonic() - run.t0
        run.sim.set_profile(model="vp-reg", ttfa_scale=1.0)
        run.until(lambda: key not in run.firing(), REG_RESOLVE_BY, poll=0.2)

    return scenario(tmp_path_factory, "regression", REGRESSION, {"vp-reg": FAST}, script)


@pytest.fixture(scope="module")
def outage_run(tmp_path_factory):
    def script(run: Run) -> None:
        run.at(OUT_AT)
        run.sim.fault(kind="http_status", status=503, per="session", models=["vp-out"],
                      duration_s=OUTAGE_S)

        def paging() -> bool:
            return any(r.startswith("out-availability:page") for r, _ in run.firing())
        # the snapshot while the page fires (waited for, within the outage)
        run.until(paging, OUT_AT + OUTAGE_S - 1.0)
        run.rec["status_mid"] = _get(run.status_url + "/status")
        run.rec["metrics_mid"] = _get(run.status_url + "/metrics", raw=True)
        run.rec["healthz"] = _get(run.status_url + "/healthz", raw=True)
        run.at(OUT_AT + OUTAGE_S)
        run.until(lambda: not paging(), OUT_RESOLVE_BY, poll=0.2)

    return scenario(tmp_path_factory, "outage", OUTAGE, {"vp-ok": FAST, "vp-out": FAST}, script)


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


def test_probes_fire_on_schedule(schedule_run) -> None:
    run = schedule_run
    lat = np.array([v for vs in run["lateness"].values() for v in vs])
    runs = {t: len(v) for t, v in run["lateness"].items()}
    p50, p99, mx = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
    print(f"\nschedule lateness over {len(lat)} runs in {SCHEDULE_S:.0f} s (jitter excluded): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.2f} ms; runs per target {runs}; "
          f"{run['loads'][-1]}")
    want = int(SCHEDULE_S / 2.5) - 2  # every 2.5 s for the whole run (first fire, jitter)
    assert all(n >= want for n in runs.values()), (want, runs)
    if p99 > LATENESS_P99_MS and run["loads"][-1].busy(LATENESS_P99_MS):
        pytest.fail(f"machine too busy: lateness p99 {p99:.1f} ms > {LATENESS_P99_MS:g} ms in "
                    f"{len(run['loads'])} runs while this process waited for a CPU: "
                    + "; ".join(map(str, run["loads"])))
    assert p99 <= LATENESS_P99_MS, f"on a quiet machine ({run['loads'][-1]})"
    assert lat.min() >= -1.0  # never early
    stored = [r for r in run["schedule_rows"] if r[1] == "run"]
    assert len(stored) >= len(lat) and all(r[2] is not None for r in stored)


def test_slow_target_skips_and_never_overlaps(slow_run) -> None:
    run = slow_run
    st = [s for s in run["states"].values() if s.target == "vp-slow"][0]
    print(f"\nvp-slow: {st.runs} runs, {st.skips} skips, max concurrent {st.max_running}")
    assert run["enough"] and st.skips >= 5 and st.max_running == 1
    stored = [r for r in run["schedule_rows"] if r[0] == "vp-slow" and r[1] == "skip"]
    assert len(stored) == st.skips
    for s in run["states"].values():
        assert s.max_running == 1


def test_regression_fires_notifies_and_resolves(regression_run) -> None:
    run = regression_run
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


def test_outage_pages_and_resolves(outage_run) -> None:
    run = outage_run
    ev = _events(run, "out-availability:page-1h", "vp-out")
    assert [e.state for _, e in ev] == ["firing", "resolved"], ev
    print(f"\noutage page fired {ev[0][0] - OUT_AT:.1f} s into the outage, resolved "
          f"{ev[1][0] - OUT_AT - OUTAGE_S:.1f} s after it: {ev[0][1].message}")
    assert OUT_AT < ev[0][0] <= OUT_AT + OUTAGE_S
    assert ev[1][0] > OUT_AT + OUTAGE_S
    assert ev[0][1].severity == "page" and ev[0][1].window == "20s&7.5s"  # short window floored at 3 probe intervals
    pages = [h for h in run["hook"] if h["rule"] == "out-availability:page-1h"]
    assert [h["state"] for h in pages] == ["firing", "resolved"]
    failed = [r for r in run["sessions"] if r[0] == "vp-out" and r[1] != "ok"]
    assert failed and {r[1] for r in failed} == {"http_503"}


def test_stable_target_raises_nothing(schedule_run) -> None:
    run = schedule_run
    stable = [e for _, e in run["events"] if e.target == "vp-stable"]
    assert stable == [], stable
    sessions = [r for r in run["sessions"] if r[0] == "vp-stable"]
    assert sessions and all(r[1] == "ok" and r[2] == "test-eu" for r in sessions)


@pytest.mark.parametrize("name", ["regression_run", "outage_run"])
def test_every_state_change_is_an_alert_point(request, name) -> None:
    run = request.getfixturevalue(name)
    stored = [(a.rule, a.target, a.state) for a in run["alert_rows"]]
    emitted = [(e.rule, e.target, e.state) for _, e in run["events"]]
    assert sorted(stored) == sorted(emitted) and len(stored) >= 2  # a firing and its resolve


def test_status_endpoint_mid_run(outage_run) -> None:
    run = outage_run
    st = run["status_mid"]
    assert run["healthz"] == "ok\n"
    assert st["agent"] == "test-eu"
    ok = st["targets"]["probe:vp-ok:default"]
    assert ok["last"]["outcome"] == "ok" and ok["next_run"] > st["now"] - 1
    assert ok["last_hour"]["success_ratio"] == 1.0 and ok["last_hour"]["ttfa_p95_ms"] > 0
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


def test_telemetry_latency_points_and_clean_stop(schedule_run) -> None:
    run = schedule_run
    metrics = {(r[0], r[1]) for r in run["latency_rows"]}
    assert ("vp-stable", "ttfa_ms") in metrics  # the recorder's 10 s aggregation ran
    assert run["clean"] and run["stop_s"] < 10.0
