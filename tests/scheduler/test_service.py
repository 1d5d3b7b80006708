"""ProbeService mechanics with the real APScheduler and a real embedded store: skips are counted
and stored, never more than one probe per target at once, and stop() is bounded.

The probe engine is replaced by a plain function here (what is tested is the scheduling, not
the network); tests/scheduler/test_service_sim.py runs the same service against the simulator.
"""

from __future__ import annotations

import threading
import time

import pytest

from probes.results import SessionResult, TurnResult
from probes.spec import Scenario, Target
from scheduler.config import ProbeJob, ServiceConfig
from scheduler.service import ProbeService
from scheduler.source import TelemetrySource
from telemetry.embedded import EmbeddedStore
from telemetry.query import EmbeddedQuery
from telemetry.recorder import Recorder

TARGET = Target(name="slow", url="ws://127.0.0.1:9/v1/realtime", model="sim-slow")


class SlowEngine:
    """Takes `seconds` per session (less when asked to stop); counts overlap per target."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.max_running = 0
        self.calls = 0

    def __call__(self, target, scenario, *, kind, agent, stop, **_):
        with self.lock:
            self.calls += 1
            self.running[target.name] = self.running.get(target.name, 0) + 1
            self.max_running = max(self.max_running, self.running[target.name])
        started = time.time()
        aborted = self.hold(stop)
        with self.lock:
            self.running[target.name] -= 1
        return SessionResult(target=target.name, provider="openai", model=target.model,
                             scenario=scenario.name, kind=kind, agent=agent, started_at=started,
                             outcome=self.aborted_outcome if aborted else "ok",
                             session_id=f"s{started}", duration_s=time.time() - started,
                             turns=[TurnResult(index=0, ttfa_ms=400.0)])

    aborted_outcome = "timeout:session"

    def hold(self, stop: threading.Event) -> bool:
        """The session's length; True if the service aborted it."""
        return stop.wait(self.seconds)


def make(tmp_path, engine, probes, **kw):
    store = EmbeddedStore(str(tmp_path / "vp.db"))
    recorder = Recorder(store, interval_s=1.0)
    cfg = ServiceConfig(agent="test-agent", probes=probes, **kw)
    svc = ProbeService(cfg, {"slow": TARGET}, {"default": Scenario(), "other": Scenario("other")},
                       recorder, TelemetrySource(EmbeddedQuery(store)), runner=engine)
    return svc, store


def wait_for(cond, timeout: float, what: str):
    """Poll `cond` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)
    return got


class GatedEngine(SlowEngine):
    """A session that lasts until the test releases it, or until the service aborts it: then
    it ends as probes.session does when its `stop` is set."""

    aborted_outcome = "stopped"

    def __init__(self):
        super().__init__(0.0)
        self.releases = threading.Semaphore(0)

    def hold(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.releases.acquire(timeout=0.01):
                return False
        return True


@pytest.mark.slow  # ~2-4 s: ten skips at 0.3 s intervals
def test_slow_target_is_skipped_not_stacked(tmp_path) -> None:
    engine = GatedEngine()
    svc, store = make(tmp_path, engine, [ProbeJob("slow", "default", every_s=0.3),
                                         ProbeJob("slow", "other", every_s=0.3)])

    def skips() -> int:
        return sum(t["skips"] for t in svc.status()["targets"].values())

    svc.start()
    clean = False
    try:
        for n in (1, 2):  # a probe that outlasts many intervals of both jobs, twice
            wait_for(lambda n=n: engine.calls == n, 10, f"probe {n} started")
            before = skips()
            wait_for(lambda b=before: skips() >= b + 5, 10, "5 more skips while it runs")
            assert engine.calls == n  # every fire meanwhile was skipped, none stacked
            engine.releases.release()
        wait_for(lambda: engine.calls == 3, 10, "the third probe started")
    finally:
        clean = svc.stop(timeout=3.0)  # aborts the third
    assert clean
    status = svc.status()
    assert engine.max_running == 1  # measured inside the engine, across both jobs of the target
    runs = sum(t["runs"] for t in status["targets"].values())
    aborted = sum(t["aborted"] for t in status["targets"].values())
    print(f"\nslow target: {runs} runs, {skips()} skips, {aborted} aborted")
    assert (runs, aborted, engine.calls) == (2, 1, 3)
    store = EmbeddedStore(str(tmp_path / "vp.db"))  # stop() closed the recorder's handle
    stored = store.select("schedule", ("target", "event", "skips", "agent"),
                          "event = 'skip'")
    assert len(stored) == skips() >= 10 and {r[3] for r in stored} == {"test-agent"}
    sessions = store.select("session", ("target", "agent", "outcome"))
    assert len(sessions) == runs and {r[1] for r in sessions} == {"test-agent"}
    assert {r[2] for r in sessions} == {"ok"}


def test_stop_aborts_a_running_probe_within_the_bound(tmp_path) -> None:
    engine = SlowEngine(60.0)
    svc, store = make(tmp_path, engine, [ProbeJob("slow", every_s=0.2)])
    svc.start()
    deadline = time.monotonic() + 5
    while engine.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.calls == 1
    t0 = time.monotonic()
    clean = svc.stop(timeout=1.5)
    took = time.monotonic() - t0
    assert clean  # every probe ended within the bound (aborted, not waited for)
    assert took < 1.5 + 0.5, took
    # the aborted probe's result was still recorded and flushed before stop() returned
    rows = EmbeddedStore(str(tmp_path / "vp.db")).select("session", ("outcome",))
    assert [r[0] for r in rows] == ["timeout:session"]


def test_jitter_delays_runs_but_keeps_the_grid() -> None:
    from datetime import UTC, datetime, timedelta

    from scheduler.triggers import GridJitter, make_trigger

    trig = make_trigger(ProbeJob("t", every_s=30, jitter_s=2), scale=1.0)
    assert isinstance(trig, GridJitter)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    fire = trig.get_next_fire_time(None, now)
    first_grid = fire
    fires = []
    for _ in range(200):
        fire = trig.get_next_fire_time(fire, fire)
        fires.append(fire)
    grid0 = trig.inner.start_date
    offsets = [((f - grid0).total_seconds()) % 30 for f in fires]
    assert all(0 <= o <= 2.0 for o in offsets)  # always within jitter of a grid point
    # 200 runs later we are 200 intervals on, not 200 * (30 + ~1) s: no drift
    assert abs((fires[-1] - first_grid) - timedelta(seconds=200 * 30)) < timedelta(seconds=2.01)
    assert len({round(o, 3) for o in offsets}) > 100  # and the jitter is really random


def test_cron_schedule() -> None:
    from datetime import UTC, datetime

    from scheduler.triggers import job_interval_s, make_trigger

    job = ProbeJob("t", cron="*/5 * * * *", jitter_s=10)
    trig = make_trigger(job, scale=0.001)  # cron is wall-clock: time_scale does not touch it
    now = datetime(2030, 1, 1, 12, 1, 30, tzinfo=UTC)
    fire = trig.get_next_fire_time(None, now)
    assert datetime(2030, 1, 1, 12, 5, tzinfo=UTC) <= fire <= \
        datetime(2030, 1, 1, 12, 5, 10, tzinfo=UTC)
    assert job_interval_s(job, 0.001) == 300.0
