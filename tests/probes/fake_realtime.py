"""A tiny OpenAI-Realtime-shaped server on loopback for engine tests that need exact control.

Not the simulator (tests/sim_server.py is the reference target): this one exists to send
frames the simulator never would (fragmented messages, odd key order, escaped slashes) and to
give engine tests a target that does not depend on another package. It runs an asyncio
websockets server in a daemon thread and records, on perf_counter_ns, when it sent the first
audio delta of each response: its own ground truth.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.server import serve


@dataclass
class FakeConfig:
    ttfa_s: float = 0.05  # speech end (VAD) or response.create -> first delta
    vad_silence_s: float = 0.2  # silence after speech before speech_stopped
    reply_s: float = 0.6
    delta_s: float = 0.05
    speed: float = 4.0  # reply delivery relative to real time
    fragment: bool = False  # send audio deltas as two-fragment messages
    escaped_delta: bool = False  # escape '/' as '\\/' in audio deltas
    key_order_delta_first: bool = False
    unknown_events: int = 0  # send this many events of an unknown type before each reply
    silent: bool = False  # accept the upgrade, then never send session.created
    close_after_turns: int | None = None  # close 1000 right after this many response.done
    usage: dict = field(
        default_factory=lambda: {
            "total_tokens": 0,
            "input_token_details": {"text_tokens": 10, "audio_tokens": 15, "cached_tokens": 0},
            "output_token_details": {"text_tokens": 5, "audio_tokens": 12},
        }
    )


class FakeRealtime:
    def __init__(self, cfg: FakeConfig | None = None) -> None:
        self.cfg = cfg or FakeConfig()
        self.first_audio_ns: list[int] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.received_types: list[str] = []
        self.append_ns: list[int] = []  # arrival of every input_audio_buffer.append
        self.ended = 0  # connections whose handler has returned (every frame read)
        self._ended = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fake server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, compression=None, max_size=2**24) as srv:
            self.port = srv.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def wait_ended(self, n: int = 1, timeout: float = 5.0) -> None:
        """Until `n` connections' handlers have returned. The client's run_session can return
        while frames it sent are still queued here, so read the records only after this."""
        with self._ended:
            if not self._ended.wait_for(lambda: self.ended >= n, timeout):
                raise AssertionError(f"fake server: {self.ended} of {n} connections ended "
                                     f"within {timeout:g} s")

    async def _handler(self, ws) -> None:
        try:
            await self._session(ws)
        finally:
            with self._ended:
                self.ended += 1
                self._ended.notify_all()

    async def _session(self, ws) -> None:
        cfg = self.cfg
        self.headers.append(dict(ws.request.headers))
        self.paths.append(ws.request.path)
        self.responses = 0
        if cfg.silent:
            await ws.wait_closed()
            return
        await ws.send(orjson.dumps({"type": "session.created", "session": {"id": "sess_1"}}).decode())
        manual = False
        in_speech = False
        silence_s = 0.0
        reply: asyncio.Task | None = None
        async for raw in ws:
            t_in = time.perf_counter_ns()
            m = orjson.loads(raw)
            t = m["type"]
            self.received_types.append(t)
            if t == "session.update":
                td = m["session"].get("audio", {}).get("input", {}).get("turn_detection", "x")
                if "turn_detection" in m["session"]:
                    td = m["session"]["turn_detection"]
                manual = td is None
                await ws.send(orjson.dumps({"type": "session.updated", "session": m["session"]}).decode())
            if t == "input_audio_buffer.append":
                self.append_ns.append(t_in)
            if t == "input_audio_buffer.append" and not manual:
                pcm = base64.b64decode(m["audio"])
                dur = len(pcm) / 48000
                if any(pcm):
                    in_speech, silence_s = True, 0.0
                elif in_speech:
                    silence_s += dur
                    if silence_s >= cfg.vad_silence_s - 1e-9:
                        in_speech = False
                        await ws.send('{"type":"input_audio_buffer.speech_stopped","audio_end_ms":0}')
                        reply = asyncio.create_task(self._reply(ws))
            elif t == "response.create" and manual:
                reply = asyncio.create_task(self._reply(ws))
        if reply:
            reply.cancel()

    async def _reply(self, ws) -> None:
        cfg = self.cfg
        t0 = time.perf_counter_ns()
        for _ in range(cfg.unknown_events):
            await ws.send('{"type":"brand.new.event","x":1}')
        await ws.send('{"type":"response.created","response":{"id":"resp_1"}}')
        n = round(cfg.reply_s / cfg.delta_s)
        pcm = bytes(int(cfg.delta_s * 48000))
        b64 = base64.b64encode(b"\xff\xfe" * (len(pcm) // 2)).decode()
        first_due = t0 + int(cfg.ttfa_s * 1e9)
        for k in range(n):
            due = first_due + int(k * cfg.delta_s / cfg.speed * 1e9)
            now = time.perf_counter_ns()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            delta = b64.replace("/", "\\/") if cfg.escaped_delta else b64
            if cfg.key_order_delta_first:
                body = '{"delta":"' + delta + '","event_id":"e","type":"response.output_audio.delta"}'
            else:
                body = (
                    '{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1",'
                    '"item_id":"item_1","output_index":0,"content_index":0,"delta":"' + delta + '"}'
                )
            if k == 0:
                self.first_audio_ns.append(time.perf_counter_ns())
                await ws.send('{"type":"response.output_audio_transcript.delta","delta":"Hi"}')
            if cfg.fragment:
                half = len(body) // 2
                await ws.send([body[:half], body[half:]])
            else:
                await ws.send(body)
        done = {
            "type": "response.done",
            "response": {"id": "resp_1", "status": "completed", "usage": cfg.usage},
        }
        await ws.send(orjson.dumps(done).decode())
        self.responses += 1
        if cfg.close_after_turns is not None and self.responses >= cfg.close_after_turns:
            await ws.close(1000, "bye")
