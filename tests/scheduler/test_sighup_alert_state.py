"""SIGHUP keeps alert states, end to end: a real `voicepulse serve` (embedded store) probing the
simulator has an alert firing and notified once through a real webhook; SIGHUP with a changed but
valid config (another agent name, another probe interval) reloads it, and over the evaluations
that follow the alert stays firing since the same moment: no second notification, no resolve,
no new alert point in the store."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.scheduler.receiver import Receiver
from tests.sim_server import SimProcess

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
targets:
  vp-hup: {{url: "{url}", model: vp-hup, api_key_env: SIM_API_KEY, instructions: Answer briefly.}}
scenarios:
  default: {{turns: 1, utterance_s: 0.4, trailing_silence_s: 0.5}}
store: {store}
agent: {agent}
status: {{port: 0}}
service: {{evaluate_every: 1s, shutdown_timeout: 3s}}
probes:
  - {{target: vp-hup, every: {every}}}
alerts:
  - {{name: hup-ttfa-p95, kind: threshold, target: vp-hup, expr: ttfa_ms.p95 > 1, over: 10m}}
notifiers:
  - {{type: webhook, url_env: VP_HUP_HOOK}}
"""


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stderr], [], [], 0.2)[0]:
            line = proc.stderr.readline()
            seen += line
            if needle in line:
                return line
    raise AssertionError(f"no {needle!r} within {timeout} s; stderr so far:\n{seen}")


def status(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return orjson.loads(r.read())


def wait_status(url: str, cond, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = status(url)
        if cond(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}; last /status: {doc}")
        time.sleep(0.1)


def firing(doc: dict) -> list[dict]:
    return [a for a in doc["alerts"] if a["rule"] == "hup-ttfa-p95" and a["state"] == "firing"]


def test_sighup_keeps_a_firing_alert_firing(tmp_path) -> None:
    hook = Receiver()
    store = tmp_path / "vp.db"
    with SimProcess() as sim:
        sim.set_profile(model="vp-hup", ttfa_ms=200, reply_s=0.4, speed=4.0)
        cfg = tmp_path / "svc.yaml"

        def write(agent: str, every: str) -> None:
            cfg.write_text(CONFIG.format(url=sim.ws_url + "/v1/realtime", store=store,
                                         agent=agent, every=every))

        write("hup-1", "1s")
        env = {**os.environ, "SIM_API_KEY": "sim", "VP_HUP_HOOK": hook.url("/hook"),
               "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "voicepulse", "serve", "--config",
                                 str(cfg), "--duration", "90s"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = read_until(proc, "serving:", 30).strip().rsplit(" ", 1)[-1]
            before = wait_status(url, firing, 30, "the alert fires")
            [alert] = firing(before)
            path, note = hook.get(timeout=10)
            assert (note["rule"], note["state"], note["agent"]) == ("hup-ttfa-p95", "firing",
                                                                    "hup-1")

            write("hup-2", "2s")  # changed, valid, same rule
            proc.send_signal(signal.SIGHUP)
            read_until(proc, "config reloaded", 15)
            reloaded = wait_status(url, lambda d: d["agent"] == "hup-2", 5, "the new agent")
            evals = reloaded["engine"]["evaluations"]
            after = wait_status(url, lambda d: d["engine"]["evaluations"] >= evals + 4, 20,
                                "four evaluations after the reload")
            assert after["targets"]["probe:vp-hup:default"]["runs"] >= 1
            assert [(a["state"], a["since"]) for a in firing(after)] == \
                [("firing", alert["since"])]  # the same state, not a new one
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            hook.close()
    later = []
    while not hook.posts.empty():
        later.append(hook.posts.get()[1])
    assert later == [], later  # no re-notification, no resolve across the reload
    db = sqlite3.connect(store)
    points = db.execute("SELECT rule, state, agent FROM alert").fetchall()
    assert points == [("hup-ttfa-p95", "firing", "hup-1")], points
