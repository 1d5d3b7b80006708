"""Plain-websockets client helpers for the simulator tests (deliberately not the probe engine)."""

from __future__ import annotations

import base64
import time

import numpy as np
import orjson
from websockets.sync.client import connect

RATE = 24000


def tone_speech(seconds: float, rate: int = RATE, level: float = 0.2) -> np.ndarray:
    """Loud, voiced-ish test audio (harmonics of 140 Hz) as int16."""
    t = np.arange(int(rate * seconds)) / rate
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    x = x / np.max(np.abs(x)) * level
    return (x * 32767).astype(np.int16)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(rate * seconds), dtype=np.int16)


def open_ws(url: str, key: str = "x", beta: bool = False, headers: dict | None = None, **kw):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    if beta:
        h["OpenAI-Beta"] = "realtime=v1"
    h.update(headers or {})
    kw.setdefault("open_timeout", 5)
    # legacy=True: websockets 17 otherwise warns when the connection is not used in a `with`
    return connect(url, additional_headers=h, compression=None, legacy=True, **kw)


def send(ws, obj: dict) -> None:
    ws.send(orjson.dumps(obj), text=True)


def recv(ws, timeout: float = 5.0) -> tuple[dict, int]:
    raw = ws.recv(timeout=timeout, decode=False)
    t = time.perf_counter_ns()
    return orjson.loads(raw), t


def recv_until(ws, typ: str, timeout: float = 10.0) -> list[tuple[dict, int]]:
    """Events up to and including the first of type `typ`."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {typ}; got {[e['type'] for e, _ in out]}")
        ev, t = recv(ws, left)
        out.append((ev, t))
        if ev["type"] == typ:
            return out


def ga_update(**audio_input) -> dict:
    inp = {"format": {"type": "audio/pcm", "rate": 24000}}
    inp.update(audio_input)
    return {"type": "session.update", "session": {"type": "realtime", "audio": {"input": inp}}}


def stream(ws, pcm: np.ndarray, chunk_ms: int = 100, rate: int = RATE, paced: bool = True,
           t0: int | None = None, fmt_bytes=None) -> list[int]:
    """Append `pcm` in chunks on an absolute real-time schedule; returns each chunk's send ns
    (taken just before the write).

    Chunk k (holding audio [k*chunk, (k+1)*chunk)) is sent at t0 + (k+1)*chunk, the moment its
    last sample exists in real time.
    """
    n = rate * chunk_ms // 1000
    t0 = time.perf_counter_ns() if t0 is None else t0
    sent = []
    for k in range(0, len(pcm), n):
        piece = pcm[k:k + n]
        if paced:
            due = t0 + (k + len(piece)) * 1_000_000_000 // rate
            while (d := due - time.perf_counter_ns()) > 0:
                time.sleep(d / 1e9)
        raw = fmt_bytes(piece) if fmt_bytes else piece.astype("<i2").tobytes()
        msg = orjson.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(raw).decode()})
        sent.append(time.perf_counter_ns())
        ws.send(msg, text=True)
    return sent


def manual_session(ws, ga: bool = True, **session) -> dict:
    """Read session.created, switch to manual turns; returns session.created's session."""
    created, _ = recv(ws)
    assert created["type"] == "session.created", created
    if not ga:
        assert recv(ws)[0]["type"] == "conversation.created"
        body = {"turn_detection": None, **session}
    else:
        body = {"type": "realtime", "audio": {"input": {"turn_detection": None}}, **session}
    send(ws, {"type": "session.update", "session": body})
    ev, _ = recv(ws)
    assert ev["type"] == "session.updated", ev
    return created["session"]


def manual_turn(ws, seconds: float = 0.5, until: str = "rate_limits.updated",
                response: dict | None = None) -> list[tuple[dict, int]]:
    """Append speech unpaced, commit, response.create; events up to `until`."""
    pcm = np.concatenate([tone_speech(seconds), silence(0.1)])
    send(ws, {"type": "input_audio_buffer.append",
              "audio": base64.b64encode(pcm.tobytes()).decode()})
    send(ws, {"type": "input_audio_buffer.commit"})
    send(ws, {"type": "response.create", **({"response": response} if response else {})})
    return recv_until(ws, until)


def types(events) -> list[str]:
    return [e["type"] for e, _ in events]


class Receiver:
    """Reads every frame on a thread and stamps it with perf_counter_ns() the moment recv returns,
    so arrival times stay honest while the main thread paces audio out."""

    def __init__(self, ws):
        import threading

        self.ws = ws
        self.events: list[tuple[dict, int]] = []
        self.raw: list[tuple[bytes, int]] = []
        self.closed: Exception | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                raw = self.ws.recv(decode=False)
                t = time.perf_counter_ns()
                try:
                    ev = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    ev = {"type": "<malformed>"}
                with self.cond:
                    self.raw.append((raw, t))
                    self.events.append((ev, t))
                    self.cond.notify_all()
        except Exception as e:  # ConnectionClosed ends the loop
            with self.cond:
                self.closed = e
                self.cond.notify_all()

    def wait_for(self, typ: str, count: int = 1, timeout: float = 10.0) -> list[tuple[dict, int]]:
        """All events so far, once `count` events of `typ` have arrived."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for e, _ in self.events if e["type"] == typ) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed is not None:
                    raise TimeoutError(f"waiting for {typ} x{count}: "
                                       f"{[e['type'] for e, _ in self.events][-8:]} {self.closed!r}")
                self.cond.wait(left)
            return list(self.events)

    def wait_closed(self, timeout: float = 10.0) -> Exception:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("connection still open")
                self.cond.wait(left)
            return self.closed


def stamping_connection_class():
    """A websockets asyncio ClientConnection that stamps each data frame with perf_counter_ns()
    in data_received, i.e. when its bytes were read from the socket (no thread hand-offs)."""
    import collections

    from websockets.asyncio.client import ClientConnection
    from websockets.frames import Opcode

    class StampingConnection(ClientConnection):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.stamps: collections.deque[int] = collections.deque()
            self._rx_ns = 0

        def data_received(self, data: bytes) -> None:
            self._rx_ns = time.perf_counter_ns()
            super().data_received(data)

        def process_event(self, event) -> None:
            if getattr(event, "opcode", None) in (Opcode.TEXT, Opcode.BINARY):
                self.stamps.append(self._rx_ns)
            super().process_event(event)

    return StampingConnection
