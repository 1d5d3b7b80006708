"""Every way a target can fail becomes its stable error class, within its timeout, never a raise."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from probes.session import run_session
from probes.spec import Scenario, Target, Timeouts
from tests.sim_server import SimProcess

SC = Scenario(turns=1, utterance_s=0.5, turn_mode="manual")


@pytest.fixture(scope="module")
def fsim():
    with SimProcess(args=["--ttfa-ms", "100", "--reply-s", "0.6", "--speed", "4"]) as s:
        yield s


@pytest.fixture
def sim(fsim):
    fsim.reset()
    yield fsim
    fsim.clear_faults()


def run(sim, sc=SC, **kw):
    return run_session(Target("sim", sim.ws_url + "/v1/realtime", "sim-fast", **kw), sc, api_key="x")


@pytest.mark.parametrize(
    "fault, outcome",
    [
        ({"kind": "refuse"}, "connect_refused"),
        ({"kind": "http_status", "status": 401}, "http_401"),
        ({"kind": "http_status", "status": 429}, "http_429"),
        ({"kind": "http_status", "status": 500}, "http_500"),
        ({"kind": "http_status", "status": 503}, "http_503"),
        ({"kind": "error_event", "code": "rate_limit_exceeded"}, "server_error:rate_limit_exceeded"),
        ({"kind": "response_failed", "code": "server_error"}, "response_failed:server_error"),
        ({"kind": "drop"}, "ws_closed_1006"),
        ({"kind": "close_1011"}, "ws_closed_1011"),
        ({"kind": "malformed_json"}, "protocol"),
        ({"kind": "oversized"}, "ws_closed_1009"),
    ],
    ids=lambda v: v["kind"] + str(v.get("status", "")) if isinstance(v, dict) else v,
)
@pytest.mark.slow
def test_fault_maps_to_its_error_class(sim, fault, outcome):
    sim.fault(count=1, **fault)
    res = run(sim)
    assert res.outcome == outcome, res.error
    assert res.error  # the message text is kept, in a field
    if outcome.startswith(("server_error", "response_failed", "ws_closed", "protocol")):
        # the failure happened in the turn, and that turn carries it too
        assert res.turns and res.turns[-1].outcome == outcome
    # the next session is healthy again: the fault was used up, nothing leaked in the client
    assert run(sim).outcome == "ok"


@pytest.mark.slow
def test_stall_beyond_the_timeout(sim):
    sim.fault(kind="stall", count=1, after_deltas=2, stall_s=3.0)
    sc = Scenario(turns=1, utterance_s=0.5, turn_mode="manual",
                  timeouts=Timeouts(response_done=1.0))
    t = time.monotonic()
    res = run(sim, sc)
    assert res.outcome == "timeout:response_done", res.error
    assert time.monotonic() - t < 2.5
    assert res.turns[0].ttfa_ms is not None and res.turns[0].audio_s == pytest.approx(0.2)


@pytest.mark.slow
def test_stall_before_first_audio(sim):
    sim.fault(kind="stall", count=1, after_deltas=0, stall_s=3.0)
    sc = Scenario(turns=1, utterance_s=0.5, turn_mode="manual", timeouts=Timeouts(first_audio=0.6))
    res = run(sim, sc)
    assert res.outcome == "timeout:first_audio", res.error
    assert res.turns[0].ttfa_ms is None and res.turns[0].outcome == "timeout:first_audio"


@pytest.mark.slow
def test_session_expiry(sim):
    sim.fault(kind="session_expiry", count=1, after_s=0.8)
    res = run(sim, Scenario(turns=5, utterance_s=0.5, turn_mode="manual"))
    assert res.outcome == "session_expired", res.error
    assert "maximum duration" in res.error
    assert 0.8 <= res.duration_s < 2.0


def test_slow_handshake_is_timeout_connect(sim):
    sim.fault(kind="slow_handshake", count=1, delay_ms=3000)
    sc = Scenario(turns=1, utterance_s=0.5, timeouts=Timeouts(connect=0.5))
    t = time.monotonic()
    res = run(sim, sc)
    assert res.outcome == "timeout:connect", res.error
    assert time.monotonic() - t < 1.0


def test_closed_port_is_connect_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    res = run_session(Target("x", f"ws://127.0.0.1:{port}/v1/realtime", "m"), SC, api_key="x")
    assert res.outcome == "connect_refused" and str(port) in res.error


def test_accepts_tcp_but_never_upgrades_is_timeout_connect_within_its_timeout():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not done.is_set():
            try:
                c, _ = srv.accept()
                held.append(c)  # read nothing, answer nothing
            except TimeoutError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        sc = Scenario(turns=1, utterance_s=0.5, timeouts=Timeouts(connect=0.7))
        t = time.monotonic()
        res = run_session(Target("x", f"ws://127.0.0.1:{port}/v1/realtime?key=abc", "m"), sc,
                          api_key="sk-secret")
        elapsed = time.monotonic() - t
        assert res.outcome == "timeout:connect", res.error
        assert 0.7 <= elapsed < 1.2
        assert held  # TCP really was accepted
        assert "sk-secret" not in res.error and "key=abc" not in res.error
    finally:
        done.set()
        th.join(2)
        for c in held:
            c.close()
        srv.close()


def test_garbage_instead_of_an_upgrade_is_protocol():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def answer() -> None:
        srv.settimeout(5)
        c, _ = srv.accept()
        c.recv(4096)
        c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        time.sleep(0.5)
        c.close()

    th = threading.Thread(target=answer, daemon=True)
    th.start()
    res = run_session(Target("x", f"ws://127.0.0.1:{port}/v1/realtime", "m"), SC, api_key="x")
    th.join(5)
    srv.close()
    assert res.outcome == "protocol", res.error


def test_tls_to_a_plain_server_is_tls(sim):
    url = sim.ws_url.replace("ws://", "wss://") + "/v1/realtime"
    res = run_session(Target("x", url, "sim-fast"), SC, api_key="x")
    assert res.outcome == "tls", res.error


@pytest.mark.slow
def test_bad_url_and_bad_ca_file_are_config_errors(tmp_path):
    res = run_session(Target("x", "http://127.0.0.1:1/v1/realtime", "m"), SC, api_key="x")
    assert res.outcome == "config" and "ws://" in res.error
    res = run_session(Target("x", "wss://127.0.0.1:1/v1/realtime", "m",
                             ca_file=str(tmp_path / "missing.pem")), SC, api_key="x")
    assert res.outcome == "config" and "ca_file" in res.error
