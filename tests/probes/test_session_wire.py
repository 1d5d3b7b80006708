"""Engine details a reference server never exercises: fragmented frames, escaped or reordered
audio deltas, and the sender's absolute (drift-free) schedule. Against tests/probes/fake_realtime."""

from __future__ import annotations

import time

import pytest

from probes.session import prepare, run_session
from probes.spec import Scenario, Target, Timeouts
from tests.probes.fake_realtime import FakeConfig, FakeRealtime
from tests.timing import bounded


@pytest.fixture
def fake(request):
    f = FakeRealtime(FakeConfig(**getattr(request, "param", {})))
    yield f
    f.close()


def check(fake, res, turns=1):
    """What the session and the fake agree on, exactly (no timing)."""
    assert res.outcome == "ok", res.error
    fake.wait_ended()
    assert len(res.turns) == turns == len(fake.first_audio_ns)
    for t in res.turns:
        assert t.audio_s == pytest.approx(fake.cfg.reply_s)
        assert t.usage.in_audio == 15 and t.usage.out_audio == 12


def first_audio_misses(fake, res) -> list:
    """Each turn's first audio stamped within 2 ms of when the fake sent it (a timing bound)."""
    return [(t.first_audio_ns, truth) for t, truth in zip(res.turns, fake.first_audio_ns, strict=True)
            if abs(t.first_audio_ns - truth) > 2_000_000]


def measured(param: dict, target: Target, scenario: Scenario, misses, what: str, turns=1):
    """run_session against a fresh fake under tests/timing.bounded: a timing miss while this
    process (client and fake are threads of it) waited for a CPU is retried once, then fails as
    "machine too busy"; a miss on a quiet machine fails at once. Exact checks run on every
    attempt. Returns (fake, result) of the passing attempt."""
    def measure():
        fake = FakeRealtime(FakeConfig(**param))
        try:
            res = run_session(target(fake), scenario, api_key="k")
            check(fake, res, turns)
            return fake, res
        finally:
            fake.close()

    return bounded(measure, lambda r: misses(*r), pids=[], budget_ms=2.0, what=what)


@pytest.mark.parametrize(
    "param",
    [{"fragment": True}, {"escaped_delta": True}, {"key_order_delta_first": True}],
    ids=["fragmented", "escaped", "delta-first"],
)
@pytest.mark.slow
def test_delta_variants_are_counted_exactly(param):
    measured(param, lambda f: Target("f", f.url, "sim-x"),
             Scenario(turns=2, utterance_s=0.4, turn_mode="manual", pause_s=0.05),
             first_audio_misses, "first audio vs the fake's send within 2 ms", turns=2)


@pytest.mark.slow
def test_sender_keeps_an_absolute_schedule():
    def misses(fake, res) -> list:
        arr, t = fake.append_ns, res.turns[0]
        bad = first_audio_misses(fake, res)
        # no drift: the last chunk arrives (n-1) chunks after the first, to within a few ms,
        # however late any single chunk was
        drift = (arr[-1] - arr[0]) - (len(arr) - 1) * 50_000_000
        if not abs(drift) < 5_000_000:
            bad.append(f"drift {drift / 1e6:.2f} ms over {len(arr)} chunks (bound 5 ms)")
        if not (0 <= t.send_lag_p50_ms < 5 and t.send_lag_max_ms < 50):
            bad.append(f"send lag p50 {t.send_lag_p50_ms} ms (bound 5), max {t.send_lag_max_ms}"
                       " ms (bound 50)")
        return bad

    fake, res = measured({}, lambda f: Target("f", f.url, "sim-x"),
                         Scenario(turns=1, utterance_s=2.0, trailing_silence_s=0.5, chunk_ms=50),
                         misses, "absolute send schedule (drift, send lag, first audio)")
    assert len(fake.append_ns) == 50  # 2.5 s in 50 ms chunks, every one read by the fake
    t = res.turns[0]
    # the last speech chunk went out late by its own send lag, never early
    assert 0 <= t.speech_sent_ns - t.speech_end_ns <= t.send_lag_max_ms * 1e6 + 1


def test_headers_url_and_configure_on_the_wire(fake):
    res = run_session(Target("f", fake.url, "sim-x", voice="marin"), Scenario(turns=1,
                      utterance_s=0.3, turn_mode="manual"), api_key="sk-abcdefgh")
    assert res.outcome == "ok", res.error
    fake.wait_ended()
    h = {k.lower(): v for k, v in fake.headers[0].items()}
    assert h["authorization"] == "Bearer sk-abcdefgh"
    assert "permessage-deflate" not in h.get("sec-websocket-extensions", "")
    assert fake.paths[0] == "/v1/realtime?model=sim-x"
    assert fake.received_types[0] == "session.update"
    assert fake.received_types[-2:] == ["input_audio_buffer.commit", "response.create"]


@pytest.mark.parametrize("fake", [{"silent": True}], indirect=True)
def test_no_session_created_is_timeout_ready(fake):
    sc = Scenario(turns=1, utterance_s=0.3, timeouts=Timeouts(ready=0.5))
    t = time.monotonic()
    res = run_session(Target("f", fake.url, "sim-x"), sc, api_key="k")
    assert res.outcome == "timeout:ready", res.error
    assert res.connect_ms is not None and res.ready_ms is None
    assert 0.5 <= time.monotonic() - t < 1.5


@pytest.mark.parametrize("fake", [{"close_after_turns": 1}], indirect=True)
@pytest.mark.slow
def test_server_close_after_the_last_turn_is_a_normal_end_but_mid_session_is_not(fake):
    one = run_session(Target("f", fake.url, "sim-x"),
                      Scenario(turns=1, utterance_s=0.3, turn_mode="manual"), api_key="k")
    assert one.outcome == "ok", one.error
    two = run_session(Target("f", fake.url, "sim-x"),
                      Scenario(turns=2, utterance_s=0.3, turn_mode="manual"), api_key="k")
    assert two.outcome == "ws_closed_1000", two.error
    assert two.turns[0].outcome == "ok"


def test_a_bad_wav_fails_before_connecting(tmp_path):
    """A say step's WAV that exists but is not audio ends the session as `config` before
    anything is sent; prepare(), which a load run calls first, raises it."""
    from probes.audio import AudioSourceError
    from probes.script import parse_script

    (tmp_path / "x.wav").write_bytes(b"not a wav at all")
    sc = Scenario(script=parse_script([{"say": {"wav": "x.wav"}}], base_dir=str(tmp_path)))
    res = run_session(Target("f", "ws://127.0.0.1:9/v1/realtime", "m"), sc)
    assert res.outcome == "config" and "x.wav" in res.error and res.connect_ms is None
    with pytest.raises(AudioSourceError, match="x.wav"):
        prepare(Target("f", "ws://127.0.0.1:9/v1/realtime", "m"), sc)  # a load run's pre-check


def _ws_frame(text: bytes) -> bytes:
    assert len(text) < 126
    return bytes([0x81, len(text)]) + text


@pytest.mark.slow
def test_a_server_that_stops_reading_ends_as_timeout_send(monkeypatch):
    """The upgrade and setup succeed, then the server never reads: the engine's sends block
    once the socket buffers fill, and the send timeout (not a hang) ends the session."""
    import base64 as b64
    import hashlib
    import socket
    import threading

    import probes.transport as engine

    monkeypatch.setattr(engine, "SEND_BLOCK_TIMEOUT_S", 0.5)
    real_connect = socket.create_connection

    def small_buffers(*args, **kwargs):  # so the buffers fill in a second, not a minute
        s = real_connect(*args, **kwargs)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return s

    monkeypatch.setattr(engine.socket, "create_connection", small_buffers)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        srv.settimeout(5)
        c, _ = srv.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in req.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        acc = b64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        c.sendall(_ws_frame(b'{"type":"session.created","session":{"id":"s"}}'))
        # wait for session.update to arrive, then answer it and never read again
        time.sleep(0.2)
        c.sendall(_ws_frame(b'{"type":"session.updated","session":{}}'))
        done.wait(20)
        c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        sc = Scenario(turns=1, utterance_s=60.0, chunk_ms=100, timeouts=Timeouts(session=30))
        t = time.monotonic()
        res = run_session(Target("x", f"ws://127.0.0.1:{port}/v1/realtime", "m"), sc, api_key="k")
        assert res.outcome == "timeout:send", (res.outcome, res.error)
        assert time.monotonic() - t < 5
    finally:
        done.set()
        th.join(5)
        srv.close()


@pytest.mark.parametrize("fake", [{"unknown_events": 3}], indirect=True)
@pytest.mark.slow
def test_unknown_events_are_counted_not_fatal(fake):
    res = run_session(Target("f", fake.url, "sim-x"),
                      Scenario(turns=2, utterance_s=0.3, turn_mode="manual"), api_key="k")
    assert res.outcome == "ok", res.error
    assert res.unknown_events == 6


def test_send_lag_beyond_the_limit_is_client_overload(fake):
    # any real sender is late by some nanoseconds; a 0 ms limit must flag it, metrics kept
    res = run_session(Target("f", fake.url, "sim-x"),
                      Scenario(turns=1, utterance_s=0.3, turn_mode="manual", max_send_lag_ms=0.0),
                      api_key="k")
    assert res.outcome == "client_overload", res.error
    assert res.turns[0].ttfa_ms is not None and res.send_lag_p99_ms > 0


def test_websockets_debug_logging_never_shows_the_key(fake, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    res = run_session(Target("f", fake.url, "sim-x"),
                      Scenario(turns=1, utterance_s=0.3, turn_mode="manual"), api_key="sk-logged-key-1")
    assert res.outcome == "ok", res.error
    # the fake *server* in this process logs what it received; the client side must not
    client = [r for r in caplog.records if not r.name.startswith("websockets.server")]
    assert not any("sk-logged-key-1" in r.getMessage() for r in client)
    server = [r for r in caplog.records if r.name.startswith("websockets.server")]
    assert any("sk-logged-key-1" in r.getMessage() for r in server)  # the check can see a leak


@pytest.mark.parametrize("fake", [{"reply_s": 3.0, "speed": 1.0}], indirect=True)
@pytest.mark.slow
def test_a_deadline_mid_stream_still_gives_turn_results(fake):
    from probes.results import TurnResult

    sc = Scenario(turns=1, utterance_s=0.3, turn_mode="manual", timeouts=Timeouts(response_done=0.8))
    res = run_session(Target("f", fake.url, "sim-x"), sc, api_key="k")
    assert res.outcome == "timeout:response_done"
    assert all(isinstance(t, TurnResult) for t in res.turns)
    t = res.turns[0]
    assert t.outcome == "timeout:response_done" and t.audio_s > 0 and t.ttfa_ms is not None
