"""System test: an HTML report from a real run's data, opened in headless Chromium.

One real run feeds every test in this module (about 15 s):
- the simulator in a child process, with faults injected so errors have classes;
- a Locust load run (`loadtests/locustfile.py`, a real master writing `latency`, `loadgen`,
  `turn` and `session` points with its run id) against sim-fast;
- at the same time probes (`probes.session.run_session`) against sim-fast and sim-slow recorded
  through `telemetry.recorder.Recorder`, and the scheduler's alert engine evaluating a TTFA rule
  over the store, whose state changes are stored as `alert` points; halfway through, sim-slow is
  made fast through the simulator's control API, so the alert fires and then resolves.
All of it lands in one embedded store; one test copies it into a real influxd and reports from
there. The browser checks: every plot drew data points, no console errors, no request left the
file, the table's numbers are the query layer's, and a screenshot lands in artifacts/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probes.spec import Scenario
from reports import build_report, load_summary_extras
from reports.collect import collect
from reports.html import COLUMNS
from telemetry.embedded import EmbeddedStore
from telemetry.points import Point, to_lines
from telemetry.query import InfluxQuery, open_query

from .pagecheck import inspect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
RUN_ID = "report-load-1"
INTERVAL_S = 2.0
pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


def _load_run(sim, store: Path, tmp: Path, box: dict) -> threading.Thread:
    """A real bounded Locust run (loadtests.run.run_load: a Locust child process) in a thread."""
    from loadtests.plan import LoadConfig, Plan, default_target
    from loadtests.run import run_load

    plan = Plan(
        target=default_target(sim.ws_url + "/v1/realtime", "sim-fast"),
        scenario=Scenario(turns=1, utterance_s=0.6, trailing_silence_s=0.6),
        load=LoadConfig(rate=2.0, duration_s=8.0, interval_s=INTERVAL_S, drain_s=10.0,
                        thresholds=["ttfa_ms.p95<2000"]),
        run_id=RUN_ID, store=str(store), outbox=str(tmp / "outbox"))

    def run() -> None:
        try:
            box["summary"] = run_load(plan, quiet=True, timeout_s=90.0)
        except Exception as exc:  # reported by the fixture
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _probe_loop(target, scenario, until: float, recorder, count: list) -> None:
    from probes.session import run_session

    while time.monotonic() < until:
        recorder.record(run_session(target, scenario, kind="probe", agent="report-test"))
        count.append(1)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from scheduler.alerts import AlertEngine, Rule
    from scheduler.config import ThresholdRule
    from scheduler.points import alert_point
    from scheduler.rules import evaluate_threshold
    from scheduler.source import TelemetrySource
    from telemetry.recorder import Recorder
    from tests.sim_server import SimProcess
    from voicepulse.config import sim_target

    tmp = tmp_path_factory.mktemp("report-run")
    store = tmp / "run.db"
    os.environ.setdefault("SIM_API_KEY", "report-test-key")
    # seeded: the latency dice (--seed) and each probabilistic fault's own dice (`seed`)
    with SimProcess(["--seed", "2121"]) as sim:
        # errors with classes: some sim-slow replies fail mid-stream, some upgrades get a 503
        sim.fault(kind="close_1011", probability=0.25, models=["sim-slow"], seed=211)
        sim.fault(kind="http_status", status=503, probability=0.15, models=["sim-fast"],
                  seed=212)
        sim.fault(kind="http_status", status=429, count=1, start_s=3.0)  # one for sure
        start_ns = time.time_ns()
        load: dict = {}
        loader = _load_run(sim, store, tmp, load)
        recorder = Recorder(EmbeddedStore(str(store)), interval_s=INTERVAL_S)
        url = sim.ws_url + "/v1/realtime"
        scenario = Scenario(turns=1, utterance_s=0.5, trailing_silence_s=0.6)
        counts: list = []
        until = time.monotonic() + 14.0
        probes = [threading.Thread(target=_probe_loop, daemon=True,
                                   args=(sim_target(m, url), scenario, until, recorder, counts))
                  for m in ("sim-fast", "sim-slow")]
        for p in probes:
            p.start()
        rule = ThresholdRule(name="ttfa-p95", target="sim-slow", metric="ttfa_ms", stat="p95",
                             op=">", value=600.0, over_s=5.0, severity="page")
        query = open_query(store_path=str(store))
        engine = AlertEngine(
            [Rule(rule.name, rule.target, "threshold", rule.severity, 0.0,
                  lambda source, now: evaluate_threshold(rule, source, now))],
            TelemetrySource(query), agent="report-test",
            listeners=[lambda e: recorder.write([alert_point(e)])])
        made_fast = False
        while any(p.is_alive() for p in probes):
            engine.evaluate()
            if not made_fast and time.monotonic() > until - 8.0:
                sim.set_profile(model="sim-slow", ttfa_scale=0.25)  # the regression ends
                made_fast = True
            time.sleep(0.5)
        for p in probes:
            p.join(timeout=30)
        engine.evaluate()
        loader.join(timeout=100)  # run_load is bounded (90 s) itself
        recorder.close(timeout=10)
        end_ns = time.time_ns() + 1
    assert not loader.is_alive() and "error" not in load, load.get("error")
    assert load["summary"].counters.get("sessions", 0) > 0
    assert counts, "no probe ran"
    yield {"store": store, "start_ns": start_ns, "end_ns": end_ns, "query": query, "tmp": tmp,
           "load": load["summary"]}
    query.close()


def _check_page(page: dict, query, *, run_id=None, start_ns, end_ns, expect_load: bool,
                expect_alerts: bool) -> None:
    assert page["console_errors"] == []
    assert page["requests"], "the page was never requested"
    assert all(u.startswith(("file:", "data:")) for u in page["requests"]), page["requests"]
    plots = {p["id"]: p for p in page["plots"]}
    want = {"latency", "spectrum", "errors"} | ({"load", "health"} if expect_load else set())
    assert set(plots) == want
    for p in plots.values():
        assert p["rendered"], p
        assert p["traces"] >= 1 and p["points"] >= 2, p
        assert p["svg_traces"] == p["traces"], p  # every trace drew
        assert p["svg_points"] + p["svg_lines"] >= p["traces"], p
    assert plots["spectrum"]["xaxis_type"] == "log"
    assert any(n.endswith(" p99") for n in plots["latency"]["names"])
    if expect_alerts:
        assert "alerts" in plots["latency"]["names"]
        assert page["alerts_rows"] >= 2  # fired, then resolved
    # the table holds exactly the query layer's numbers
    summary = query.summary(start_ns=start_ns, end_ns=end_ns, run_id=run_id)
    assert [r["target"] for r in page["table"]] == [s.target for s in summary]
    for row, s in zip(page["table"], summary, strict=True):
        for _h, key, fmt in COLUMNS:
            v = getattr(s, key)
            cell = row["cells"][key]
            assert cell["text"] == fmt(v), (s.target, key)
            if v is None:
                assert cell["value"] == ""
            else:
                assert float(cell["value"]) == float(v), (s.target, key)  # repr round-trips
        assert row["cells"]["errors"]["value"] == ";".join(f"{k}={n}" for k, n in s.errors.items())


needs_chromium = pytest.mark.needs_tool("chromium")


@needs_chromium
def test_report_of_probes_and_a_load_run(real_run):
    q, start, end = real_run["query"], real_run["start_ns"], real_run["end_ns"]
    summary = q.summary(start_ns=start, end_ns=end)
    assert {s.target for s in summary} == {"sim-fast", "sim-slow"}
    assert sum(s.sessions - s.ok_sessions for s in summary) > 0, "the faults caused no error"
    out = build_report(q, real_run["tmp"] / "all.html", start_ns=start, end_ns=end,
                       thresholds=["ttfa_ms.p95<2000", "error_rate<0.5"])
    page = inspect(out, ARTIFACTS / "report-embedded.png")
    _check_page(page, q, start_ns=start, end_ns=end, expect_load=True, expect_alerts=True)
    assert page["verdict"] == "fail"  # an alert fired
    assert "alert ttfa-p95 fired for sim-slow" in page["text"]
    assert page["screenshot"].stat().st_size > 50_000


@needs_chromium
def test_report_of_one_load_run(real_run):
    q, start, end = real_run["query"], real_run["start_ns"], real_run["end_ns"]
    extras = load_summary_extras(real_run["load"])
    extras["params"].update({"api_key": "sk-secret-value",
                             "url": "wss://user:pw@example.test/v1?key=k"})
    out = build_report(q, real_run["tmp"] / "run.html", start_ns=start, end_ns=end,
                       run_id=RUN_ID, **extras)
    page = inspect(out, ARTIFACTS / "report-load-run.png")
    _check_page(page, q, run_id=RUN_ID, start_ns=start, end_ns=end, expect_load=True,
                expect_alerts=False)
    assert [r["target"] for r in page["table"]] == ["sim-fast"]
    assert page["alerts_rows"] == 0  # the alert was about sim-slow, not part of this run
    text = out.read_text()
    assert "sk-secret-value" not in text and "user:pw" not in text and "key=k" not in text
    assert "load run report-load-1" in page["text"]
    assert "open, 2 sessions/s (constant)" in page["text"]  # the run's parameters
    assert "run: ttfa_ms.p95<2000 passed" in page["text"]  # the run's own threshold verdict


def _copy_to_influx(store_path: Path, influxd, db: str) -> int:
    """Every point of the embedded store, written to influxd as line protocol (same schema)."""
    store = EmbeddedStore(str(store_path))
    n = 0
    try:
        for m in ("turn", "session", "latency", "loadgen", "alert"):
            roles = store.columns(m)
            names = list(roles)
            points = []
            for row in store.select(m, ("time_ns", *names)):
                tags = {k: str(v) for k, v in zip(names, row[1:], strict=True)
                        if roles[k] == "tag" and v not in (None, "")}
                fields = {k: v for k, v in zip(names, row[1:], strict=True)
                          if roles[k] == "field" and v is not None}
                points.append(Point(m, tags, fields, int(row[0])))
            for i in range(0, len(points), 2000):
                influxd.write(to_lines(points[i:i + 2000]), db=db)
            n += len(points)
    finally:
        store.close()
    return n


@needs_chromium
def test_report_from_influxd(real_run, influxd):
    db = "report_test"
    influxd.create_database(db)
    assert _copy_to_influx(real_run["store"], influxd, db) > 0
    q = InfluxQuery(influxd.url, db)
    start, end = real_run["start_ns"], real_run["end_ns"]
    embedded = real_run["query"].summary(start_ns=start, end_ns=end)
    assert q.summary(start_ns=start, end_ns=end) == embedded  # same data, same answers
    a = collect(q, start_ns=start, end_ns=end)
    b = collect(real_run["query"], start_ns=start, end_ns=end)
    for name in ("bucket_s", "first_ns", "last_ns", "targets", "kinds", "latency", "spectra",
                 "errors", "outcomes", "alerts", "loadgen"):
        assert getattr(a, name) == getattr(b, name), name  # every plot's data, too
    out = build_report(q, real_run["tmp"] / "influx.html", start_ns=start, end_ns=end)
    page = inspect(out, ARTIFACTS / "report-influxd.png")
    _check_page(page, q, start_ns=start, end_ns=end, expect_load=True, expect_alerts=True)


def test_cli_writes_a_report(real_run, tmp_path):
    out = tmp_path / "cli.html"
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    r = subprocess.run([sys.executable, "-m", "voicepulse", "report", "--store",
                        str(real_run["store"]), "--since", "1h", "--target", "sim-slow",
                        "-o", str(out)], cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    text = out.read_text()
    assert text.count("<script") == text.count("</script>")
    assert "<script src" not in text and "<link" not in text  # nothing loaded from elsewhere
    assert 'data-target="sim-slow"' in text and 'data-target="sim-fast"' not in text
