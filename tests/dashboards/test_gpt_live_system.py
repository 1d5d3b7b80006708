"""GPT-Live end to end into a real influxd 1.6.7 (issue 15): `voicepulse serve` probing an
openai-live target and `voicepulse load --processes 2` against the same target, both against
the simulator's /v1/live/sessions and both writing to influxd at the same time.

Then the stored points are checked (provider tag, the audible TTFA, per-second cost), the
dashboard queries a GPT-Live target feeds (TTFA audible, TTFA p50/p95, turn p95, cost per audio
minute, status by target) are replayed the way Grafana sends them and must return the values
computed here from the raw points, and the load run's merged summary must equal the sum of its
two workers' loadgen points, the store's session and turn points, and what the simulator saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from probes import prices
from tests.dashboards import grafana as g
from tests.dashboards import test_queries_system as replay
from tests.dashboards.test_queries_system import _ctx_all, _nearest_rank, _panel, _run
from tests.sim_server import SimProcess

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

DB = "vp_gpt_live"
RUN_ID = "live-run-1"
MODEL = "sim-live-fast"  # priced per second like gpt-live-1 (probes/prices.py)
LOAD_MODEL = "sim-live-load"  # the load run's own model, so the simulator's truth tells it apart
SERVE_S = 12
LIVE = ('{{provider: openai-live, url: "{ws}/v1/live/sessions", model: %s, '
        'api_key_env: SIM_API_KEY, instructions: "Be brief."}}')
PROBE_CONFIG = """
agent: live-agent
targets:
  gpt-live: """ + LIVE % MODEL + """
scenarios:
  default: {{turns: 2, utterance_s: 0.6, pause_s: 0.1, quiet_ms: 400}}
sinks:
  - {{type: influx, api: v1, url: "{influx}", database: {db}}}
outbox: {dir}/outbox
probes:
  - {{target: gpt-live, every: 2s}}
status: {{port: 0}}
"""
LOAD_CONFIG = """
targets:
  gpt-live: """ + LIVE % LOAD_MODEL + """
scenarios:
  live-load: {{turns: 1, utterance_s: 0.5, quiet_ms: 400}}
sinks:
  - {{type: influx, api: v1, url: "{influx}", database: {db}}}
outbox: {dir}/load-outbox
load: {{interval: 2s, drain: 15s}}
"""
RATE, DURATION_S = 2, 4
LOAD_ARGS = ["gpt-live", "--scenario", "live-load", "--rate", str(RATE), "--duration",
             f"{DURATION_S}s", "--processes", "2", "--run-id", RUN_ID]


@pytest.fixture(autouse=True)
def _replay_on_our_database(monkeypatch):
    """The dashboard replay helpers of test_queries_system, pointed at this module's database."""
    monkeypatch.setattr(replay, "DB", DB)


@pytest.fixture(scope="module")
def written(influxd):
    influxd.create_database(DB)
    tmp = Path(tempfile.mkdtemp(prefix="vp-live-"))
    with SimProcess(["--ttfa-ms", "150", "--reply-s", "0.6"]) as sim:
        t0_ms = int(time.time() * 1000)
        fmt = {"ws": sim.ws_url, "influx": influxd.url, "db": DB, "dir": tmp}
        (tmp / "probe.yaml").write_text(PROBE_CONFIG.format(**fmt))
        (tmp / "load.yaml").write_text(LOAD_CONFIG.format(**fmt))
        env = {**os.environ, "SIM_API_KEY": "k"}
        cli = [sys.executable, "-m", "voicepulse"]
        summary = tmp / "summary.json"
        procs = {
            "serve": subprocess.Popen([*cli, "serve", "--config", str(tmp / "probe.yaml"),
                                       "--duration", f"{SERVE_S}s"], env=env, cwd=tmp,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            "load": subprocess.Popen([*cli, "load", "--config", str(tmp / "load.yaml"), *LOAD_ARGS,
                                      "--summary-json", str(summary)],
                                     env=env, cwd=tmp, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True),
        }
        outputs = {}
        try:
            for name, p in procs.items():
                out, _ = p.communicate(timeout=SERVE_S + 60)
                outputs[name] = out
                assert p.returncode == 0, f"voicepulse {name} exited {p.returncode}:\n{out[-3000:]}"
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
        truth = sim.truth(model=LOAD_MODEL)
    to_ms = int(time.time() * 1000) + 1000
    return {"range": (t0_ms - 60_000, to_ms), "outputs": outputs, "truth": truth,
            "summary": json.loads(summary.read_text())}


def _where(from_ms: int, to_ms: int, kind: str) -> str:
    return f"time >= {from_ms}ms AND time <= {to_ms}ms AND \"kind\" = '{kind}'"


def test_serve_stores_gpt_live_probes_with_audible_ttfa_and_per_second_cost(influxd, written):
    from_ms, to_ms = written["range"]
    sessions = influxd.rows(f'SELECT * FROM "session" WHERE {_where(from_ms, to_ms, "probe")}', DB)
    assert len(sessions) >= 3, written["outputs"]["serve"][-2000:]
    assert {(s["target"], s["provider"], s["model"], s["agent"]) for s in sessions} == {
        ("gpt-live", "openai-live", MODEL, "live-agent")}
    assert all(s["ok"] == 1 and s["turns_ok"] == 2 for s in sessions), sessions
    per_s = prices.second_price_for(MODEL).active_per_min / 60
    for s in sessions:
        # billed by the second of session, silence included: the server's usage seconds (the
        # simulator reports whole seconds since session.started, so not our fractional wall
        # time), about the session's length and at least its two turns and replies
        billed_s = s["cost_usd"] / per_s
        assert billed_s == pytest.approx(round(billed_s), abs=1e-6), billed_s
        assert abs(billed_s - s["duration_s"]) <= 0.6 and billed_s >= 2 * (0.6 + 0.6), (
            billed_s, s["duration_s"])
    turns = influxd.rows(f'SELECT * FROM "turn" WHERE {_where(from_ms, to_ms, "probe")}', DB)
    assert len(turns) == 2 * len(sessions)
    for t in turns:
        assert t["provider"] == "openai-live"
        assert t["ttfa_ms"] is not None and t["ttfa_ms"] == t["ttfa_audible_ms"]  # the onset
        assert t["ttfa_ms"] >= 150  # the simulator's TTFA, from the end of speech it heard
        assert t.get("vad_ms") is None  # GPT-Live has no VAD event
        assert t["turn_ms"] > t["ttfa_ms"]


def test_gpt_live_dashboard_queries_return_the_stored_values(influxd, written):
    from_ms, to_ms = written["range"]
    turns = influxd.rows(f'SELECT "ttfa_audible_ms", "ttfa_ms", "turn_ms", "target" FROM "turn" '
                         f'WHERE {_where(from_ms, to_ms, "probe")}', DB)
    audible = [t["ttfa_audible_ms"] for t in turns]
    assert len(audible) >= 6

    # availability: "TTFA audible" p50/p95 = max() of the stored latency percentiles per bucket
    ctx = _ctx_all(influxd, "availability.json", from_ms, to_ms)
    ctx.selections["kind"] = g.Selection(["probe"])
    step_ms = g.panel_interval_ms(from_ms, to_ms, "10s")
    raw = influxd.rows('SELECT "p50", "p95", "count", "target" FROM "latency" WHERE '
                       f"{_where(from_ms, to_ms, 'probe')} AND \"metric\" = 'ttfa_audible_ms'", DB)
    assert sum(r["count"] for r in raw) == len(audible)  # every turn's onset in the histograms
    want: dict[int, list] = {}
    for r in raw:
        b = (int(r["time"]) // 1_000_000 // step_ms) * step_ms * 1_000_000
        want.setdefault(b, []).append(r)
    title = "TTFA audible (first sound past the gate) p50 / p95"
    series, err = _run(influxd, ctx.expand(_panel("availability.json", title)["targets"][0]["query"]))
    assert err is None and [s["tags"]["target"] for s in series] == ["gpt-live"]
    got = {row[0]: row[1:] for row in series[0]["values"] if row[1] is not None}
    assert got.keys() == want.keys()
    for b, rows in want.items():
        assert got[b] == [max(r["p50"] for r in rows), max(r["p95"] for r in rows)]
    # and those percentiles are of the turns' own onsets (HDR: 3 significant figures)
    assert max(v[1] for v in got.values()) == pytest.approx(max(audible), rel=1e-3)

    # comparison: TTFA p50/p95 (exact, over the turns) and turn p95; cost per audio minute
    cmp_ctx = _ctx_all(influxd, "comparison.json", from_ms, to_ms)
    cmp_ctx.selections["kind"] = g.Selection(["probe"])

    def one(title: str) -> list:
        q = cmp_ctx.expand(_panel("comparison.json", title)["targets"][0]["query"])
        series, err = _run(influxd, q)
        assert err is None and [s["tags"]["target"] for s in series] == ["gpt-live"], (err, q)
        return series[0]["values"][0][1:]

    assert one("TTFA p50 / p95") == [_nearest_rank(audible, 50), _nearest_rank(audible, 95)]
    assert one("Turn p95") == [_nearest_rank([t["turn_ms"] for t in turns], 95)]
    sessions = influxd.rows('SELECT "cost_usd", "audio_s" FROM "session" WHERE '
                            f'{_where(from_ms, to_ms, "probe")}', DB)
    (usd_min,) = one("Cost per audio minute")
    assert usd_min == pytest.approx(60 * sum(s["cost_usd"] for s in sessions)
                                    / sum(s["audio_s"] for s in sessions))
    assert usd_min > 0

    # availability: status by target (runs, uptime) and its exact TTFA percentiles
    status = _panel("availability.json", "Status by target")["targets"]
    series, _ = _run(influxd, ctx.expand(status[0]["query"]))
    row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=True))
    assert (row["runs"], row["errors"], row["uptime"]) == (len(sessions), 0, 100)
    series, _ = _run(influxd, ctx.expand(status[1]["query"]))
    row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=True))
    assert [row["ttfa_p50"], row["ttfa_p95"]] == [_nearest_rank(audible, 50),
                                                  _nearest_rank(audible, 95)]


def test_load_over_two_processes_merges_to_the_workers_and_the_store(influxd, written):
    from_ms, to_ms = written["range"]
    s = written["summary"]
    c = s["counters"]
    assert s["workers"] == 2
    assert c["arrivals_due"] == RATE * DURATION_S == c["arrivals_started"] == c["sessions"]
    assert c["sessions_ok"] == c["sessions"] and c["turns"] == c["turns_ok"] == c["sessions"]
    per_worker = {r["worker"]: r for r in influxd.rows(
        'SELECT sum("sessions") AS "sessions", sum("arrivals_due") AS "due", '
        'sum("arrivals_started") AS "started" FROM "loadgen" WHERE '
        f"time >= {from_ms}ms AND time <= {to_ms}ms AND \"run_id\" = '{RUN_ID}' GROUP BY \"worker\"",
        DB)}
    assert set(per_worker) == {"worker-0", "worker-1", "all"}, per_worker
    w0, w1, merged = (per_worker[w] for w in ("worker-0", "worker-1", "all"))
    assert w0["sessions"] > 0 and w1["sessions"] > 0  # both workers ran GPT-Live sessions
    for k, total in (("sessions", c["sessions"]), ("due", c["arrivals_due"]),
                     ("started", c["arrivals_started"])):
        assert w0[k] + w1[k] == merged[k] == total, k
    where = _where(from_ms, to_ms, "load") + f" AND \"run_id\" = '{RUN_ID}'"
    stored = influxd.rows(f'SELECT "session_id", "provider", "turns" FROM "session" WHERE {where}',
                          DB)
    assert len(stored) == c["sessions"] and {r["provider"] for r in stored} == {"openai-live"}
    assert sum(r["turns"] for r in stored) == c["turns"]
    turns = influxd.rows(f'SELECT "ttfa_ms", "ttfa_audible_ms" FROM "turn" WHERE {where}', DB)
    assert len(turns) == c["turns"] and all(t["ttfa_ms"] == t["ttfa_audible_ms"] for t in turns)
    # the merged audible-TTFA histogram counts every turn of both workers
    (m,) = [m for m in s["metrics"] if m["name"] == "ttfa_audible_ms"]
    assert m["count"] == c["turns"]
    # no session twice, and exactly the sessions the simulator served for the load run
    assert len({r["session_id"] for r in stored}) == len(stored)
    served = written["truth"]["sessions"]
    assert len(served) == len(stored) and all(t["outcome"] == "closed" for t in served), served
    assert "sessions" in written["outputs"]["load"]
