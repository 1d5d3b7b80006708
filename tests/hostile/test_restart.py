"""Restart safety: SIGKILL of `voicepulse serve` while InfluxDB is down and points are waiting in
the outbox, a restart (still down), then InfluxDB comes back: every point the killed process had
stored reaches InfluxDB (outbox replay) and the schedule resumes in the new process."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.hostile.hostile_server import ROOT
from tests.sim_server import SimProcess

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

CONFIG = """
targets:
  t:
    url: "{sim}/v1/realtime"
    model: sim-fast
    api_key_env: VP_RESTART_KEY
scenarios:
  default: {{turns: 1, utterance_s: 0.3, trailing_silence_s: 0.5}}
sinks:
  - {{type: influx, api: v1, url: "{influx}", database: {db}}}
outbox: {outbox}
status: {{port: 0}}
service: {{evaluate_every: 1s, shutdown_timeout: 5s}}
probes:
  - {{target: t, every: 1s}}
"""

SESSION_ID = re.compile(rb'session_id="([0-9a-f]{32})"')


def start(cfg: Path, log: Path, env: dict) -> tuple[subprocess.Popen, str]:
    f = open(log, "wb")  # noqa: SIM115 (inherited by the child, closed right after)
    proc = subprocess.Popen([sys.executable, "-m", "voicepulse.cli", "serve", "--config",
                             str(cfg)], cwd=str(ROOT), env=env, stdout=f, stderr=f)
    f.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "serving:" in line:
                return proc, line.strip().rsplit(" ", 1)[-1]
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not start: " + log.read_text(errors="replace")[-3000:])


def status(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def outbox_session_ids(outbox: Path) -> set[bytes]:
    ids: set[bytes] = set()
    for f in outbox.glob("*.sqlite"):
        db = sqlite3.connect(str(f))
        try:
            for (body,) in db.execute("SELECT body FROM chunks"):
                for line in bytes(body).splitlines():
                    if line.startswith(b"session,"):
                        ids.update(SESSION_ID.findall(line))
        finally:
            db.close()
    return ids


def test_sigkill_with_influx_down_loses_no_stored_point(tmp_path, influx_factory):
    influx = influx_factory()
    db = "restart"
    influx.create_database(db)
    influx.stop()  # down from the start: every point waits in the outbox
    outbox = tmp_path / "outbox"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", VP_RESTART_KEY="k" * 12)
    with SimProcess(args=["--ttfa-ms", "80", "--reply-s", "0.3"]) as sim:
        cfg = tmp_path / "svc.yaml"
        cfg.write_text(CONFIG.format(sim=sim.ws_url, influx=influx.url, db=db, outbox=outbox))
        proc, url = start(cfg, tmp_path / "serve1.log", env)
        try:
            until(lambda: (s := status(url))["targets"]["probe:t:default"]["runs"] >= 3
                  and (s["outbox"] or {}).get("pending", 0) > 0 and s, 40, "3 stored probes")
            # kill while a probe is in flight (its result is being measured / written)
            until(lambda: status(url)["targets"]["probe:t:default"]["running"] >= 1, 10,
                  "a probe in flight")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        stored = outbox_session_ids(outbox)
        assert len(stored) >= 3, stored

        proc, url = start(cfg, tmp_path / "serve2.log", env)
        try:
            # still down: the new process keeps the old points and adds its own
            until(lambda: status(url)["targets"]["probe:t:default"]["runs"] >= 2, 30,
                  "the schedule resumed")
            assert stored <= outbox_session_ids(outbox)
            influx.start()
            until(lambda: (status(url)["outbox"] or {}).get("pending") == 0
                  and status(url)["outbox"].get("delivered", 0) > 0, 90, "the outbox drained")
            runs_after = status(url)["targets"]["probe:t:default"]["runs"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    rows = influx.rows("SELECT session_id, ok FROM session", db)
    in_influx = {r["session_id"].encode() for r in rows}
    lost = stored - in_influx
    assert not lost, f"{len(lost)} of {len(stored)} stored sessions never reached InfluxDB"
    assert len(in_influx) >= len(stored) + runs_after
    assert not list(outbox.glob("*.dead.jsonl")), "points were dead-lettered"
