"""The alert engine's state machine with plain data: pending/firing/resolved, de-duplication,
`for`, unknown data and store errors."""

from __future__ import annotations

import pytest

from scheduler.alerts import AlertEngine, Rule, build_rules, check_once
from scheduler.config import RegressionRule, ServiceConfig, Slo, ThresholdRule
from scheduler.rules import Verdict
from scheduler.source import MemorySource
from tests.scheduler.helpers import result


class Scripted:
    """A rule whose verdicts are given in order (None = no data, "boom" = store error)."""

    def __init__(self, script):
        self.script = list(script)

    def __call__(self, source, now):
        step = self.script.pop(0)
        if step == "boom":
            raise ConnectionError("store down")
        return Verdict(step, 1.0 if step else 0.0, 0.5, "1m", "scripted")


def run(script, for_s=0.0):
    events = []
    engine = AlertEngine([Rule("r", "t", "threshold", "warning", for_s, Scripted(script))],
                         MemorySource(), agent="a1", listeners=[events.append])
    states = []
    for i in range(len(script)):
        engine.evaluate(now=1000.0 + i * 10)
        states.append(engine.states()[0].state)
    return events, states, engine


def test_fire_dedupe_resolve() -> None:
    events, states, _ = run([False, True, True, True, False, False, True])
    assert states == ["inactive", "firing", "firing", "firing", "resolved", "inactive", "firing"]
    assert [e.state for e in events] == ["firing", "resolved", "firing"]
    assert events[0].started_at == 1010.0 and events[0].agent == "a1"
    assert events[1].previous == "firing"


def test_for_duration_goes_through_pending() -> None:
    events, states, _ = run([True, True, True, False], for_s=15)
    # t=1000 pending, 1010 still pending (10 < 15), 1020 firing (20 >= 15), 1030 resolved
    assert states == ["pending", "pending", "firing", "resolved"]
    assert [e.state for e in events] == ["pending", "firing", "resolved"]


def test_pending_that_clears_resolves_without_firing() -> None:
    events, states, _ = run([True, False], for_s=60)
    assert [e.state for e in events] == ["pending", "resolved"]
    assert events[1].previous == "pending"


def test_no_data_and_store_errors_keep_state() -> None:
    events, states, engine = run([True, None, "boom", True, False])
    assert states == ["firing", "firing", "firing", "firing", "resolved"]
    assert [e.state for e in events] == ["firing", "resolved"]
    assert engine.stats.rule_errors == 1


def test_listener_failure_never_stops_the_engine() -> None:
    def bad(event):
        raise RuntimeError("listener down")

    got = []
    engine = AlertEngine([Rule("r", "t", "threshold", "warning", 0, Scripted([True]))],
                         MemorySource(), listeners=[bad, got.append])
    engine.evaluate(1.0)
    assert len(got) == 1 and engine.stats.listener_errors == 1


def test_rules_from_config_and_reload_keeps_state() -> None:
    cfg = ServiceConfig(
        slos=[Slo("avail", "t", "availability", 0.99)],
        thresholds=[ThresholdRule("p95", "t", "ttfa_ms", "p95", ">", 900, 600, 120)],
        regressions=[RegressionRule("reg", "t")],
        time_scale=0.01,
    )
    rules = build_rules(cfg)
    assert [r.name for r in rules] == ["avail:page-1h", "avail:page-6h", "avail:ticket-3d",
                                       "p95", "reg"]
    assert [r.severity for r in rules][:3] == ["page", "page", "ticket"]
    assert rules[3].for_s == 1.2  # 120 s scaled by 0.01
    src = MemorySource()
    for i in range(40):  # all failing in the last 40 s
        src.record(result("t", 10_000 - 40 + i, ok=False))
    engine = AlertEngine(rules, src)
    engine.evaluate(10_000.0)
    firing = {s.rule for s in engine.firing()}
    assert firing == {"avail:page-1h", "avail:page-6h", "avail:ticket-3d"}
    engine.set_rules([r for r in build_rules(cfg) if r.name != "avail:ticket-3d"])
    assert {s.rule for s in engine.firing()} == {"avail:page-1h", "avail:page-6h"}


def test_check_once_counts_true_conditions_as_firing() -> None:
    cfg = ServiceConfig(thresholds=[ThresholdRule("p95", "t", "ttfa_ms", "p95", ">", 900,
                                                  600, for_s=300)])
    src = MemorySource()
    for i in range(20):
        src.record(result("t", 5000.0 - i, ttfa=[1000.0]))
    rows = check_once(cfg, src, now=5000.5)
    assert [(r.rule, r.state) for r in rows] == [("p95", "firing")]
    rows = check_once(cfg, MemorySource(), now=5000.5)
    assert rows[0].state == "inactive" and "0 samples" in rows[0].message


def test_demo_preset_scales_to_the_run() -> None:
    from scheduler.presets import demo_service_config

    cfg = demo_service_config(["sim-fast", "sim-slow"], 60.0)
    assert [p.every_s * cfg.time_scale for p in cfg.probes] == [pytest.approx(3.0)] * 2
    assert cfg.regressions[0].recent_s * cfg.time_scale == pytest.approx(15.0)
    assert cfg.evaluate_every_s * cfg.time_scale == pytest.approx(1.0)
    assert [r.name for r in build_rules(cfg)][:4] == [
        "sim-fast-availability:page-1h", "sim-fast-availability:page-6h",
        "sim-fast-availability:ticket-3d", "sim-slow-availability:page-1h"]


def test_store_errors_are_scrubbed() -> None:
    def fail(source, now):
        raise ConnectionError("GET https://user:hunter2@db.example:8086/query?u=x&p=hunter2 "
                              "failed")

    engine = AlertEngine([Rule("r", "t", "burn", "page", 0, fail)], MemorySource())
    engine.evaluate(1.0)
    err = engine.states()[0].error
    assert "hunter2" not in err and "https://db.example:8086/query?..." in err


def test_keep_firing_for_stops_flapping() -> None:
    events = []
    script = [True, False, True, False, False, False, False]
    engine = AlertEngine([Rule("r", "t", "regression", "warning", 0, Scripted(script),
                               keep_firing_s=25)], MemorySource(), listeners=[events.append])
    for i in range(len(script)):
        engine.evaluate(now=1000.0 + i * 10)
    # clear at 1010 (back at 1020), clear again from 1030: resolves at 1060 (30 >= 25)
    assert [(e.state, e.at) for e in events] == [("firing", 1000.0), ("resolved", 1060.0)]
