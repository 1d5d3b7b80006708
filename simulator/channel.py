"""Frame I/O for one session after the websockets handshake.

`FastChannel` takes the transport over from websockets once the 101 has been sent: it parses client
frames itself (unmasking with websockets' C helper), answers pings and the close handshake, and
writes server frames (unmasked) straight to the transport. That removes ~30 us of websockets
bookkeeping per received frame, which is most of the simulator's cost at 1,000 sessions.
`WebsocketsChannel` is the plain websockets path (`--reader websockets`), kept as a reference and
fallback. Both stamp each received frame with time.monotonic_ns() when its bytes were read.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback
    from websockets.utils import apply_mask

MAX_MESSAGE = 32 * 1024 * 1024  # larger frames close 1009; up to this, an oversized append gets an error
WRITE_LIMIT = 64 * 1024  # above this much unsent data, wait for the client (backpressure)
_QUEUE_HIGH, _QUEUE_LOW = 256, 32
#: data frames the sessions received and wrote, process-wide ([in, out]; /stats shows them): the
#: wire messages a load generator exchanged with us, for its cost per message
FRAMES = [0, 0]


def frame_header(n: int, opcode: int = 0x1) -> bytes:
    b0 = 0x80 | opcode
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return bytes((b0, 126)) + n.to_bytes(2, "big")
    return bytes((b0, 127)) + n.to_bytes(8, "big")


def _closed_exc(code: int | None, reason: str, ok: bool) -> ConnectionClosed:
    rcvd = Close(code, reason) if code is not None else None
    return (ConnectionClosedOK if ok else ConnectionClosedError)(rcvd, None)


class WebsocketsChannel:
    """websockets does everything; received frames are stamped when the session reads them."""

    def __init__(self, ws, max_size: int):
        self.ws = ws

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def recv(self) -> tuple[bytes, int]:
        raw = await self.ws.recv(decode=False)
        FRAMES[0] += 1
        return raw, time.monotonic_ns()

    async def write(self, payload: bytes) -> int:
        ws, tr = self.ws, self.ws.transport
        if ws.protocol.state is State.OPEN and tr.get_write_buffer_size() < WRITE_LIMIT:
            t = time.monotonic_ns()
            tr.write(frame_header(len(payload)) + payload)
            FRAMES[1] += 1
            return t
        t = time.monotonic_ns()
        await ws.send(payload, text=True)
        FRAMES[1] += 1
        return t

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class BinaryWsChannel(WebsocketsChannel):
    """WebsocketsChannel whose server frames are BINARY, as Gemini's are."""

    async def write(self, payload: bytes) -> int:
        t = time.monotonic_ns()
        await self.ws.send(payload)  # bytes: a binary frame
        FRAMES[1] += 1
        return t


class FastChannel(asyncio.Protocol):
    """Owns the transport after the handshake (see module doc)."""

    OPCODE = 0x1  # server frames are TEXT
    FALLBACK: type = WebsocketsChannel

    def __init__(self, ws, max_size: int):
        self.ws = ws  # the websockets connection: flow control and connection_lost go back to it
        self.transport = ws.transport
        self.max_size = max_size
        self.buf = bytearray()
        self.queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self.frag: list[bytes] | None = None
        self.waiter: asyncio.Future | None = None
        self.lost = False
        self.close_sent = False
        self.close_rcvd: tuple[int | None, str] | None = None
        self.close_code: int | None = None
        self.closed_event = asyncio.Event()
        self.paused = False
        self.transport.set_protocol(self)

    @classmethod
    def take_over(cls, ws, max_size: int):
        """A FastChannel, or its FALLBACK if websockets already holds client data."""
        reader = getattr(ws.protocol, "reader", None)
        pending = getattr(reader, "buffer", b"")
        queued = getattr(ws, "recv_messages", None)
        if pending or (queued is not None and len(getattr(queued, "frames", ()))):
            return cls.FALLBACK(ws, max_size)
        return cls(ws, max_size)

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            ln, hdr = b1 & 0x7F, 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if not b1 & 0x80:
                self._fail(1002, "client frames must be masked")
                return
            if ln > self.max_size:
                self._fail(1009, f"frame of {ln} bytes exceeds limit of {self.max_size} bytes")
                return
            end = pos + hdr + 4 + ln
            if n < end:
                break
            mask = bytes(buf[pos + hdr:pos + hdr + 4])
            payload = apply_mask(bytes(buf[pos + hdr + 4:end]), mask)
            pos = end
            opcode = b0 & 0x0F
            if opcode in (0x1, 0x2):
                if b0 & 0x80:
                    self.queue.append((payload, t))
                else:
                    self.frag = [payload]
            elif opcode == 0x0 and self.frag is not None:
                self.frag.append(payload)
                if b0 & 0x80:
                    self.queue.append((b"".join(self.frag), t))
                    self.frag = None
            elif opcode == 0x8:
                self._on_close_frame(payload)
                break
            elif opcode == 0x9:
                if not self.close_sent:
                    self.transport.write(frame_header(len(payload), 0xA) + payload)
            elif opcode != 0xA:
                self._fail(1002, f"unknown opcode {opcode}")
                return
        if pos:
            del buf[:pos]
        if len(self.queue) > _QUEUE_HIGH and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _on_close_frame(self, payload: bytes) -> None:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        reason = payload[2:].decode("utf-8", "replace")
        self.close_rcvd = (code, reason)
        if not self.close_sent:  # the client started the close: echo it, then end TCP
            self.close_sent = True
            self.close_code = code if code is not None else 1005
            echo = payload[:2]
            self.transport.write(frame_header(len(echo), 0x8) + echo)
        self.transport.close()
        self.closed_event.set()

    def _fail(self, code: int, reason: str) -> None:
        self.buf.clear()
        if not self.close_sent:
            self.close_sent = True
            self.close_code = code
            body = struct.pack("!H", code) + reason.encode()[:120]
            self.transport.write(frame_header(len(body), 0x8) + body)
        self.transport.close()
        self._wake()

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.close_code is None:
            self.close_code = 1006
        self.closed_event.set()
        self._wake()
        self.ws.connection_lost(exc)  # lets websockets finish its own bookkeeping

    def eof_received(self):
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self.ws.pause_writing()

    def resume_writing(self) -> None:
        self.ws.resume_writing()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ---- session side -----------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return not (self.lost or self.close_sent or self.close_rcvd
                    or self.transport.is_closing())

    async def recv(self) -> tuple[bytes, int]:
        while not self.queue:
            if not self.open:
                code, reason = self.close_rcvd or (None, "")
                raise _closed_exc(code, reason, ok=code in (1000, 1001))
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        item = self.queue.popleft()
        FRAMES[0] += 1
        if self.paused and len(self.queue) < _QUEUE_LOW:
            self.paused = False
            self.transport.resume_reading()
        return item

    async def write(self, payload: bytes) -> int:
        if not self.open:
            raise _closed_exc(*(self.close_rcvd or (None, "")), ok=False)
        tr = self.transport
        if tr.get_write_buffer_size() >= WRITE_LIMIT:
            await self.ws.drain()  # the client is not reading: wait (flow control is forwarded)
            if not self.open:
                raise _closed_exc(*(self.close_rcvd or (None, "")), ok=False)
        t = time.monotonic_ns()
        tr.write(frame_header(len(payload), self.OPCODE) + payload)
        FRAMES[1] += 1
        return t

    async def close(self, code: int, reason: str, timeout: float = 2.0) -> None:
        """Send a close frame, wait (bounded) for the client's, then end the TCP connection."""
        if not self.close_sent and not self.lost:
            self.close_sent = True
            self.close_code = code
            body = struct.pack("!H", code) + reason.encode()[:120]
            self.transport.write(frame_header(len(body), 0x8) + body)
        if not self.lost:
            try:
                await asyncio.wait_for(self.closed_event.wait(), timeout)
            except TimeoutError:
                pass
            self.transport.close()
        self._wake()


class BinaryFastChannel(FastChannel):
    """FastChannel whose server frames are BINARY (opcode 2), as Gemini's are."""

    OPCODE = 0x2
    FALLBACK = BinaryWsChannel
