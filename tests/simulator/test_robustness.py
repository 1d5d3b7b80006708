"""Bad input gets an `error` event, never a crash; one bad connection never disturbs another."""

from __future__ import annotations

import base64
import socket
import time

import numpy as np

from tests.simulator.wire import (
    Receiver,
    manual_session,
    open_ws,
    recv,
    send,
    tone_speech,
)


def _error_for(ws, payload, text=True) -> dict:
    ws.send(payload, text=text)
    ev, _ = recv(ws)
    assert ev["type"] == "error", ev
    return ev["error"]


def test_bad_events_get_error_events_and_the_session_survives(quick_sim):
    with open_ws(quick_sim.url("robust")) as ws:
        manual_session(ws)
        assert _error_for(ws, b'{"type": "session.update", ')["code"] == "invalid_event"
        assert _error_for(ws, b"[1, 2, 3]")["code"] == "invalid_event"
        err = _error_for(ws, b'{"type": "no.such.event", "event_id": "u1"}')
        assert err["code"] == "invalid_event" and err["event_id"] == "u1" and err["param"] == "type"
        assert _error_for(ws, b'{"event_id": "x"}')["message"] == "The 'type' field is missing."
        assert _error_for(ws, b"\x00\x01binary", text=False)["code"] == "invalid_event"
        err = _error_for(ws, b'{"type":"input_audio_buffer.append","audio":"@@@not base64@@@"}')
        assert err["code"] == "invalid_value"
        err = _error_for(ws, b'{"type":"input_audio_buffer.append","audio":5}')
        assert err["param"] == "audio"
        # 16 MiB of audio in one append: over the 15 MiB limit
        big = base64.b64encode(bytes(16 * 1024 * 1024))
        err = _error_for(ws, b'{"type":"input_audio_buffer.append","audio":"' + big + b'"}')
        assert err["code"] in ("invalid_event", "invalid_value") and "15 MiB" in err["message"]
        # still a working session
        send(ws, {"type": "input_audio_buffer.append",
                  "audio": base64.b64encode(tone_speech(0.3).tobytes()).decode()})
        send(ws, {"type": "input_audio_buffer.commit"})
        send(ws, {"type": "response.create"})
        rx = Receiver(ws)
        events = rx.wait_for("response.done")
        assert next(e for e, _ in events if e["type"] == "response.done")["response"][
            "status"] == "completed"


def test_one_bad_connection_never_disturbs_another(quick_sim):
    quick_sim.fault(kind="drop", after_deltas=1, models=["victim"], count=1)
    with open_ws(quick_sim.url("healthy")) as good:
        manual_session(good)
        rx = Receiver(good)
        pcm = tone_speech(0.3)
        send(good, {"type": "input_audio_buffer.append",
                    "audio": base64.b64encode(pcm.tobytes()).decode()})
        send(good, {"type": "input_audio_buffer.commit"})
        send(good, {"type": "response.create"})
        # meanwhile: garbage on a raw socket, a half-open handshake, a dropped session
        raw = socket.create_connection((quick_sim.host, quick_sim.port), timeout=5)
        raw.sendall(b"GET /v1/realtime?model=x HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff" * 3)
        half = socket.create_connection((quick_sim.host, quick_sim.port), timeout=5)
        half.sendall(b"GET /v1/realtime?model=x HTTP/1.1\r\n")  # never finished
        bad = open_ws(quick_sim.url("victim"))
        manual_session(bad)
        send(bad, {"type": "response.create"})
        brx = Receiver(bad)
        brx.wait_closed()
        for _ in range(20):
            bad_frame = np.random.default_rng(1).bytes(100)
            try:
                raw.sendall(bad_frame)
            except OSError:
                break
        events = rx.wait_for("response.done")
        raw.close()
        half.close()
        assert next(e for e, _ in events if e["type"] == "response.done")["response"][
            "status"] == "completed"
        gaps = [b - a for (e1, a), (e2, b) in zip(events, events[1:], strict=False)
                if e1["type"] == e2["type"] == "response.output_audio.delta"]
        assert max(gaps, default=0) < 100e6  # the healthy reply kept its pace
    assert quick_sim.healthz()["ok"]
    time.sleep(0)
