"""The probe service and the load generator survive hostile targets: `voicepulse serve` keeps
scheduling and answering /status while its targets send garbage, flood, never finish or trickle
the upgrade; `voicepulse load` (a Locust worker) runs to its end and counts the failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack

import pytest

from tests.hostile.hostile_server import ROOT, HostileProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MODES = ("garbage-json", "deep-nesting", "unknown-events", "tiny-deltas", "never-done", "slowloris",
         "oversized")


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", VP_HOSTILE_KEY="k" * 10)


def test_serve_survives_hostile_targets(tmp_path):
    with ExitStack() as stack:
        servers = {m: stack.enter_context(HostileProcess(m)) for m in MODES}
        targets = "\n".join(
            f'  {m}: {{url: "{h.url()}", model: m, api_key_env: VP_HOSTILE_KEY}}'
            for m, h in servers.items())
        probes = "\n".join(f"  - {{target: {m}, every: 1s}}" for m in MODES)
        cfg = tmp_path / "svc.yaml"
        cfg.write_text(f"""
targets:
{targets}
scenarios:
  default: {{turns: 1, utterance_s: 0.3, trailing_silence_s: 0.2,
             timeouts: {{connect: 1s, ready: 1s, first_audio: 1s, response_done: 2s,
                         session: 10s}}}}
store: {tmp_path / "vp.db"}
status: {{port: 0}}
service: {{evaluate_every: 1s, shutdown_timeout: 3s}}
probes:
{probes}
""")
        log = tmp_path / "serve.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "voicepulse.cli", "serve", "--config",
                                     str(cfg), "--duration", "12s"], cwd=str(ROOT), env=env(),
                                    stdout=f, stderr=f)
        try:
            deadline = time.monotonic() + 40
            url, doc = "", {}
            while time.monotonic() < deadline and proc.poll() is None:
                if not url:
                    for line in log.read_text(errors="replace").splitlines():
                        if "serving:" in line:
                            url = line.strip().rsplit(" ", 1)[-1]
                if url:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        doc = json.loads(r.read())
                    outs = {t["target"]: t["outcomes"] for t in doc["targets"].values()}
                    if all(outs.get(m) for m in MODES):
                        break
                time.sleep(0.3)
            code = proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "crashed" not in text, text[-3000:]
    outs = {t["target"]: t["outcomes"] for t in doc["targets"].values()}
    assert set(outs["garbage-json"]) == {"protocol"}
    assert set(outs["deep-nesting"]) == {"protocol"}
    assert set(outs["unknown-events"]) == {"timeout:first_audio"}
    assert set(outs["tiny-deltas"]) == {"timeout:response_done"}
    assert set(outs["never-done"]) == {"timeout:response_done"}
    assert set(outs["slowloris"]) == {"timeout:connect"}
    assert set(outs["oversized"]) == {"ws_closed_1009"}


@pytest.mark.parametrize("mode", ["garbage-binary", "never-done"])
def test_load_worker_survives_hostile_target(tmp_path, mode):
    with HostileProcess(mode) as h:
        cfg = tmp_path / "load.yaml"
        cfg.write_text(f"""
targets:
  h: {{url: "{h.url()}", model: m, api_key_env: VP_HOSTILE_KEY}}
scenarios:
  default: {{turns: 1, utterance_s: 0.3, trailing_silence_s: 0.2,
             timeouts: {{connect: 1s, ready: 1s, first_audio: 1s, response_done: 2s,
                         session: 10s}}}}
store: {tmp_path / "vp.db"}
""")
        summary = tmp_path / "summary.json"
        p = subprocess.run([sys.executable, "-m", "voicepulse.cli", "load", "h", "--config",
                            str(cfg), "--rate", "4", "--duration", "3s", "--summary-json",
                            str(summary)], cwd=str(ROOT), env=env(), capture_output=True,
                           text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    c = json.loads(summary.read_text())["counters"]
    assert c["sessions"] >= 8 and c["sessions_ok"] == 0
    expected = "protocol" if mode == "garbage-binary" else "timeout:response_done"
    assert c["errors"] == {expected: c["sessions"]}, c
