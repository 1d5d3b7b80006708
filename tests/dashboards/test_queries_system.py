"""Every dashboard and alert-rule query, run against a real influxd 1.6.7 holding real data.

A probe series (`voicepulse serve` against the simulator, with a 30 % HTTP 500 fault so failures
have an error class and a threshold rule that fires so there is an `alert` point) and a short
load run (`voicepulse load --processes 2`, the generator's overload bound set so low that it
flags itself) against the same simulator write into the database at the same time. Then every panel target, template
variable, annotation and alert-rule query is extracted from the JSON/YAML, interpolated the way
Grafana does (template variables with values read from the written data; $timeFilter,
$__interval, $__interval_ms, $__from/$__to) and run. Each must answer without error, with
non-empty series carrying the columns and tags its panel reads. No query is exempt.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
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

LOAD_CONFIG = """
targets:
  sim-fast: {{url: "{ws}/v1/realtime", model: sim-fast, api_key_env: SIM_API_KEY, instructions: "Be brief."}}
scenarios:
  load-demo: {{turns: 1, utterance_s: 0.5, trailing_silence_s: 0.6}}
sinks:
  - {{type: influx, api: v1, url: "{influx}", database: {db}}}
outbox: {dir}/load-outbox
# 2 s intervals so a short run has several; an absurdly low lag bound makes the generator mark
# itself overloaded for real, so the overload marker and annotation have data to show
load: {{interval: 2s, overload_lag_ms: 0.001, drain: 10s}}
"""
LOAD_ARGS = ["sim-fast", "--scenario", "load-demo", "--rate", "3", "--duration", "6s",
             "--processes", "2", "--run-id", RUN_ID]


@pytest.fixture(scope="module")
def written(influxd):
    """Writes the probe series and the load run; returns the time range that holds them."""
    influxd.create_database(DB)
    tmp = Path(tempfile.mkdtemp(prefix="vp-dash-"))
    with SimProcess(args=["--reply-s", "0.6"]) as sim:
        sim.fault(kind="http_status", status=500, probability=0.3)
        t0_ms = int(time.time() * 1000)
        fmt = {"ws": sim.ws_url, "influx": influxd.url, "db": DB, "dir": tmp}
        (tmp / "probe.yaml").write_text(PROBE_CONFIG.format(**fmt))
        (tmp / "load.yaml").write_text(LOAD_CONFIG.format(**fmt))
        env = {**os.environ, "SIM_API_KEY": "k"}
        cli = [sys.executable, "-m", "voicepulse"]
        procs = {
            "serve": subprocess.Popen([*cli, "serve", "--config", str(tmp / "probe.yaml"),
                                       "--duration", f"{SERVE_S}s"], env=env, cwd=tmp,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            "load": subprocess.Popen([*cli, "load", "--config", str(tmp / "load.yaml"), *LOAD_ARGS],
                                     env=env, cwd=tmp, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True),
        }
        try:
            for name, p in procs.items():
                out, _ = p.communicate(timeout=SERVE_S + 45)
                assert p.returncode == 0, f"voicepulse {name} exited {p.returncode}:\n{out[-3000:]}"
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
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
    report, failures = [], []
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
            if problems:
                failures.append(f"{pq.where}: {'; '.join(problems)}: {q}")
            report.append(f"{sum(len(s['values']) for s in series):5d} rows  {pq.where}")
    print(f"\n[{mode}] {len(report)} queries run against influxd:\n  " + "\n  ".join(report))
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
