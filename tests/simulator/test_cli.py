"""The simulator as a program: --help, the two ready lines, clean stop, --duration, truth file,
profiles file (and its errors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.cli import main
from tests.sim_server import ROOT, SimProcess
from tests.simulator.wire import manual_session, manual_turn, open_ws, recv


def test_help_documents_every_option():
    out = CliRunner().invoke(main, ["--help"]).output
    for opt in main.params:
        for name in opt.opts:
            assert name in out, name
        assert opt.help, f"{opt.name} has no help text"


def test_ready_lines_and_sigterm_stop():
    t0 = time.perf_counter()
    s = SimProcess().start()
    started = time.perf_counter() - t0
    assert s.ws_url.startswith("ws://127.0.0.1:") and s.control_url.startswith("http://127.0.0.1:")
    with open_ws(s.url("x")) as ws:
        recv(ws)
        rc = s.stop()  # SIGTERM with a session open
    assert rc == 0
    assert started < 5  # ~0.3-0.6 s on a quiet machine; generous under CI contention


@pytest.mark.slow
def test_sigint_and_duration_bound():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--control-port", "0",
                          "--duration", "0.5"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=15)
    lines = out.strip().splitlines()
    assert p.returncode == 0, err
    assert [ln.split()[0] for ln in lines] == ["listening", "control"]
    p = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--control-port", "0"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.readline()
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=10) == 0
    p.stdout.close()
    p.stderr.close()


def test_truth_file_and_profiles_file(tmp_path: Path):
    prof = tmp_path / "profiles.yaml"
    prof.write_text("""
defaults:
  delta_ms: 50
profiles:
  my-model:
    inherit: sim-fast
    ttfa_ms: {dist: normal, mean: 80, sd: 0.0001, floor: 10}
    reply_s: 0.4
    faults:
      - {kind: response_failed, code: server_error, count: 1}
""")
    truth = tmp_path / "truth.jsonl"
    with SimProcess(["--profiles", str(prof), "--truth-file", str(truth)]) as s:
        p = s.profile("my-model")
        assert p["delta_ms"] == 50 and p["ttfa_ms"]["mean"] == 80
        with open_ws(s.url("my-model")) as ws:
            sid = manual_session(ws)["id"]
            evs = [manual_turn(ws), manual_turn(ws)]
    statuses = [next(e for e, _ in t if e["type"] == "response.done")["response"]["status"]
                for t in evs]
    assert statuses == ["failed", "completed"]  # the profile's fault, count 1
    deltas = [e for e, _ in evs[1] if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == 8  # 0.4 s in 50 ms deltas
    recs = [json.loads(line) for line in truth.read_text().splitlines()]
    turns = [r for r in recs if r["kind"] == "turn" and r["session_id"] == sid]
    assert [t["turn_index"] for t in turns] == [0, 1]
    assert 80 <= turns[1]["injected_ttfa_ms"] < 81
    assert turns[1]["first_audio_ns"] > turns[1]["response_create_ns"]
    sessions = [r for r in recs if r["kind"] == "session" and r["session_id"] == sid]
    assert sessions and sessions[0]["ready_ns"] > sessions[0]["connect_ns"]


@pytest.mark.parametrize("body,needle", [
    ("profiles:\n  m:\n    ttfa_ms: {dist: gamma}\n", "profiles.m.ttfa_ms.dist"),
    ("profiles:\n  m:\n    speed: fast\n", "profiles.m.speed: expected float"),
    ("profiles:\n  m:\n    bogus: 1\n", "profiles.m.bogus: unknown key"),
    ("profiles:\n  m:\n    ttfa_ms: {dist: lognormal, median: 100}\n", "ttfa_ms.sigma: required"),
    ("profiles:\n  m:\n    inherit: nope\n", "profiles.m.inherit"),
])
def test_profile_file_errors_name_file_and_key(tmp_path: Path, body, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    r = CliRunner().invoke(main, ["--profiles", str(f), "--port", "0", "--control-port", "0",
                                  "--duration", "0.1"])
    assert r.exit_code == 2
    assert str(f) in r.output and needle in r.output, r.output


def test_websockets_reader_option_serves_the_same_protocol():
    from websockets.exceptions import ConnectionClosed

    from tests.simulator.wire import Receiver, send

    with SimProcess(["--reader", "websockets", "--ttfa-ms", "30", "--reply-s", "0.3"]) as s:
        with open_ws(s.url("wsr")) as ws:
            manual_session(ws)
            evs = manual_turn(ws)
            done = next(e for e, _ in evs if e["type"] == "response.done")["response"]
            assert done["status"] == "completed"
            send(ws, {"type": "bogus"})
            assert recv(ws)[0]["error"]["code"] == "invalid_event"
        s.fault(kind="close_1011", after_deltas=1, models=["wsr2"])
        ws = open_ws(s.url("wsr2"))
        manual_session(ws)
        rx = Receiver(ws)
        send(ws, {"type": "response.create"})
        exc = rx.wait_closed()
        assert isinstance(exc, ConnectionClosed) and exc.rcvd.code == 1011
