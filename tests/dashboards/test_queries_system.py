"""Every dashboard and alert-rule query, run against a real influxd 1.6.7 holding real data.

A probe series (`voicepulse serve` against the simulator, with a 30 % HTTP 500 fault and two
forced HTTP 503s so failures have error classes, and a threshold rule that fires so there is an `alert` point) and a short
load run (`voicepulse load --processes 2`, the generator's overload bound set so low that it
flags itself) against the same simulator write into the database at the same time, and so do
scripted probe sessions (a tool lookup, a barge-in, transcription scored for WER) recorded through
telemetry's Recorder, for the "Voice scenarios" panels. Then every panel target, template
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
import threading
import time
import wave
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


TOOLS = [{"type": "function", "name": "lookup_order", "description": "Find an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                         "required": ["order_id"]}}]
SCRIPT = [
    {"say": {"wav": "ask.wav", "transcript": "where is my order A1234 please"}},
    {"expect_tool": {"name": "lookup_order", "args": {"order_id": "A1234"}}},
    {"tool_result": {"output": {"status": "shipped"}, "delay_ms": 100}},
    "wait_reply",
    {"say": 0.6},
    {"interrupt_after": {"ms": 100, "say": {"duration": 0.5}}},
    "wait_reply",
]


def _has_scenario_data(r) -> bool:
    return r.ok and all(any(getattr(t, m) is not None for t in r.turns)
                        for m in ("barge_in_ms", "tool_ms", "wer"))


def _scripted_probes(ws: str, influx_url: str, tmp: Path, box: dict) -> None:
    """Scripted probe sessions as `voicepulse serve` would record them (sim-fast, agent
    test-agent), written to influxd through a Recorder; repeated until one carries barge-in,
    tool and WER values (the 30 % HTTP 500 fault may refuse a session)."""
    from probes import audio
    from probes.script import parse_script
    from probes.session import run_session
    from probes.spec import Scenario, Target
    from telemetry.recorder import Recorder
    from telemetry.sinks import InfluxV1Sink
    from telemetry.wiring import build_sink

    pcm = audio.speech(1.2, 16000, seed=3)
    with wave.open(str(tmp / "ask.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())
    sc = Scenario(name="support", trailing_silence_s=0.6, tools=TOOLS,
                  transcription_model="whisper-1",
                  script=parse_script(SCRIPT, None, base_dir=str(tmp)))
    tgt = Target("sim-fast", ws + "/v1/realtime", "sim-fast", simulator_hints=True)
    sink = build_sink([InfluxV1Sink(influx_url, DB)], outbox_dir=str(tmp / "scenario-outbox"))
    rec = Recorder(sink, interval_s=2.0)
    try:
        for _ in range(8):
            r = run_session(tgt, sc, api_key="k", kind="probe", agent="test-agent")
            rec.record(r)
            box.setdefault("results", []).append(r)
            if _has_scenario_data(r):
                break
    finally:
        box["delivered"] = rec.close(timeout=20)


class Written(tuple):
    """(from_ms, to_ms) around the written data, plus each command's output (`outputs`)."""

    outputs: dict[str, str]
    scripted: list  # the scripted probe sessions' SessionResults


@pytest.fixture(scope="module")
def written(influxd):
    """Writes the probe series and the load run; returns the time range that holds them."""
    influxd.create_database(DB)
    tmp = Path(tempfile.mkdtemp(prefix="vp-dash-"))
    with SimProcess(args=["--reply-s", "0.6"]) as sim:
        sim.fault(kind="http_status", status=500, probability=0.3)
        # and sim-slow's first two sessions fail for sure: a second error class, and a
        # failure share (>= 2 of at most ~8 probes) above every availability burn limit
        sim.fault(kind="http_status", status=503, count=2, models=["sim-slow"])
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
        scripted: dict = {}
        th = threading.Thread(target=_scripted_probes, args=(sim.ws_url, influxd.url, tmp, scripted),
                              daemon=True)
        th.start()
        outputs = {}
        try:
            th.join(timeout=SERVE_S + 45)
            assert not th.is_alive() and scripted.get("delivered"), "scripted probes unfinished"
            assert any(_has_scenario_data(r) for r in scripted["results"]), scripted["results"]
            for name, p in procs.items():
                out, _ = p.communicate(timeout=SERVE_S + 45)
                outputs[name] = out
                assert p.returncode == 0, f"voicepulse {name} exited {p.returncode}:\n{out[-3000:]}"
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
    to_ms = int(time.time() * 1000) + 1000
    for m in ("turn", "session", "latency", "loadgen", "alert"):
        assert influxd.rows(f'SELECT count(*) FROM "{m}"', DB), f"nothing written to {m}"
    w = Written((t0_ms - 60_000, to_ms))
    w.outputs = outputs
    w.scripted = scripted["results"]
    return w


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


# -- the numbers, not just their presence ------------------------------------------------------


def _nearest_rank(values: list[float], p: float) -> float:
    """InfluxQL's percentile(): the value at rank floor(n * p / 100 + 0.5) of the sorted list."""
    v = sorted(values)
    return v[max(0, min(len(v), int(len(v) * p / 100 + 0.5)) - 1)]


def _panel(name: str, title: str) -> dict:
    return next(p for p in g.all_panels(g.load_dashboards()[name]) if p["title"] == title)


def _ctx_all(influxd, name: str, from_ms: int, to_ms: int) -> g.Context:
    ctx = g.Context(from_ms, to_ms)
    _selections(influxd, g.load_dashboards()[name], ctx, "all")
    return ctx


def _by_target(influxd, q: str) -> dict[str, dict]:
    series, err = _run(influxd, q)
    assert err is None, err
    return {s["tags"]["target"]: dict(zip(s["columns"], s["values"][0], strict=True))
            for s in series}


def test_panel_numbers_match_the_raw_points(influxd, written):
    """Availability and comparison panels compute what their titles say: checked against
    the raw session/turn points, computed here in Python."""
    from_ms, to_ms = written
    raw = influxd.rows(f'SELECT "ok", "target" FROM "session" WHERE time >= {from_ms}ms '
                       f"AND time <= {to_ms}ms AND \"kind\" = 'probe'", DB)
    runs: dict[str, list[int]] = {}
    for r in raw:
        runs.setdefault(r["target"], []).append(r["ok"])
    assert set(runs) == {"sim-fast", "sim-slow"} and all(len(v) >= 2 for v in runs.values())

    ctx = _ctx_all(influxd, "availability.json", from_ms, to_ms)
    ctx.selections["kind"] = g.Selection(["probe"])  # the dashboard's default
    ratio = _by_target(influxd, ctx.expand(_panel("availability.json", "Success ratio")["targets"][0]["query"]))
    status = _by_target(influxd, ctx.expand(_panel("availability.json", "Status by target")["targets"][0]["query"]))
    for t, oks in runs.items():
        assert ratio[t]["mean"] == pytest.approx(100 * sum(oks) / len(oks))
        assert status[t]["runs"] == len(oks) and status[t]["errors"] == len(oks) - sum(oks)
        assert status[t]["uptime"] == pytest.approx(100 * sum(oks) / len(oks))

    turns = influxd.rows(f'SELECT "ttfa_ms", "target" FROM "turn" WHERE time >= {from_ms}ms '
                         f"AND time <= {to_ms}ms AND \"kind\" = 'probe'", DB)
    ttfa: dict[str, list[float]] = {}
    for r in turns:
        if r["ttfa_ms"] is not None:
            ttfa.setdefault(r["target"], []).append(r["ttfa_ms"])
    cmp_ctx = _ctx_all(influxd, "comparison.json", from_ms, to_ms)
    cmp_ctx.selections["kind"] = g.Selection(["probe"])
    bars = _by_target(influxd, cmp_ctx.expand(_panel("comparison.json", "TTFA p50 / p95")["targets"][0]["query"]))
    for t, vals in ttfa.items():
        assert bars[t]["p50"] == pytest.approx(_nearest_rank(vals, 50))
        assert bars[t]["p95"] == pytest.approx(_nearest_rank(vals, 95))
    # the slow profile is slower: the comparison shows the difference it exists to show
    assert bars["sim-slow"]["p50"] > bars["sim-fast"]["p50"]


def test_load_panels_agree_with_the_run_summary(influxd, written):
    """What the load dashboard shows for the run equals what `voicepulse load` printed."""
    from_ms, to_ms = written
    out = written.outputs["load"]
    m = re.search(r"sessions (\d+) ok (\d+) failed (\d+)", out)
    a = re.search(r"arrivals due (\d+) started (\d+) late (\d+)", out)
    assert m and a, out[-2000:]
    sessions, ok = int(m.group(1)), int(m.group(2))
    ctx = _ctx_all(influxd, "load-run.json", from_ms, to_ms)
    totals = _panel("load-run.json", "Run totals")["targets"][0]["query"]
    (row,) = [r for s in _run(influxd, ctx.expand(totals))[0] for r in s["values"]]
    assert row[1] == sessions
    assert row[2] == pytest.approx(100 * (1 - ok / sessions))
    arrivals = _panel("load-run.json", "Arrivals due vs started, late starts")["targets"][0]["query"]
    series, _ = _run(influxd, ctx.expand(arrivals))
    cols = series[0]["columns"]
    sums = {c: sum(r[cols.index(c)] or 0 for r in series[0]["values"]) for c in ("due", "started", "late")}
    assert (sums["due"], sums["started"], sums["late"]) == tuple(int(x) for x in a.groups())
    over = _panel("load-run.json", "Send lag p99 per worker")["targets"][1]["query"]
    series, _ = _run(influxd, ctx.expand(over))
    assert any(r[1] == 1 for r in series[0]["values"])  # the run flagged itself overloaded


def _evaluate(rule: dict, values: dict[str, dict]) -> dict[tuple, bool]:
    """Grafana's reduce(last) -> math / threshold chain of our rules, per label set."""
    nodes = {d["refId"]: d["model"] for d in rule["data"]}
    reduced: dict[str, dict] = {}
    for ref, mdl in nodes.items():
        if mdl.get("type") == "reduce":
            reduced[ref] = values[mdl["expression"]]
    cond = nodes[rule["condition"]]
    if cond["type"] == "threshold":
        limit = cond["conditions"][0]["evaluator"]["params"][0]
        return {k: v > limit for k, v in reduced[cond["expression"]].items()}
    m = re.fullmatch(r"\$(\w) > ([\d.]+) && \$(\w) > ([\d.]+)", cond["expression"])
    assert m, cond["expression"]
    a, la, b, lb = m.group(1), float(m.group(2)), m.group(3), float(m.group(4))
    return {k: reduced[a][k] > la and reduced[b][k] > lb for k in reduced[a].keys() & reduced[b].keys()}


def test_alert_rules_fire_where_the_raw_data_says(influxd, written):
    """Evaluated on the written data, the availability burn and error-rate rules fire for
    exactly the targets whose raw failure share is above their limits."""
    _, to_ms = written
    raw = influxd.rows("SELECT \"ok\", \"target\" FROM \"session\" WHERE \"kind\" = 'probe'", DB)
    share: dict[str, list[int]] = {}
    for r in raw:
        share.setdefault(r["target"], []).append(1 - r["ok"])
    bad = {t: sum(v) / len(v) for t, v in share.items()}
    rules = {r["uid"]: r for _, r, _ in g.rule_queries()}
    for uid, limit in (("vp-availability-burn-fast", 14.4 * 0.005), ("vp-error-rate-threshold", 0.05)):
        rule = rules[uid]
        values = {}
        for d in rule["data"]:
            if d["datasourceUid"] == "__expr__":
                continue
            ctx = g.Context(to_ms - d["relativeTimeRange"]["from"] * 1000, to_ms)
            series, err = _run(influxd, ctx.expand(d["model"]["query"]))
            assert err is None
            values[d["refId"]] = {tuple(sorted(s["tags"].items())): s["values"][-1][1] for s in series}
        firing = _evaluate(rule, values)
        expect = {(("target", t),): b > limit for t, b in bad.items()}
        assert firing == expect, (uid, firing, bad)
        assert firing[(("target", "sim-slow"),)], "the forced failures must make it fire"


def _buckets(influxd, q: str) -> dict[tuple[str, int], float]:
    series, err = _run(influxd, q)
    assert err is None, err
    return {(s["tags"]["target"], r[0]): r[1] for s in series for r in s["values"]
            if r[1] is not None}


def test_voice_scenario_panels_show_the_scripted_sessions(influxd, written):
    """The collapsed "Voice scenarios" row: WER mean and failed checks per bucket equal the raw
    turn points bucketed here; the p95 lines reach the scripted sessions' own values."""
    from_ms, to_ms = written
    ctx = _ctx_all(influxd, "availability.json", from_ms, to_ms)
    ctx.selections["kind"] = g.Selection(["probe"])
    dash = g.load_dashboards()["availability.json"]
    (row,) = [p for p in dash["panels"] if p.get("title") == "Voice scenarios"]
    assert row["type"] == "row" and row["collapsed"] and len(row["panels"]) == 3
    step_ms = g.panel_interval_ms(from_ms, to_ms, "10s")
    raw = influxd.rows(f'SELECT "wer", "checks_failed", "target" FROM "turn" WHERE time >= '
                       f"{from_ms}ms AND time <= {to_ms}ms AND \"kind\" = 'probe'", DB)
    for title, field, combine in (("Word error rate (mean)", "wer", lambda v: sum(v) / len(v)),
                                  ("Failed scenario checks", "checks_failed", sum)):
        want: dict[tuple[str, int], list] = {}
        for r in raw:
            if r[field] is not None:
                t_ms = int(r["time"]) // 1_000_000
                want.setdefault((r["target"], (t_ms // step_ms) * step_ms * 1_000_000), []).append(r[field])
        assert want, f"no raw {field}"
        got = _buckets(influxd, ctx.expand(_panel("availability.json", title)["targets"][0]["query"]))
        assert got.keys() == want.keys(), title
        for k, vals in want.items():
            assert got[k] == pytest.approx(combine(vals)), (title, k)
    failed = sum(sum(not ok for ok in t.checks.values()) for r in written.scripted for t in r.turns)
    assert sum(v for (t, _), v in got.items() if t == "sim-fast") == failed
    latency = _panel("availability.json", "Barge-in and tool-call p95")
    for tq, metric in zip(latency["targets"], ("barge_in_ms", "tool_ms", "tool_result_ms"), strict=True):
        got = _buckets(influxd, ctx.expand(tq["query"]))
        values = [getattr(t, metric) for r in written.scripted for t in r.turns
                  if getattr(t, metric) is not None]
        assert values, metric
        # every bucket holds at most a few values, so its p95 is its largest (HDR: 3 s.f.)
        assert max(got.values()) == pytest.approx(max(values), rel=1e-3), metric
