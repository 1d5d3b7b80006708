"""`voicepulse serve` and `voicepulse alerts check` as real processes: SIGTERM during a probe
exits 0 within the bound with the outbox flushed into a real influxd; SIGHUP reloads (a bad new
config is reported and the old one keeps running); a bad config fails fast naming file and key;
`alerts check` evaluates the rules from InfluxDB (InfluxQL via the query layer) and gates CI.
Only the tests that read InfluxDB start influxd; the others point the sink at a closed port (the
outbox keeps what they write)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.sim_server import SimProcess

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
targets:
  vp-long:
    url: "{url}"
    model: vp-long
    api_key_env: SIM_API_KEY
    instructions: Answer briefly.
scenarios:
  default: {{turns: 1, utterance_s: 0.4, trailing_silence_s: 0.6}}
sinks:
  - type: influx
    api: v1
    url: {influx}
    database: {db}
outbox: {outbox}
agent: ci-agent
status: {{port: 0}}
service: {{evaluate_every: 1s, shutdown_timeout: 3s}}
probes:
  - {{target: vp-long, every: 2s}}
slos:
  - {{name: long-availability, target: vp-long, kind: availability, objective: 99.5}}
alerts:
  - {{name: long-ttfa-p95, kind: threshold, target: vp-long, expr: ttfa_ms.p95 > {p95_bound},
      over: 10m}}
"""


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "voicepulse.cli", *args], cwd=ROOT,
                            env={**os.environ, "SIM_API_KEY": "sim", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """stderr lines until one contains `needle` (bounded)."""
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if needle in line:
                return seen
        if proc.poll() is not None:
            break
    raise AssertionError(f"no {needle!r} within {timeout} s; stderr so far:\n{seen}")


def status(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return orjson.loads(r.read())


@pytest.fixture
def setup(tmp_path):
    """`write(...)` puts a service config in tmp_path; its sink is `influx` (default: a closed
    loopback port) and database `db`."""
    from tests.servers import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with SimProcess() as sim:
        sim.set_profile(model="vp-long", ttfa_ms=250, reply_s=2.5, speed=1.0)

        def write(p95_bound: int = 5000, name: str = "svc.yaml", influx: str = "",
                  db: str = "svc") -> Path:
            path = tmp_path / name
            path.write_text(CONFIG.format(url=sim.ws_url + "/v1/realtime",
                                          influx=influx or closed,
                                          db=db, outbox=tmp_path / "outbox",
                                          p95_bound=p95_bound))
            return path

        yield write


def test_sigterm_during_probe_flushes_outbox_and_exits_0(setup, influxd) -> None:
    db = f"svc_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    influxd.create_database(db)

    def write(**kw) -> Path:
        return setup(influx=influxd.url, db=db, **kw)

    cfg = write(p95_bound=1)  # a threshold the data breaks: an alert fires while serving
    proc = cli("serve", "--config", str(cfg), "--duration", "60s")
    try:
        line = read_until(proc, "serving:", 30)
        url = line.strip().rsplit(" ", 1)[-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # one probe done, the next one in flight, alert on
            doc = status(url)
            st = doc["targets"]["probe:vp-long:default"]
            if st["runs"] >= 1 and st["running"] == 1 and doc["alerts"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no probe in flight: {st}")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - t0
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    print(f"\nSIGTERM during a probe: exit {code} after {took:.2f} s (shutdown_timeout 3 s)")
    assert code == 0, stderr
    assert took < 3.0 + 2.0, stderr  # the bound plus interpreter exit
    rows = influxd.rows('SELECT "duration_s", "outcome" FROM "session"', db)
    outcomes = sorted(r["outcome"] for r in rows)
    # every finished session reached InfluxDB before exit, and so did the record of the probe
    # that shutdown aborted (a `schedule` event: our abort must not count against the target)
    assert len(rows) >= st["runs"] and set(outcomes) == {"ok"}, outcomes
    aborted = influxd.rows('SELECT "count" FROM "schedule" WHERE "event" = \'aborted\'', db)
    assert len(aborted) == 1
    sched = influxd.rows('SELECT "lateness_ms" FROM "schedule" WHERE "event" = \'run\'', db)
    assert len(sched) >= st["runs"] + 1 and all(r["agent"] == "ci-agent" for r in
                                                influxd.rows('SELECT * FROM "schedule"', db))
    assert "ci-agent" in {r["agent"] for r in influxd.rows('SELECT * FROM "turn"', db)}

    # the service's engine read InfluxDB (InfluxQL) and wrote its state change back there
    alerts = influxd.rows('SELECT * FROM "alert"', db)
    assert [(a["rule"], a["state"], a["agent"]) for a in alerts] == \
        [("long-ttfa-p95", "firing", "ci-agent")], alerts
    assert alerts[0]["value"] > 1 and alerts[0]["threshold"] == 1

    # `alerts check` reads the same InfluxDB: the breached threshold fires -> exit 1
    chk = cli("alerts", "check", "--config", str(cfg))
    out, err = chk.communicate(timeout=60)
    print(out)
    assert chk.returncode == 1, out + err
    assert any(line.startswith("long-ttfa-p95") and "FIRING" in line for line in out.splitlines())
    # all rules quiet (bound 5 s, availability 100 %) -> exit 0
    chk = cli("alerts", "check", "--config", str(write(p95_bound=5000, name="calm.yaml")))
    out, err = chk.communicate(timeout=60)
    assert chk.returncode == 0, out + err
    assert "long-availability:page-1h" in out and "0 firing" in out


def wait_status(url: str, pred, timeout: float) -> dict:
    """/status until `pred(doc)` holds (bounded); the last document in the error."""
    deadline = time.monotonic() + timeout
    while True:
        doc = status(url)
        if pred(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"/status never matched within {timeout} s: {doc}")
        time.sleep(0.1)


def test_sighup_reload(setup) -> None:
    write = setup
    cfg = write()
    proc = cli("serve", "--config", str(cfg), "--duration", "40s")
    try:
        line = read_until(proc, "serving:", 30)
        url = line.strip().rsplit(" ", 1)[-1]
        good = cfg.read_text()
        # a typo, in a file that would also rename the agent, add a target and slow the probe
        bad = (good.replace("agent: ci-agent", "agent: ci-agent-bad")
               .replace("  - {target: vp-long, every: 2s}",
                        "  - {target: vp-long, every: 30s, jiter: 1s}\n"
                        "  - {target: vp-other, every: 2s}")
               .replace("targets:\n", "targets:\n  vp-other: {url: \"ws://127.0.0.1:9/x\", "
                        "model: m, api_key_env: SIM_API_KEY}\n"))
        assert bad.count("jiter") == 1 and "vp-other" in bad
        cfg.write_text(bad)
        proc.send_signal(signal.SIGHUP)
        err = read_until(proc, "reload failed", 10)
        assert "probes[0].jiter: unknown key" in err
        # still serving the old config: its agent, its one job, its 2 s interval, still running
        before = status(url)
        assert before["agent"] == "ci-agent"
        assert set(before["targets"]) == {"probe:vp-long:default"}
        runs = before["targets"]["probe:vp-long:default"]["runs"]
        after = wait_status(url, lambda d: d["targets"]["probe:vp-long:default"]["runs"]
                            >= runs + 2, 20)  # two more runs: every 2 s, not 30 s
        nxt = after["targets"]["probe:vp-long:default"]["next_run"]
        assert nxt is not None and nxt - after["now"] <= 2.5, after
        cfg.write_text(good.replace("agent: ci-agent", "agent: ci-agent-2"))
        proc.send_signal(signal.SIGHUP)
        read_until(proc, "config reloaded", 10)
        assert status(url)["agent"] == "ci-agent-2"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize(("edit", "message"), [
    (("every: 2s", 'cron: "61 * * * *"'), "svc.yaml: probes[0].cron: expected a 5-field"),
    (("objective: 99.5", "objective: 99.5, budget: 1"), "svc.yaml: slos[0].budget: unknown key"),
    (("alerts:", "notifiers:\n  - {type: webhook, url_env: VP_UNSET_HOOK_VAR}\nalerts:"),
     "svc.yaml: notifiers[0].url_env: environment variable VP_UNSET_HOOK_VAR is not set"),
])
def test_bad_config_fails_fast(setup, edit, message) -> None:
    cfg = setup()
    cfg.write_text(cfg.read_text().replace(*edit))
    t0 = time.monotonic()
    proc = cli("serve", "--config", str(cfg), env={"VP_UNSET_HOOK_VAR": ""})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.startswith(f"voicepulse: {cfg.parent}/") and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "serving" not in err and time.monotonic() - t0 < 10
    assert not (cfg.parent / "outbox").exists()  # nothing started, nothing written


def test_alerts_check_with_the_store_down(setup) -> None:
    """An unreachable InfluxDB must not pass a CI gate silently: exit 3, the reason per rule."""
    cfg = setup()  # the sink's port is closed: nobody listens there
    chk = cli("alerts", "check", "--config", str(cfg))
    out, err = chk.communicate(timeout=60)
    assert chk.returncode == 3, out + err
    assert " error " in out and "0 firing" in out
