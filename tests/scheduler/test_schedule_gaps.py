"""Every scheduled fire time is explained (issue 18): the schedule ledger (scheduler/ledger.py)
turns what a killed service process left behind into `schedule` points at the next start
(`killed` for the probe it was running, `down` for each fire time that fell while nothing ran),
the restarted and the reloaded service keep the old grid, and a fire dropped by the shutdown is
stored as `shutdown`.

Real APScheduler and a real embedded store; the probe engine is a plain function (what is tested
is the scheduling). A "killed" process is a service that is never stopped: its scheduler is shut
down without `stop()`, so the ledger stays as a SIGKILL leaves it.
"""

from __future__ import annotations

import json
import time

from probes.spec import Scenario
from scheduler.config import ProbeJob, ServiceConfig
from scheduler.ledger import Ledger
from scheduler.service import ProbeService
from scheduler.source import TelemetrySource
from telemetry.embedded import EmbeddedStore
from telemetry.query import EmbeddedQuery
from telemetry.recorder import Recorder
from tests.scheduler.test_service import TARGET, GatedEngine, SlowEngine, wait_for

EVERY = 0.4


def service(tmp_path, engine, every=EVERY):
    store = EmbeddedStore(str(tmp_path / "vp.db"))
    cfg = ServiceConfig(agent="gap-agent", probes=[ProbeJob("slow", every_s=every)])
    svc = ProbeService(cfg, {"slow": TARGET}, {"default": Scenario()}, Recorder(store, 1.0),
                       TelemetrySource(EmbeddedQuery(store)), runner=engine,
                       ledger=str(tmp_path / "outbox" / "schedule-gap-agent.json"))
    return svc


def schedule_rows(tmp_path) -> list[tuple]:
    return EmbeddedStore(str(tmp_path / "vp.db")).select(
        "schedule", ("time_ns", "event", "count", "agent"))


def test_ledger_recovery_arithmetic(tmp_path) -> None:
    path = tmp_path / "ledger.json"
    now = 1_000_000.0
    path.write_text(json.dumps({"version": 1, "clean": False, "jobs": {"probe:t:default": {
        "target": "t", "scenario": "default", "every_s": 10.0, "last": now - 35.0,
        "running": [now - 34.5]}}}))
    records, grid = Ledger(str(path)).recover(now)
    assert records == [("t", "default", "killed", now - 34.5, 1),
                       ("t", "default", "down", now - 25.0, 1),
                       ("t", "default", "down", now - 15.0, 1),
                       ("t", "default", "down", now - 5.0, 1)]
    assert grid == {"probe:t:default": (10.0, now + 5.0)}
    # after a clean stop nothing fell silent: no `down`, but the grid is kept
    doc = json.loads(path.read_text())
    doc["clean"], doc["jobs"]["probe:t:default"]["running"] = True, []
    path.write_text(json.dumps(doc))
    records, grid = Ledger(str(path)).recover(now)
    assert records == [] and grid == {"probe:t:default": (10.0, now + 5.0)}


def test_restart_after_a_kill_records_killed_and_down_and_keeps_the_grid(tmp_path) -> None:
    engine = GatedEngine()  # a probe that runs until released: the kill finds it running
    dead = service(tmp_path, engine).start()
    wait_for(lambda: engine.calls == 1, 5, "the first probe started")
    first = dead.status()["targets"]["probe:slow:default"]
    assert first["running"] == 1
    dead.scheduler.shutdown(wait=False)  # the process "dies": no stop(), no ledger update
    last = json.loads((tmp_path / "outbox" / "schedule-gap-agent.json").read_text())
    last_fire = last["jobs"]["probe:slow:default"]["last"]
    dead.recorder.flush(timeout=5)
    time.sleep(3 * EVERY + 0.1)  # three fire times fall while nothing runs

    engine2 = SlowEngine(0.0)
    svc = service(tmp_path, engine2).start()
    try:
        wait_for(lambda: engine2.calls >= 2, 5, "the restarted service probed twice")
    finally:
        assert svc.stop(timeout=3)
        engine.releases.release()
        dead.stop(timeout=1)
    rows = schedule_rows(tmp_path)
    killed = [r for r in rows if r[1] == "killed"]
    down = sorted(r[0] / 1e9 for r in rows if r[1] == "down")
    runs = sorted(r[0] / 1e9 for r in rows if r[1] in ("run", "missed"))  # missed: a late box
    assert len(killed) == 1 and killed[0][2] == 1 and killed[0][3] == "gap-agent"
    assert len(down) >= 3
    # every fire time is on the dead process's grid, without a hole: its runs, the down
    # times, then the new process's runs, one interval apart
    fires = sorted({round(t, 3) for t in [*runs, *down]})
    steps = [b - a for a, b in zip(fires, fires[1:], strict=False)]
    assert all(abs(s - EVERY) < 0.02 for s in steps), steps
    assert any(abs(t - last_fire) < 1e-3 for t in fires)
    assert (tmp_path / "outbox" / "schedule-gap-agent.json").exists()
    assert json.loads((tmp_path / "outbox" / "schedule-gap-agent.json").read_text())["clean"]


def test_clean_restart_writes_no_gap_records(tmp_path) -> None:
    engine = SlowEngine(0.0)
    svc = service(tmp_path, engine).start()
    wait_for(lambda: engine.calls >= 1, 5, "a probe ran")
    assert svc.stop(timeout=3)
    time.sleep(2 * EVERY)
    svc = service(tmp_path, engine).start()
    time.sleep(0.05)
    assert svc.stop(timeout=3)
    assert {r[1] for r in schedule_rows(tmp_path)} <= {"run"}


def test_reload_keeps_the_fire_times(tmp_path) -> None:
    svc = service(tmp_path, SlowEngine(0.0), every=30.0).start()
    try:
        before = svc.scheduler.get_job("probe:slow:default").next_run_time
        time.sleep(0.3)
        svc.reload(svc.cfg, svc.targets, svc.scenarios)
        after = svc.scheduler.get_job("probe:slow:default").next_run_time
        assert after == before  # without the fix: reload time + 30 s
        changed = ServiceConfig(agent="gap-agent", probes=[ProbeJob("slow", every_s=20.0)])
        svc.reload(changed, svc.targets, svc.scenarios)
        moved = svc.scheduler.get_job("probe:slow:default").next_run_time
        assert moved != before  # a new interval starts its own grid
    finally:
        assert svc.stop(timeout=3)


def test_a_fire_dropped_by_the_shutdown_is_stored(tmp_path) -> None:
    engine = SlowEngine(0.0)
    svc = service(tmp_path, engine, every=30.0).start()
    svc._stop.set()  # stop() has begun: a fire the pool picks up now does not probe
    svc._probe("probe:slow:default")
    svc._stop.clear()
    assert svc.stop(timeout=3)
    assert engine.calls == 0
    assert [r[1] for r in schedule_rows(tmp_path)] == ["shutdown"]


def test_an_alert_firing_when_the_process_died_resolves_in_the_next(tmp_path) -> None:
    """Without the ledger's alert states the new process starts `inactive`, finds the
    condition false and says nothing: the store's last word on the alert stays `firing`."""
    from scheduler.config import ThresholdRule

    def svc_with_rule():
        store = EmbeddedStore(str(tmp_path / "vp.db"))
        rule = ThresholdRule("errors", "slow", "error_rate", "value", ">", 0.5, over_s=60)
        cfg = ServiceConfig(agent="gap-agent", probes=[ProbeJob("slow", every_s=30.0)],
                            thresholds=[rule])
        return ProbeService(cfg, {"slow": TARGET}, {"default": Scenario()},
                            Recorder(store, 1.0), TelemetrySource(EmbeddedQuery(store)),
                            runner=SlowEngine(0.0), notifiers=[],
                            ledger=str(tmp_path / "outbox" / "schedule-gap-agent.json"))

    from tests.scheduler.helpers import result

    dead = svc_with_rule()
    now = time.time()
    for i in range(3):  # failed sessions: the rule fires
        dead.recorder.record(result("slow", now - 10 + i, ok=False))
    dead.recorder.flush(timeout=5)
    assert [e.state for e in dead.evaluate(now)] == ["firing"]
    dead.recorder.flush(timeout=5)  # the process "dies" here: no stop()

    svc = svc_with_rule().start()
    try:
        assert [s.state for s in svc.engine.states()] == ["firing"]  # taken back
        for i in range(3):  # the target is fine again; the failures are out of the window
            svc.recorder.record(result("slow", now + 100 + i, ok=True))
        events = svc.evaluate(now + 120)
    finally:
        assert svc.stop(timeout=3)
    doc = json.loads((tmp_path / "outbox" / "schedule-gap-agent.json").read_text())
    dead.ledger = None  # the dead process writes nothing more
    dead.stop(timeout=1)
    assert [(e.state, e.previous) for e in events] == [("resolved", "firing")]
    stored = EmbeddedStore(str(tmp_path / "vp.db")).select("alert", ("state",))
    assert [r[0] for r in stored] == ["firing", "resolved"]
    assert doc["alerts"] == {}  # resolved: nothing left to take back


def test_fires_coalesced_after_a_late_wakeup_are_stored_missed(tmp_path) -> None:
    """Woken late, APScheduler finds several fire times due and (coalesce) submits only the
    last, with no event for the others; each is stored `missed` at its own time."""
    engine = SlowEngine(0.0)
    svc = service(tmp_path, engine).start()
    try:
        wait_for(lambda: engine.calls >= 1, 5, "a probe ran")
        svc.scheduler.pause()  # a starved or suspended process: nothing fires
        time.sleep(3 * EVERY + 0.1)
        calls = engine.calls
        svc.scheduler.resume()
        wait_for(lambda: engine.calls >= calls + 2, 5, "probing again")
    finally:
        assert svc.stop(timeout=3)
    rows = schedule_rows(tmp_path)
    missed = [r for r in rows if r[1] == "missed"]
    assert len(missed) >= 2  # without the fix: none, and a silent hole in the fire times
    fires = sorted({round(r[0] / 1e9, 3) for r in rows if r[1] in ("run", "missed")})
    steps = [b - a for a, b in zip(fires, fires[1:], strict=False)]
    assert all(abs(s - EVERY) < 0.02 for s in steps), steps
