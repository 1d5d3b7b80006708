"""A hostile server: speaks just enough OpenAI Realtime to get a client going, then misbehaves.

It exists to prove that a client (the probe engine, the scheduler, a Locust worker) survives a
target it does not control: garbage on the wire, floods, replies that never end, an upgrade
response trickled a byte at a time. It imports nothing of ours outside `simulator/`.

Entry points:
    await serve_hostile(host, port, mode)           # an asyncio Server; .sockets[0] has the port
    python -m simulator.hostile --port 0 --mode MODE   # prints `listening ws://HOST:PORT`

Modes (MODES below): every WebSocket mode first plays `session.created`, waits for the client's
`session.update` and answers `session.updated`, so the misbehaviour lands mid-session.

    garbage-json      a frame that is not JSON
    garbage-binary    a binary frame of random bytes (invalid UTF-8)
    not-object        a JSON array / number instead of an object
    no-type           an object with no string "type"
    wrong-types       a known event with fields of the wrong type (response.done response="x")
    truncated         half of a valid response.done frame
    deep-nesting      a known event nested 100 000 levels deep
    huge-string       once audio arrives: a transcript delta of 900 KB (under the 1 MiB limit)
    oversized         one 2 MiB frame (over the client's frame limit)
    bad-base64        once audio arrives: invalid base64 audio deltas, then a response.done
    unknown-events    an endless stream of unknown event types (never a response.done)
    tiny-deltas       an endless stream of 4-byte audio deltas (never a response.done)
    never-done        once audio arrives: response.created and one audio delta, then silence
    frames-forever    endless transcript deltas of 64 KB each (never a response.done)
    slowloris         raw TCP: the HTTP 101 upgrade response trickled one byte per 0.2 s
    silent            raw TCP: accepts and never answers the upgrade request

Every stream is bounded: it stops when the client goes away or after `max_s` seconds
(default 300), and `limit_bytes` caps what one connection may be sent by the flooding modes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

WS_MODES = (
    "garbage-json",
    "garbage-binary",
    "not-object",
    "no-type",
    "wrong-types",
    "truncated",
    "deep-nesting",
    "huge-string",
    "oversized",
    "bad-base64",
    "unknown-events",
    "tiny-deltas",
    "never-done",
    "frames-forever",
)
RAW_MODES = ("slowloris", "silent")
MODES = WS_MODES + RAW_MODES

#: modes whose single bad frame should end a client session as `protocol`
PROTOCOL_MODES = (
    "garbage-json",
    "garbage-binary",
    "not-object",
    "no-type",
    "wrong-types",
    "truncated",
    "deep-nesting",
)


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _response_done() -> dict:
    return {
        "type": "response.done",
        "event_id": "evt_done",
        "response": {
            "id": "resp_1",
            "object": "realtime.response",
            "status": "completed",
            "usage": {"total_tokens": 10, "input_tokens": 5, "output_tokens": 5},
        },
    }


def bad_frame(mode: str) -> str | bytes:
    """The one bad frame a protocol mode sends (also handy for unit tests)."""
    if mode == "garbage-json":
        return "this is {not json at all"
    if mode == "garbage-binary":
        return bytes(range(256))[::-1] * 4
    if mode == "not-object":
        return "[1, 2, 3]"
    if mode == "no-type":
        return _dumps({"event_id": "evt_x", "type": 42})
    if mode == "wrong-types":
        return _dumps({"type": "response.done", "response": "completed"})
    if mode == "truncated":
        s = _dumps(_response_done())
        return s[: len(s) // 2]
    if mode == "deep-nesting":
        n = 100_000
        return '{"type":"response.done","response":' + "[" * n + "]" * n + "}"
    raise ValueError(f"{mode} has no single bad frame")


class Hostile:
    def __init__(self, mode: str, max_s: float = 300.0, limit_bytes: int = 512 * 2**20):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.max_s = max_s
        self.limit_bytes = limit_bytes
        self.connections = 0
        self.bytes_sent = 0

    # ---- WebSocket modes ---------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        deadline = time.monotonic() + self.max_s
        try:
            await ws.send(_dumps({"type": "session.created", "event_id": "evt_1",
                                  "session": {"id": "sess_hostile", "object": "realtime.session"}}))
            await self._await_update(ws, deadline)
            await ws.send(_dumps({"type": "session.updated", "event_id": "evt_2",
                                  "session": {"id": "sess_hostile"}}))
            await self._misbehave(ws, deadline)
            # hold the socket open (reading and discarding) until the client leaves
            await self._drain(ws, deadline)
        except (ConnectionClosed, TimeoutError, OSError):
            pass

    async def _await_update(self, ws: ServerConnection, deadline: float) -> None:
        while time.monotonic() < deadline:
            msg = await asyncio.wait_for(ws.recv(), timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(msg, str) and '"session.update"' in msg:
                return

    async def _await_audio(self, ws: ServerConnection, deadline: float) -> None:
        """Reply only once the user has started talking, so the reply lands in the client's
        turn (a reply sent before the turn began would belong to no turn at all)."""
        while time.monotonic() < deadline:
            msg = await asyncio.wait_for(ws.recv(), timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(msg, str) and "input_audio_buffer" in msg:
                return

    async def _drain(self, ws: ServerConnection, deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.recv(), timeout=max(deadline - time.monotonic(), 0.01))

    async def _send(self, ws: ServerConnection, msg: str | bytes) -> None:
        self.bytes_sent += len(msg)
        await ws.send(msg)

    async def _flood(self, ws: ServerConnection, frames, deadline: float) -> None:
        """Send frames from the (endless) iterator until the client leaves, the deadline or the
        byte limit; yields to the loop every few frames so other connections still run."""
        sent = 0
        for i, f in enumerate(frames):
            if time.monotonic() >= deadline or sent >= self.limit_bytes:
                return
            await ws.send(f)
            sent += len(f)
            self.bytes_sent += len(f)
            if i % 50 == 49:
                await asyncio.sleep(0.001)

    async def _misbehave(self, ws: ServerConnection, deadline: float) -> None:
        mode = self.mode
        if mode in PROTOCOL_MODES:
            # a little normal traffic first, so the bad frame lands in an established session
            await self._send(ws, _dumps({"type": "rate_limits.updated", "rate_limits": []}))
            await self._send(ws, bad_frame(mode))
        elif mode == "huge-string":
            await self._await_audio(ws, deadline)
            await self._send(ws, _dumps({"type": "response.output_audio_transcript.delta",
                                         "delta": "A" * 900_000}))
            await self._send(ws, _dumps(_response_done()))
        elif mode == "oversized":
            await self._send(ws, _dumps({"type": "response.output_audio.delta",
                                         "delta": "A" * (2 * 2**20)}))
        elif mode == "bad-base64":
            await self._await_audio(ws, deadline)
            for d in ("!!!!not*base64", "A", "====", "\u00e9\u00e9\u00e9\u00e9" * 100):
                await self._send(ws, _dumps({"type": "response.output_audio.delta", "delta": d}))
            await self._send(ws, _dumps(_response_done()))
        elif mode == "unknown-events":
            await self._flood(ws, (_dumps({"type": f"x.unknown.{i}", "n": i})
                                   for i in _count()), deadline)
        elif mode == "tiny-deltas":
            delta = _dumps({"type": "response.output_audio.delta", "delta": "AAAAAA=="})
            await self._send(ws, _dumps({"type": "response.created", "response": {"id": "r"}}))
            await self._flood(ws, (delta for _ in _count()), deadline)
        elif mode == "never-done":
            await self._await_audio(ws, deadline)
            await self._send(ws, _dumps({"type": "response.created", "response": {"id": "r"}}))
            audio = base64.b64encode(b"\0" * 4800).decode()
            await self._send(ws, _dumps({"type": "response.output_audio.delta", "delta": audio}))
        elif mode == "frames-forever":
            delta = _dumps({"type": "response.output_audio_transcript.delta",
                            "delta": "word " * 13_000})
            await self._flood(ws, (delta for _ in _count()), deadline)

    # ---- raw TCP modes -----------------------------------------------------------------------

    async def raw_handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        deadline = time.monotonic() + self.max_s
        try:
            with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, OSError,
                                     asyncio.LimitOverrunError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=self.max_s)
            if self.mode == "slowloris":
                resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nX-Padding: " + b"x" * 10_000 + b"\r\n")
                for b in resp:
                    if time.monotonic() >= deadline or writer.is_closing():
                        break
                    writer.write(bytes([b]))
                    await writer.drain()
                    self.bytes_sent += 1
                    await asyncio.sleep(0.2)
            else:  # silent
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(reader.read(), timeout=max(deadline - time.monotonic(), 0.01))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _count():
    i = 0
    while True:
        yield i
        i += 1


async def serve_hostile(host: str = "127.0.0.1", port: int = 0, mode: str = "garbage-json",
                        *, max_s: float = 300.0, limit_bytes: int = 512 * 2**20):
    """Start the hostile server; returns (server, Hostile). `server.sockets[0]` has the port."""
    h = Hostile(mode, max_s=max_s, limit_bytes=limit_bytes)
    if mode in RAW_MODES:
        server = await asyncio.start_server(h.raw_handler, host, port)
    else:
        server = await serve(h.handler, host, port, compression=None, max_size=2**24,
                             ping_interval=None)
    return server, h


async def _main(args: argparse.Namespace) -> None:
    server, _ = await serve_hostile(args.host, args.port, args.mode, max_s=args.max_s,
                                    limit_bytes=args.limit_mb * 2**20)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening ws://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.duration:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.duration)
        else:
            await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulator.hostile",
                                description="A hostile OpenAI-Realtime-ish server for robustness "
                                            "tests. Modes: " + ", ".join(MODES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--max-s", type=float, default=300.0,
                   help="longest any one connection is served (s)")
    p.add_argument("--limit-mb", type=int, default=512,
                   help="most one connection is sent by a flooding mode (MiB)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="exit after this many seconds (0: run until SIGTERM)")
    args = p.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
