"""Every dashboard and alert-rule query, run against a real influxd 1.6.7 holding real data.

A probe series (`voicepulse serve` against the simulator, with a 30 % HTTP 500 fault so failures
have an error class and a threshold rule that fires so there is an `alert` point) and a short
load run against the same simulator write into the database. Then every panel target, template
variable, annotation and alert-rule query is extracted from the JSON/YAML, interpolated the way
Grafana does (template variables with values read from the written data; $timeFilter,
$__interval, $__interval_ms, $__from/$__to) and run. Each must answer without error, with
non-empty series carrying the columns and tags its panel reads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.dashboards import grafana as g
from tests.sim_server import SimProcess

pytestmark = [pytest.mark.system, pytest.mark.timeout(110)]

DB = "vp_dashboards"
RUN_ID = "dash-run-1"
SERVE_S = 14
PROBE_CONFIG = """
agent: test-agent
targets:
  sim-fast: {{url: "{ws}/v1/realtime", model: sim-fast, api_key_env: SIM_API_KEY, instructions: "Be brief."}}
  sim-slow: {{url: "{ws}/v1/realtime", model: sim-slow, api_key_env: SIM_API_KEY, instructions: "Be brief."}}
scenarios:
  default: {{turns: 2, utterance_s: 0.6, trailing_silence_s: 0.6, pause_s: 0.1}}
sinks:
  - {{type: influx, api: v1, url: "{influx}", database: {db}}}
outbox: {dir}/outbox
probes:
  - {{target: sim-fast, every: 1s}}
  - {{target: sim-slow, every: 1s}}
alerts:
  - {{name: fast-ttfa-p95, kind: threshold, target: sim-fast, expr: "ttfa_ms.p95 > 1", over: 10s, for: 0s}}
notifiers:
  - {{type: log}}
status: {{port: 0}}
service: {{evaluate_every: 2s}}
"""

#: Queries whose data cannot be produced on purpose here, checked in a weaker form instead.
#: Key: a substring of the query's location; value: (why, the condition dropped to check it).
WEAKER = {
    "annotation Generator overloaded": (
        "the generator is only marked overloaded when its send lag or CPU passes the bound, "
        "which a short healthy run does not do; checked without the `overloaded > 0` condition",
        ' AND "overloaded" > 0'),
}


def _mini_load_run(sim_ws: str, influx_url: str, tmp: Path) -> None:
    """A short open-model load run while `voicepulse load` is not in the tree: sessions arrive
    at a constant rate on 2 worker threads, the real engine measures them (kind=load, one
    run_id), telemetry records turn/session/latency points, and each worker's counters become
    `loadgen` points (plus the master's `all` sum) every 2 s, as DESIGN.md's load model says."""
    import psutil

    from probes.session import run_session
    from probes.spec import Scenario, Target
    from telemetry.points import LoadgenSample
    from telemetry.recorder import Recorder
    from telemetry.sinks import InfluxV1Sink, build_sink

    rec = Recorder(build_sink([InfluxV1Sink(url=influx_url, database=DB)],
                              outbox_dir=str(tmp / "load-outbox")))
    tgt = Target(name="sim-fast", url=f"{sim_ws}/v1/realtime", model="sim-fast",
                 api_key_env="SIM_API_KEY", instructions="Be brief.")
    sc = Scenario(name="load-demo", turns=1, utterance_s=0.5, trailing_silence_s=0.6)
    rate, duration, workers = 3.0, 7.0, 2
    lock = threading.Lock()
    counters = {w: dict(due=0, started=0, late=0, active=0, lag=[]) for w in range(workers)}
    t0 = time.monotonic()
    stop = threading.Event()

    def worker(w: int) -> None:
        # worker w takes every workers-th arrival of a constant-rate schedule
        k = w
        threads = []
        while True:
            due = t0 + k / rate
            if due - t0 > duration:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            with lock:
                counters[w]["due"] += 1
                counters[w]["started"] += 1
                counters[w]["late"] += time.monotonic() - due > 0.05
                counters[w]["active"] += 1

            def one() -> None:
                r = run_session(tgt, sc, kind="load", run_id=RUN_ID, api_key="k")
                rec.record(r)
                with lock:
                    counters[w]["active"] -= 1
                    if r.send_lag_p99_ms is not None:
                        counters[w]["lag"].append(r.send_lag_p99_ms)

            th = threading.Thread(target=one, daemon=True)
            th.start()
            threads.append(th)
            k += workers
        for th in threads:
            th.join(30)

    def reporter() -> None:
        proc = psutil.Process()
        proc.cpu_percent()
        while not stop.wait(2.0):
            now_ns = time.time_ns()
            cpu = proc.cpu_percent()
            with lock:
                samples = []
                for w, c in counters.items():
                    lag = max(c["lag"]) if c["lag"] else None
                    samples.append(LoadgenSample(RUN_ID, sc.name, f"w{w}", users=2,
                                                 active_sessions=c["active"], arrivals_due=c["due"],
                                                 arrivals_started=c["started"], late_starts=c["late"],
                                                 send_lag_p99_ms=lag, cpu_pct=cpu,
                                                 extra={"no_slot": 0, "overloaded": 0}))
                    c.update(due=0, started=0, late=0, lag=[])
            tot = LoadgenSample(RUN_ID, sc.name, "all", users=2 * workers,
                                active_sessions=sum(s.active_sessions for s in samples),
                                arrivals_due=sum(s.arrivals_due for s in samples),
                                arrivals_started=sum(s.arrivals_started for s in samples),
                                late_starts=sum(s.late_starts for s in samples),
                                send_lag_p99_ms=max((s.send_lag_p99_ms or 0) for s in samples),
                                cpu_pct=cpu, extra={"no_slot": 0, "overloaded": 0})
            rec.write([s.point(now_ns) for s in (*samples, tot)])

    rep = threading.Thread(target=reporter, daemon=True)
    rep.start()
    ws = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(workers)]
    for th in ws:
        th.start()
    for th in ws:
        th.join(40)
    time.sleep(2.1)  # one more report after the last session
    stop.set()
    rep.join(5)
    assert rec.close(timeout=20), "load points not delivered"


def _load_cli_available() -> bool:
    r = subprocess.run([sys.executable, "-m", "voicepulse", "load", "--help"], capture_output=True,
                       timeout=30)
    return r.returncode == 0


@pytest.fixture(scope="module")
def written(influxd):
    """Writes the probe series and the load run; returns the time range that holds them."""
    influxd.create_database(DB)
    tmp = Path(tempfile.mkdtemp(prefix="vp-dash-"))
    with SimProcess(args=["--reply-s", "0.6"]) as sim:
        sim.fault(kind="http_status", status=500, probability=0.3)
        t0_ms = int(time.time() * 1000)
        cfg = tmp / "voicepulse.yaml"
        cfg.write_text(PROBE_CONFIG.format(ws=sim.ws_url, influx=influxd.url, db=DB, dir=tmp))
        env = {**os.environ, "SIM_API_KEY": "k"}
        serve = subprocess.Popen([sys.executable, "-m", "voicepulse", "serve", "--config", str(cfg),
                                  "--duration", f"{SERVE_S}s"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _mini_load_run(sim.ws_url, influxd.url, tmp)
            out, _ = serve.communicate(timeout=SERVE_S + 40)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait(5)
        assert serve.returncode == 0, out[-2000:]
    to_ms = int(time.time() * 1000) + 1000
    for m in ("turn", "session", "latency", "loadgen", "alert"):
        assert influxd.rows(f'SELECT count(*) FROM "{m}"', DB), f"nothing written to {m}"
    return t0_ms - 60_000, to_ms


_LEFT = re.compile(r"\$(?!tag_)\w|\$\{|\[\[")  # a variable or macro left uninterpolated


def _run(influxd, q: str) -> tuple[list[dict], str | None]:
    res = influxd.query(q, DB)["results"][0]
    return res.get("series") or [], res.get("error")


def _problems(series: list[dict], pq: g.PanelQuery) -> list[str]:
    """Why the answer would leave the panel empty or without a column it reads."""
    rows = [r for s in series for r in s["values"]]
    if not rows:
        return ["no series / no rows"]
    out = []
    for col in pq.columns:
        have = [s for s in series if col in s["columns"]]
        if not have:
            out.append(f"column {col!r} missing (have {series[0]['columns']})")
        elif all(r[s["columns"].index(col)] is None for s in have for r in s["values"]):
            out.append(f"column {col!r} all null")
    for tag in pq.tags:
        # influxd answers GROUP BY tags as series tags; Grafana's table format turns them into
        # columns, so the same check holds for both formats
        if not all(tag in (s.get("tags") or {}) for s in series):
            out.append(f"tag {tag!r} not in every series (GROUP BY it)")
    return out


def _selections(influxd, dash: dict, ctx: g.Context, mode: str) -> None:
    """Fill ctx.selections like a dashboard load: each query variable runs its own (already
    interpolated) SHOW TAG VALUES and must offer values; `mode` all = every multi variable on
    All, one = a single concrete value each."""
    for var in dash["templating"]["list"]:
        ctx.variables[var["name"]] = var
        if var["type"] == "custom":
            opts = [o["value"] for o in var["options"]]
            if mode == "all" and var.get("includeAll"):
                ctx.selections[var["name"]] = g.Selection([".*"], all=True)
            else:
                ctx.selections[var["name"]] = g.Selection([var["current"]["value"]])
            assert var["current"]["value"] in opts
            continue
        series, err = _run(influxd, ctx.expand(var["query"]))
        assert err is None, (var["name"], err)
        values = [v[1] for s in series for v in s["values"]]
        assert values, f"variable {var['name']} offers no value: {ctx.expand(var['query'])}"
        if var["name"] == "run_id":
            assert RUN_ID in values
            ctx.selections["run_id"] = g.Selection([RUN_ID])
        elif mode == "all" and var.get("includeAll"):
            ctx.selections[var["name"]] = g.Selection(values, all=True)
        else:
            ctx.selections[var["name"]] = g.Selection([sorted(values)[0]])


@pytest.mark.parametrize("mode", ["all", "one"])
def test_every_panel_query_returns_what_its_panel_reads(influxd, written, mode):
    from_ms, to_ms = written
    report, failures, weaker = [], [], []
    for name, dash in g.load_dashboards().items():
        ctx = g.Context(from_ms, to_ms)
        _selections(influxd, dash, ctx, mode)
        for pq in g.panel_queries(name, dash) + g.annotation_queries(name, dash):
            q = ctx.expand(pq.query, pq.min_interval)
            assert not _LEFT.search(q), f"{pq.where}: uninterpolated: {q}"
            series, err = _run(influxd, q)
            if err:
                failures.append(f"{pq.where}: error {err}: {q}")
                continue
            problems = _problems(series, pq)
            why = next((w for k, w in WEAKER.items() if k in pq.where), None)
            if problems and why:
                series, err = _run(influxd, q.replace(why[1], ""))
                problems = [f"(weaker) {p}" for p in _problems(series, pq)] if not err else [err]
                weaker.append(f"{pq.where}: {why[0]}")
            if problems:
                failures.append(f"{pq.where}: {'; '.join(problems)}: {q}")
            report.append(f"{sum(len(s['values']) for s in series):5d} rows  {pq.where}")
    print(f"\n[{mode}] {len(report)} queries run against influxd:\n  " + "\n  ".join(report))
    if weaker:
        print("checked in a weaker form:\n  " + "\n  ".join(weaker))
    assert len(report) >= 35
    assert not failures, "\n".join(failures)


def test_interpolation_formats_like_grafana():
    var = {"name": "target", "multi": True, "includeAll": True, "allValue": ".*"}
    assert g.format_variable(var, g.Selection(["a.b"])) == r"a\.b"
    assert g.format_variable(var, g.Selection(["a", "b/c"])) == r"(a|b\/c)"
    assert g.format_variable(var, g.Selection(["a", "b"], all=True)) == ".*"
    single = {"name": "run_id", "multi": False, "includeAll": False}
    assert g.format_variable(single, g.Selection(["r.1"])) == "r.1"
    ctx = g.Context(1_000_000, 1_000_000 + 3_600_000, {"target": var},
                    {"target": g.Selection(["x"])})
    q = ctx.expand('SELECT * FROM m WHERE "t" =~ /^$target$/ AND $timeFilter '
                   "GROUP BY time($__interval) $__interval_ms ${__from} $__to [[target]]")
    assert q == ('SELECT * FROM m WHERE "t" =~ /^x$/ AND time >= 1000000ms and time <= 4600000ms '
                 "GROUP BY time(10s) 10000 1000000 4600000 x")
    # a 7-day range at ~1000 points widens the bucket past the 10 s floor, as Grafana does
    assert g.panel_interval_ms(0, 7 * 86_400_000, "10s") == 600_000


def test_every_alert_rule_query_answers_per_target(influxd, written):
    _, to_ms = written
    report, failures = [], []
    for title, _rule, queries in g.rule_queries():
        values = {}
        for q in queries:
            ctx = g.Context(to_ms - q["relativeTimeRange"]["from"] * 1000,
                            to_ms - q["relativeTimeRange"]["to"] * 1000)
            text = ctx.expand(q["model"]["query"])
            assert not _LEFT.search(text), text
            series, err = _run(influxd, text)
            if err or not series:
                failures.append(f"{title} / {q['refId']}: {err or 'no series'}: {text}")
                continue
            # reduce(last) per series, keyed by its labels, as the rule's expressions do
            values[q["refId"]] = {tuple(sorted((s.get("tags") or {}).items())): s["values"][-1][1]
                                  for s in series}
            report.append(f"{title} / {q['refId']}: {values[q['refId']]}")
        if len(values) == len(queries) and len(queries) == 2:
            a, b = values.values()
            assert set(a) & set(b), f"{title}: the two windows share no target, math has no pair"
        for v in values.values():
            assert all(isinstance(x, (int, float)) for x in v.values()), (title, v)
    print("\nalert rule queries:\n  " + "\n  ".join(report))
    assert not failures, "\n".join(failures)


def test_the_check_reports_a_missing_column_tag_or_empty_answer():
    """_problems is not vacuous: wrong column, missing GROUP BY tag, or no rows all fail."""
    series = [{"name": "m", "columns": ["time", "p95"], "values": [[1, 3.0]]}]
    pq = g.PanelQuery("x", "q", "time_series", ["p95"], [])
    assert _problems(series, pq) == []
    assert _problems(series, g.PanelQuery("x", "q", "time_series", ["p99"], []))
    assert _problems(series, g.PanelQuery("x", "q", "time_series", ["p95"], ["target"]))
    assert _problems([], pq) == ["no series / no rows"]
    nulls = [{"name": "m", "columns": ["time", "p95"], "values": [[1, None]]}]
    assert _problems(nulls, pq)
