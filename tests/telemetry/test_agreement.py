"""One percentile rule everywhere: the same turns give the same p50/p95/p99 on every surface.

The turns go through the embedded store the way probes write them (Recorder: `turn` and
`session` points, plus the `latency` points' HDR blobs). Then the surfaces are read:

- `/status` over HTTP (ProbeService.status behind StatusServer), last hour;
- `voicepulse results`: the query layer's summary and the CLI's printed table;
- alert threshold rules (`ttfa_ms.p50/p90/p95/p99`) over TelemetrySource;
- the report: `reports.collect` (summary, latency buckets) and `reports.verdict` thresholds;
- the load summary: the same results merged by the load Collector (worker deltas, HDR).

Expected values come from sorting the values and taking rank ceil(p/100 * n), computed here
independently of telemetry.stats.

**Why equality can be exact through HDR.** The histograms keep 3 significant digits: 2048
sub-buckets per power of two of microseconds, so values below 2.048 ms are exact to 1 µs and a
larger one shares a bucket of width 2^k µs with its neighbours. A percentile is reported as its
bucket's *highest equivalent value*. Every value fed here is a whole number of microseconds
that is its own bucket's highest equivalent value (`get_highest_equivalent_value(v) == v`), so
HDR reports it unchanged, and us/1000 is the same float on the raw and the HDR path.

**Why these n.** For n = 5, 7, 20, 200 the rounding rule (HDR's own, InfluxQL's) and the
ceiling agree at p50/p95/p99: p/100 * n has a fractional part of 0 or >= 0.5 in every case. So
p90 is checked too (7 values: 6.3, rank 7 vs 6), and n = 11 and 13 are added, where p95 differs
(10.45 and 12.35). The values are spread so NumPy's default linear interpolation (what
`/status` used) lands between two values in every case; the test asserts that each case tells
the rules apart, so it could fail if a surface used another one.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from loadtests.collector import Collector
from loadtests.metrics import Delta
from loadtests.plan import LoadConfig, Plan, default_target
from loadtests.thresholds import evaluate as load_evaluate
from loadtests.thresholds import parse_threshold as load_parse
from probes.results import SessionResult, TurnResult
from probes.spec import Scenario, Target
from reports.collect import collect
from reports.verdict import evaluate as report_evaluate
from scheduler.config import ProbeJob, ServiceConfig, ThresholdRule
from scheduler.rules import evaluate_threshold
from scheduler.service import ProbeService
from scheduler.source import TelemetrySource
from scheduler.status_http import StatusServer
from telemetry.embedded import EmbeddedStore
from telemetry.hdr import new_histogram
from telemetry.query import EmbeddedQuery
from telemetry.recorder import Recorder
from telemetry.stats import COUNTERS

NS = (5, 7, 11, 13, 20, 200)
PS = (50, 90, 95, 99)


def hdr_exact_values(n: int, seed: int) -> list[float]:
    """n distinct ms values (whole µs, each its own HDR highest equivalent), shuffled."""
    h, rng, out = new_histogram(), random.Random(seed), set()
    while len(out) < n:
        us = h.get_highest_equivalent_value(rng.randint(80_000, 4_000_000))
        out.add(us)
    vals = [us / 1000.0 for us in out]
    rng.shuffle(vals)
    return vals


def ceil_rank(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(1, math.ceil(p * len(s) / 100)) - 1]


def round_rank(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(1, math.floor(p * len(s) / 100 + 0.5)) - 1]


CASES = {n: hdr_exact_values(n, seed=n) for n in NS}


def _result(target: str, at: float, ttfa: float, kind: str = "probe", run_id: str = ""):
    return SessionResult(target, "openai", "m", kind=kind, run_id=run_id, started_at=at,
                         outcome="ok", session_id=f"{target}-{at!r}", duration_s=1.0,
                         connect_ms=5.0, turns=[TurnResult(0, ttfa_ms=ttfa, turn_ms=ttfa + 1)])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Every case's turns as probe results of target agree-<n>, 10..25 min ago."""
    path = str(tmp_path_factory.mktemp("agree") / "vp.db")
    now = time.time()
    rec = Recorder(EmbeddedStore(path), interval_s=10.0)
    for n, vals in CASES.items():
        for i, v in enumerate(vals):
            rec.record(_result(f"agree-{n}", now - 1500 + i * 900 / n, v))
    assert rec.close(timeout=10.0)  # closes the store too
    return path, now


def test_the_cases_tell_the_rules_apart():
    for n, vals in CASES.items():
        ours = [ceil_rank(vals, p) for p in PS]
        assert any(float(np.percentile(vals, p)) != o for p, o in zip(PS, ours, strict=True)), n
    assert round_rank(CASES[7], 90) != ceil_rank(CASES[7], 90)
    assert round_rank(CASES[11], 95) != ceil_rank(CASES[11], 95)
    assert round_rank(CASES[13], 95) != ceil_rank(CASES[13], 95)


def test_status_results_alerts_report_and_load_summary_agree(store):
    path, t0 = store
    q = EmbeddedQuery(EmbeddedStore(path))
    now = time.time()
    window = {"start_ns": int((t0 - 1800) * 1e9), "end_ns": int((now + 60) * 1e9)}
    targets = {f"agree-{n}": Target(name=f"agree-{n}", url="ws://127.0.0.1:9/v1/realtime",
                                    model="m") for n in NS}

    def never(*_a, **_k):
        raise AssertionError("no probe runs in this test")

    # /status over HTTP
    cfg = ServiceConfig(probes=[ProbeJob(t, every_s=3600) for t in targets], status_port=0)
    svc = ProbeService(cfg, targets, {"default": Scenario()}, None,
                       TelemetrySource(EmbeddedQuery(EmbeddedStore(path))), runner=never)
    svc.start()
    srv = StatusServer(svc.status, "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(srv.url + "/status", timeout=10) as r:
            status = json.loads(r.read())
    finally:
        srv.stop()
        assert svc.stop(timeout=5.0)
    hour = {t["target"]: t["last_hour"] for t in status["targets"].values()}

    # voicepulse results: the query layer and the CLI's table
    summary = {s.target: s for s in q.summary(**window)}
    from voicepulse.cli import main

    out = CliRunner().invoke(main, ["results", "--store", path, "--since", "1h"])
    assert out.exit_code == 0, out.output
    printed = {line.split()[0]: line.split() for line in out.output.splitlines()
               if line.startswith("agree-")}

    # the report
    th = [f"ttfa_ms.p{p}<1e9" for p in PS]
    data = collect(q, **window, thresholds=th, bucket_s=10**9)
    verdict = report_evaluate(data, q)
    report = {(c.target, c.text): c.value for c in verdict.checks}
    buckets = {b.target: b for b in data.latency["ttfa_ms"]}
    spectra = {s.target: s for s in data.spectra if s.metric == "ttfa_ms"}

    src = TelemetrySource(q)
    for n, vals in CASES.items():
        t = f"agree-{n}"
        want = {p: ceil_rank(vals, p) for p in PS}
        # the load summary: the same results merged by the load collector, two workers
        c = Collector(Plan(default_target(), Scenario(), LoadConfig(), run_id="r", record=False))
        c.begin(["w0", "w1"])
        for w, part in (("w0", vals[: n // 2]), ("w1", vals[n // 2:])):
            d = Delta()
            for v in part:
                d.add_result(_result(t, 0.0, v, kind="load"))
            c.merge(w, {"delta": d.encode(), "final": True})
        load = c.summary().metric("ttfa_ms")
        load_p = {50: load.p50, 90: load.p90, 95: load.p95, 99: load.p99}

        for p in PS:
            rule = ThresholdRule("r", t, "ttfa_ms", f"p{p}", ">", 0.0, over_s=3600)
            got = {
                "alert rule": evaluate_threshold(rule, src, now).value,
                "report verdict": report[(t, f"ttfa_ms.p{p}<1e9")],
                "load summary": load_p[p],
                "load threshold": load_evaluate(load_parse(f"ttfa_ms.p{p}<1"), c.total,
                                                10).actual,
            }
            if p != 90:
                got["results (query)"] = getattr(summary[t], f"ttfa_p{p}")
                got["/status"] = hour[t][f"ttfa_p{p}_ms"]
                got["report summary"] = getattr(
                    next(s for s in data.summary if s.target == t), f"ttfa_p{p}")
                got["report latency bucket"] = buckets[t].values[float(p)]
            for surface, v in got.items():
                assert v == want[p], (n, p, surface, v, want[p])
        for p in (50, 95):  # the CLI prints p50 and p95 to 0.1 ms
            col = {50: 6, 95: 7}[p]  # target provider model sessions "100.0 %" p50 p95
            assert printed[t][col] == f"{want[p]:.1f}", (n, p, printed[t])
        assert summary[t].turns == n and buckets[t].count == n and load.count == n
        # no HDR percentile above the max
        assert load.p99 <= load.p999 <= load.max == max(vals)
        sp = spectra[t]
        assert max(sp.values_ms) <= sp.max_ms == max(vals)
    q.close()


#: Every threshold form `voicepulse load --threshold` accepts: each counter, each kind of
#: statistic, units, windows and abort_on_fail.
FORMS = [f"{c}>=0" for c in COUNTERS] + [
    "ttfa_ms.p95<800", "ttfa_ms.p99.9<=1000", "ttfa_ms.p50>=1", "ttfa_ms.p999<9000",
    "ttfa_ms.p90!=0", "connect_ms.max<500", "ttfa_ms.mean<900", "ttfa_ms.min>0",
    "ttfa_ms.count==8", "turn_ms.p95<0.8s", "error_rate<1%", "late_starts==0",
    "ttfa_ms.p95[60s]<800", "error_rate[30s]<0.5", "late_starts[1m]==0", "start_rate[10s]>0",
    "ttfa_ms.p95<800 abort_on_fail", "ttfa_ms.p95[20s]<800 abort_on_fail",
]


@pytest.fixture(scope="module")
def load_run(tmp_path_factory):
    """A small load run written as the load command writes it: the collector's `latency` and
    `loadgen` points plus the sessions' own points. Its own verdicts are the reference."""
    from telemetry.points import session_points

    path = str(tmp_path_factory.mktemp("forms") / "vp.db")
    st = EmbeddedStore(path)
    clock, wall = [1000.0], [time.time() - 120]
    lc = LoadConfig(rate=1.0, duration_s=10.0, thresholds=FORMS)
    c = Collector(Plan(default_target(), Scenario(), lc, run_id="run1", record=False),
                  clock=lambda: clock[0], wall=lambda: wall[0])
    c.begin(["w"])
    vals = hdr_exact_values(8, seed=99)
    results = [_result(default_target().name, wall[0] + i, v, kind="load", run_id="run1")
               for i, v in enumerate(vals)]
    results[3].outcome, results[3].turns[0].outcome = "timeout:first_audio", "timeout:first_audio"
    d = Delta()
    for r in results:
        d.add_result(r)
    d.counters.arrivals_due, d.counters.arrivals_started, d.counters.late_starts = 9, 8, 1
    d.counters.no_slot, d.counters.cut = 1, 2
    clock[0] += 10.0
    c.merge("w", {"delta": d.encode(), "users": 2, "final": True})
    points = c.flush(final=True)
    for r in results:
        points.extend(session_points(r))
    st.write(points)
    own = {v.expr: v for v in c.verdicts()}
    yield path, own
    st.close()


@pytest.mark.parametrize("form", FORMS)
def test_the_report_reads_every_load_threshold_form(load_run, form):
    path, own = load_run
    q = EmbeddedQuery(EmbeddedStore(path))
    try:
        data = collect(q, start_ns=0, end_ns=time.time_ns() + 1, run_id="run1",
                       thresholds=[form])
        checks = [c for c in report_evaluate(data, q).checks if c.target != "*"]
    finally:
        q.close()
    expr = load_parse(form).expr
    assert checks and all(c.text == expr for c in checks), checks
    ref = own[expr]
    (check,) = checks
    assert ref.actual is not None
    if ".mean" in form:  # stored as mean (one rounding of sum / count)
        assert check.value == pytest.approx(ref.actual, rel=1e-12)
    else:
        assert check.value == ref.actual, (form, check, ref)
    assert check.passed is ref.ok


def test_no_hdr_percentile_exceeds_max(tmp_path):
    """The demo's case: session_ms max 6244.0 shares an HDR bucket up to 6246.399 ms, which
    is what an unclamped p99 reported. Every HDR reader stays within the recorded min..max."""
    vals = [6244.0, 6100.0, 3000.5, 2500.25, 1200.0]
    lo, hi = min(vals), max(vals)
    assert new_histogram().get_highest_equivalent_value(int(hi * 1000)) / 1000 > hi  # the trap
    # the load summary
    d = Delta()
    for v in vals:
        d.record("session_ms", v)
    c = Collector(Plan(default_target(), Scenario(), LoadConfig(), run_id="r", record=False))
    c.begin(["w"])
    c.merge("w", {"delta": d.encode(), "final": True})
    m = c.summary().metric("session_ms")
    assert lo == m.min <= m.p50 <= m.p99 <= m.p999 <= m.max == hi
    assert m.p99 == hi
    # stored `latency` points, the query layer, the report's buckets, spectrum and verdict
    path = str(tmp_path / "vp.db")
    rec = Recorder(EmbeddedStore(path), interval_s=10.0)
    now = time.time()
    for i, v in enumerate(vals):
        rec.record(_result("clamp", now - 60 + i, v))
    assert rec.close(timeout=10.0)  # closes the store too
    q = EmbeddedQuery(EmbeddedStore(path))
    w = {"start_ns": int((now - 120) * 1e9), "end_ns": int((now + 60) * 1e9)}
    (pt,) = [r for r in q.select("latency", ("p99", "p999", "max"), w["start_ns"], w["end_ns"],
                                 {"metric": "ttfa_ms", "target": "clamp"})]
    assert pt[1] <= pt[2] <= pt[3] == hi
    th = ["ttfa_ms.p99<1e9", "ttfa_ms.p999<1e9", "ttfa_ms.max<1e9", "ttfa_ms.p0.1<1e9"]
    data = collect(q, **w, thresholds=th, bucket_s=10**9)
    got = {ch.text.split("<")[0]: ch.value for ch in report_evaluate(data, q).checks}
    assert got["ttfa_ms.p99"] == got["ttfa_ms.p999"] == got["ttfa_ms.max"] == hi
    assert got["ttfa_ms.p0.1"] == lo
    (b,) = data.latency["ttfa_ms"]
    assert max(b.values.values()) == hi
    (sp,) = [s for s in data.spectra if s.metric == "ttfa_ms"]
    assert max(sp.values_ms) <= sp.max_ms == hi and min(sp.values_ms) >= lo
    q.close()
