"""Pure unit tests: exact merging of worker deltas, thresholds, health, points, summary."""

import io
import random

import pytest
from hdrh.histogram import HdrHistogram

from loadtests.collector import Collector
from loadtests.metrics import Delta
from loadtests.plan import LoadConfig, Plan, default_target
from loadtests.summary import LoadSummary
from loadtests.thresholds import evaluate, parse_threshold
from probes.results import SessionResult, TurnResult
from probes.spec import Scenario
from telemetry.hdr import percentiles_ms
from telemetry.stats import percentile
from voicepulse.progress import Progress


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def plan(**load):
    return Plan(default_target(), Scenario(), LoadConfig(**load), run_id="r1", record=False)


def delta_of(values, metric="ttfa_ms"):
    d = Delta()
    for v in values:
        d.record(metric, v)
    d.counters.sessions = len(values)
    d.counters.sessions_ok = len(values)
    return d


def test_merged_count_and_p99_equal_those_of_all_raw_values():
    rng = random.Random(3)
    workers = {f"w{i}": [rng.lognormvariate(5.5, 0.4) for _ in range(rng.randint(500, 3000))]
               for i in range(3)}
    c = Collector(plan())
    c.begin(list(workers))
    for w, vals in workers.items():  # several reports per worker
        for chunk in (vals[:100], vals[100:]):
            c.merge(w, {"delta": delta_of(chunk).encode()})
    merged = c.total.hist["ttfa_ms"]
    raw = [v for vals in workers.values() for v in vals]
    assert merged.count == len(raw) == sum(len(v) for v in workers.values())
    assert merged.sum_ms == pytest.approx(sum(raw))
    assert merged.max_ms == pytest.approx(max(raw))
    exact = percentile(raw, 99)  # nearest rank, the one rule
    p99 = c.summary().metric("ttfa_ms").p99
    assert abs(p99 - exact) <= exact * 0.002  # 3 significant figures
    ref = HdrHistogram(1, 600_000_000, 3)
    for v in raw:
        ref.record_value(int(round(v * 1000)))
    assert p99 == percentiles_ms(ref, (99.0,))[99.0]  # merged == one histogram of every value


def test_threshold_parsing_and_errors():
    t = parse_threshold("ttfa_ms.p95[60s]<800 abort_on_fail")
    assert (t.metric, t.stat, t.op, t.value, t.window_s, t.abort_on_fail) == (
        "ttfa_ms", "p95", "<", 800.0, 60.0, True)
    assert parse_threshold("late_starts==0").stat is None
    assert parse_threshold("ttfa_ms.p99.9<=1000").stat == "p99.9"
    assert parse_threshold("error_rate<1%").value == 0.01  # telemetry.stats' units
    assert parse_threshold("ttfa_ms.p95<0.8s").value == 800.0
    assert parse_threshold("ttfa_ms.median!=0").op == "!="
    for bad in ("ttfa_ms<800", "error_rate.p95<1", "ttfa_ms.p95<<3", "ttfa_ms.p95[x]<3", "x",
                "ttfa_ms.p0<1", "ttfa_ms.p101<1", "ttfa_ms.avg<1", "ttfa_ms.p95[0s]<1"):
        with pytest.raises(ValueError):
            parse_threshold(bad)


def test_threshold_evaluation():
    d = delta_of([100.0] * 90 + [900.0] * 10)
    d.counters.sessions, d.counters.sessions_ok = 100, 98
    d.counters.late_starts = 0
    assert evaluate(parse_threshold("ttfa_ms.p50<200"), d, 10).ok
    v = evaluate(parse_threshold("ttfa_ms.p95<800"), d, 10)
    assert not v.ok and v.actual == pytest.approx(900.0, rel=1e-3)
    assert evaluate(parse_threshold("error_rate<0.03"), d, 10).ok
    assert not evaluate(parse_threshold("error_rate<0.01"), d, 10).ok
    assert evaluate(parse_threshold("late_starts==0"), d, 10).ok
    assert evaluate(parse_threshold("success_ratio>=0.98"), d, 10).actual == 0.98
    assert not evaluate(parse_threshold("success_ratio>0.98"), d, 10).ok
    nodata = evaluate(parse_threshold("ttft_ms.p95<800"), d, 10)
    assert not nodata.ok and nodata.actual is None  # no data never passes


def test_sliding_window_sees_only_recent_reports_and_abort():
    clock = Clock()
    c = Collector(plan(thresholds=["ttfa_ms.p95[10s]<500", "ttfa_ms.p95<5000 abort_on_fail"]),
                  clock=clock)
    c.begin(["w"])
    c.merge("w", {"delta": delta_of([2000.0] * 50).encode()})
    clock.t += 30
    c.merge("w", {"delta": delta_of([100.0] * 50).encode()})
    window, whole = c.verdicts()
    assert window.ok and window.actual == pytest.approx(100.0, rel=1e-3)
    assert whole.ok and not c.aborted
    c.merge("w", {"delta": delta_of([9000.0] * 500).encode()})
    assert c.aborted == "ttfa_ms.p95<5000"


def test_points_health_and_summary():
    c = Collector(plan(rate=2.0, duration_s=10.0, overload_lag_ms=10.0))
    c.begin(["a", "b"])
    good = Delta()
    for _ in range(100):
        good.record("loop_lag_ms", 1.0)
        good.record("send_lag_ms", 2.0)
    good.counters.arrivals_due = good.counters.arrivals_started = 10
    bad = Delta()
    for _ in range(100):
        bad.record("loop_lag_ms", 40.0)
    bad.add_result(SessionResult("sim", "openai", "m", outcome="timeout:first_audio",
                                 turns=[TurnResult(0, outcome="timeout:first_audio")]))
    c.merge("a", {"delta": good.encode(), "users": 5, "in_flight": 2, "cpu_pct": 20.0})
    c.merge("b", {"delta": bad.encode(), "users": 5, "in_flight": 1, "cpu_pct": 30.0,
                  "final": True})
    pts = c.flush()
    loadgen = {p.tags["worker"]: p for p in pts if p.measurement == "loadgen"}
    assert set(loadgen) == {"a", "b", "all"}
    assert loadgen["a"].fields["overloaded"] == 0 and loadgen["b"].fields["overloaded"] == 1
    assert loadgen["all"].fields["arrivals_started"] == 10 and loadgen["all"].fields["users"] == 10
    lat = {p.tags["metric"] for p in pts if p.measurement == "latency"}
    assert {"loop_lag_ms", "send_lag_ms"} <= lat
    assert all(p.tags["kind"] == "load" for p in pts if p.measurement == "latency")
    assert not c.all_final
    s = c.summary()
    assert s.overloaded and "--processes" in s.overload_message
    assert s.counters["errors"] == {"timeout:first_audio": 1}
    assert LoadSummary.from_dict(s.to_dict()) == s
    assert "OVERLOADED" in s.table() and "timeout:first_audio" in s.table()


def test_live_status_figures():
    clock = Clock()
    c = Collector(plan(rate=2.0, duration_s=10.0), clock=clock)
    c.begin(["w"])
    d = delta_of([200.0] * 20 + [700.0])
    d.counters.arrivals_due = d.counters.arrivals_started = 21
    d.counters.sessions, d.counters.sessions_ok = 20, 19
    clock.t += 5
    c.merge("w", {"delta": d.encode(), "users": 8, "in_flight": 3, "cpu_pct": 12.0})
    f = c.status()
    assert f["sessions"] == 21 and f["active_sessions"] == 3 and f["users"] == 8
    assert f["error_rate"] == pytest.approx(0.05) and f["errors"] == 1
    assert f["ttfa_p50_ms"] == pytest.approx(200.0, rel=1e-3)
    assert f["arrivals_per_s"] == pytest.approx(21 / 5)
    assert f["cpu_pct"] == 12.0
    assert f["warning"] == ""  # healthy so far: an explicit verdict, not a derived one


def test_live_warning_is_the_runs_verdict_not_a_lone_p99():
    """One 80 ms hiccup is a 10 s window's send-lag p99, but one turn: the live block stays
    quiet, as the summary does. A window where most chunks of most turns were late warns, in
    the summary's own words."""
    c = Collector(plan(rate=2.0, duration_s=10.0, overload_lag_ms=50.0))
    c.begin(["w"])
    hiccup = Delta()
    for v in [2.0] * 39 + [80.0]:  # 40 turns, one of them with a late chunk
        hiccup.record("send_lag_ms", v)
    c.merge("w", {"delta": hiccup.encode(), "cpu_pct": 20.0})
    c.flush()
    f = c.status()
    assert f["send_lag_p99_ms"] == pytest.approx(80.0, rel=1e-3) and f["warning"] == ""
    assert not c.summary().overloaded
    p = Progress(10, stream=io.StringIO(), lag_warn_ms=50.0)
    p.update(**f)
    assert p.warning() is None
    late = Delta()
    for _ in range(40):
        late.record("send_lag_ms", 120.0)
    late.counters.slow_turns = 30  # most chunks late in 30 of 40 turns
    c.merge("w", {"delta": late.encode(), "cpu_pct": 20.0})
    c.flush()
    f = c.status()
    s = c.summary()
    assert s.overloaded and f["warning"] == s.overload_message
    assert "30 of 40 turns" in f["warning"]
    p.update(**f)
    assert p.warning() == s.overload_message


def test_achieved_rate_is_measured_between_the_real_first_and_last_start():
    c = Collector(plan(rate=10.0, duration_s=2.0))
    c.begin(["a", "b"])
    t0 = 1_700_000_000 * 10**9
    for w, starts in (("a", range(0, 20, 2)), ("b", range(1, 20, 2))):  # 20 starts, interleaved
        d = Delta()
        for j in starts:  # every start 20 % late on the 10/s schedule: really 100/12 per s
            d.counters.arrivals_started += 1
            d.note_start(t0 + int(j * 0.12e9))
        c.merge(w, {"delta": d.encode(), "final": True})
    assert c.summary().achieved_rate == pytest.approx(19 / (19 * 0.12))
    one = Collector(plan())
    d = Delta()
    d.counters.arrivals_started = 1
    d.note_start(t0)
    one.merge("w", {"delta": d.encode()})
    assert one.summary().achieved_rate is None  # one start spans no interval
