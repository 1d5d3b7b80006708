"""The transport seam: how the engine reaches a server, whatever carries the bytes.

The engine (probes/session.py) speaks to a `Transport` only: `connect()` opens it (or raises
`Failure` with one of the stable error classes), `send()` writes one message, every message the
server sends reaches `on_frame(data, rx_ns)` with its receive stamp, and `on_close(code,
reason)` runs exactly once when the connection is gone. The receiver's marks (probes/marks.py)
never see the transport: they get the dialect's normalised events and the stamps.

How to plug in a transport (e.g. WebRTC, issue 16): write a class with `open_ns`, `send()` and
`close()`, and a `connect(...)` with the signature of `connect_websocket` that delivers the
event channel's messages (the data channel's) to `on_frame` with their arrival stamps, from its
own thread or greenlet, and calls `on_close` once. Media (RTP audio) is the transport's business:
it turns what it hears into the dialect's normalised events (an `AudioDelta` per decoded
packet, stamped on arrival) and hands them to the same marks, so marks.py's callers do not
change. Stamps are `perf_counter_ns()` values (CLOCK_MONOTONIC), the kernel's where possible.

`WebSocketTransport` drives websockets' public sans-I/O `ClientProtocol` over a socket it owns:
it reads, feeds `receive_data`, takes `events_received()`, and writes `data_to_send()`. Blocking
socket calls and one receive thread per connection, so it runs under OS threads and, unchanged,
as greenlets under gevent's monkey-patching (threading, socket, ssl and select are patched).
Plain ws:// sockets carry kernel receive stamps (probes/rxstamp.py); wss:// cannot recvmsg and
is stamped when the read returns.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import ssl
import struct
import termios
import threading
from collections.abc import Callable
from os import urandom
from time import perf_counter_ns
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN, State
from websockets.uri import parse_uri

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C helper
    from websockets.utils import apply_mask

from probes import rxstamp
from probes.outcomes import CONFIG, Failure
from probes.results import http_status, timeout

#: Largest message accepted (the websockets default; replies come in small deltas): a bigger
#: one ends the session as ws_closed_1009.
MAX_FRAME_BYTES = 2**20
#: A send blocked this long (the server stopped reading) ends the session as timeout:send;
#: without it a blocking sendall could hang a session past every deadline.
SEND_BLOCK_TIMEOUT_S = 10.0
#: How long close() waits for the server's side of the closing handshake.
CLOSE_TIMEOUT_S = 2.0
RECV_BUFSIZE = 65536
USER_AGENT = "voicepulse"

_NS = 1_000_000_000
_INT0 = b"\0\0\0\0"
_H16 = struct.Struct("!BBH").pack
_H64 = struct.Struct("!BBQ").pack
_LOG = logging.getLogger("probes.websockets")
# websockets logs every handshake header at DEBUG, Authorization included: never emit those
_LOG.setLevel(logging.INFO)

OnFrame = Callable[[bytes, int], None]
OnClose = Callable[[int, str], None]


class Closed(Exception):
    """send() found the connection gone; on_close has run or is about to."""


class SendTimeout(Closed):
    """send() blocked SEND_BLOCK_TIMEOUT_S (the server stopped reading); the connection is cut."""


class Transport(Protocol):
    """What the engine needs of an open connection."""

    #: when the server's answer to the opening handshake arrived (perf_counter_ns)
    open_ns: int

    def send(self, data: bytes) -> None:
        """Write one text message. Raises Closed (or SendTimeout) if it cannot."""
        ...

    def close(self) -> None:
        """Close, bounded in time; on_close has run and no frame is delivered after it returns."""
        ...


def connect_websocket(url: str, headers, *, ca_file: str | None, timeout_s: float,
                      on_frame: OnFrame, on_close: OnClose) -> WebSocketTransport:
    """Open a WebSocket to `url` with extra `headers` ((name, value) pairs, may hold the key)
    within `timeout_s`; frames start arriving at `on_frame` at once. Raises Failure with the
    stable error class of whatever went wrong (config, dns, connect_refused, connect_timeout,
    tls, http_<status>, timeout:connect, protocol)."""
    start = perf_counter_ns()
    deadline = start + int(timeout_s * _NS)
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    try:
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
    except ValueError as e:
        raise Failure(CONFIG, f"bad URL {redact_url(url)}: {e}") from None
    if not host or parts.scheme not in ("ws", "wss"):
        raise Failure(CONFIG, f"bad URL {redact_url(url)}: need ws:// or wss:// and a host")
    try:
        uri = parse_uri(url)
    except InvalidURI as e:
        raise Failure(CONFIG, f"bad URL {redact_url(url)}: {e}") from None
    ctx = None
    if secure:
        try:
            ctx = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise Failure(CONFIG, f"cannot load ca_file {ca_file}: {e}") from None
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as e:
        raise Failure("dns", f"cannot resolve {host}: {e}") from None
    except TimeoutError:
        raise Failure(
            "connect_timeout", f"TCP connect to {host}:{port} took over {timeout_s:g} s"
        ) from None
    except ConnectionRefusedError:
        raise Failure("connect_refused", f"{host}:{port} refused the connection") from None
    except OSError as e:
        raise Failure("connect_refused", f"cannot reach {host}:{port}: {e}") from None
    dropped = f"{host}:{port} dropped the connection before upgrading"
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        if secure:
            sock.settimeout(_left(deadline))
            sock = ctx.wrap_socket(sock, server_hostname=host)
        else:
            sock = rxstamp.stamping(sock)
        proto = ClientProtocol(uri, max_size=MAX_FRAME_BYTES, logger=_LOG)  # no extensions:
        open_ns, rest = _handshake(sock, proto, headers, deadline)  # compression=None
    except InvalidStatus as e:
        sock.close()
        status = e.response.status_code
        body = bytes(e.response.body or b"")[:300].decode("utf-8", "replace")
        raise Failure(http_status(status), f"HTTP {status} on upgrade: {body}") from None
    except ssl.SSLError as e:
        sock.close()
        raise Failure("tls", f"TLS with {host}:{port} failed: {e}") from None
    except TimeoutError:
        sock.close()
        raise Failure(timeout("connect"),
                      f"no WebSocket upgrade from {host}:{port} within {timeout_s:g} s") from None
    except InvalidHandshake as e:
        sock.close()
        if isinstance(e.__cause__, EOFError | ConnectionError):
            raise Failure("connect_refused", dropped) from None
        raise Failure("protocol", f"bad upgrade response: {e}") from None
    except (EOFError, ConnectionError):
        sock.close()
        raise Failure("connect_refused", dropped) from None
    except OSError as e:
        sock.close()
        raise Failure("connect_refused", f"connection to {host}:{port} failed: {e}") from None
    # receives never time out (a quiet server is not an error); this bounds sends only
    sock.settimeout(SEND_BLOCK_TIMEOUT_S)
    return WebSocketTransport(sock, proto, open_ns, rest, on_frame, on_close)


def _left(deadline: int) -> float:
    left = (deadline - perf_counter_ns()) / _NS
    if left <= 0:
        raise TimeoutError
    return left


def _handshake(sock, proto: ClientProtocol, headers, deadline: int) -> tuple[int, list]:
    """Send the upgrade request and read until the response: (its arrival stamp, the frames
    that came in the same reads)."""
    request = proto.connect()
    request.headers.update(list(headers))
    request.headers.setdefault("User-Agent", USER_AGENT)
    proto.send_request(request)
    sock.settimeout(_left(deadline))
    sock.sendall(b"".join(proto.data_to_send()))
    while True:
        sock.settimeout(_left(deadline))
        data = sock.recv(RECV_BUFSIZE)
        t = getattr(sock, "rx_ns", 0) or perf_counter_ns()
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
        events = proto.events_received()
        out = proto.data_to_send()
        if proto.handshake_exc is not None:
            raise proto.handshake_exc  # out is only an EOF then; we close the socket
        if events and isinstance(events[0], Response):
            # frames that came with the 101 are parsed already: answer a ping among them
            pong = b"".join(out)
            if pong:
                sock.sendall(pong)
            return t, events[1:]
        if not data:
            raise EOFError("connection closed before the upgrade response")


class WebSocketTransport:
    """One open WebSocket: a receive thread (a greenlet under gevent) feeding on_frame, and
    send() from the caller's thread; a lock keeps the protocol state and the writes whole."""

    def __init__(self, sock, proto: ClientProtocol, open_ns: int, pending: list,
                 on_frame: OnFrame, on_close: OnClose) -> None:
        self.open_ns = open_ns
        self._sock = sock
        self._proto = proto
        self._on_frame = on_frame
        self._on_close = on_close
        self._lock = threading.Lock()
        self._fd = sock.fileno()
        self._sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self._frag: list[bytes] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, args=(pending,), daemon=True,
                                        name="vp-ws-receive")
        self._thread.start()

    # ---- sending (caller's thread) -------------------------------------------------------

    def send(self, data: bytes) -> None:
        """One unfragmented TEXT frame, masked with a fresh os.urandom key (RFC 6455 5.3),
        built here and written in one call: websockets' protocol keeps no state for data
        frames it sends (only for fragments, which we never send, and for close)."""
        n = len(data)
        if n < 126:
            head = bytes((0x81, 0x80 | n))
        elif n < 65536:
            head = _H16(0x81, 0xFE, n)
        else:
            head = _H64(0x81, 0xFF, n)
        mask = urandom(4)
        frame = b"".join((head, mask, apply_mask(data, mask)))
        with self._lock:
            if self._proto.state is not OPEN:
                raise Closed()
            self._write((frame,))

    def writable(self) -> bool:
        """Whether a chunk would go out without blocking: the kernel's unsent send queue is
        under half the send buffer (TIOCOUTQ; one ioctl, never a wait). The shared pacer
        (probes/pacing.py) sends only then and hands the chunk back to the session otherwise."""
        try:
            queued = struct.unpack("i", fcntl.ioctl(self._fd, termios.TIOCOUTQ, _INT0))[0]
        except (OSError, ValueError):
            return False
        return queued < self._sndbuf // 2

    def _write(self, chunks: list[bytes]) -> None:
        """Write under the lock; a failed write cuts the connection (the receiver then ends)."""
        try:
            for c in chunks:
                if c:
                    self._sock.sendall(c)
                else:  # SEND_EOF: half-close
                    self._sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            self._cut()
            raise SendTimeout() from None
        except OSError:
            self._cut()
            raise Closed() from None

    def _cut(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._proto.state is OPEN:
                self._proto.send_close(1000)
                try:
                    self._write(self._proto.data_to_send())
                except Closed:
                    pass
        if not self._done.wait(CLOSE_TIMEOUT_S):
            self._cut()  # the server never finished the closing handshake
            self._done.wait(CLOSE_TIMEOUT_S)
        try:
            self._sock.close()
        except OSError:
            pass
        # websockets' protocol keeps its parser, a generator over itself: a cycle. The receive
        # loop has ended, nothing is fed any more: drop it.
        if self._done.is_set():
            self._proto.parser = None

    # ---- receiving (own thread) ----------------------------------------------------------

    def _receive(self, pending: list) -> None:
        sock, proto, lock = self._sock, self._proto, self._lock
        stamped = hasattr(sock, "rx_ns")
        close_by: int | None = None  # deadline for the server's EOF once closing
        buf = bytearray()  # the lean path's partial frame
        lean = not proto.reader.buffer  # nothing half-read by the handshake
        try:
            self._deliver(pending, self.open_ns)
            while True:
                try:
                    data = sock.recv(RECV_BUFSIZE)
                except TimeoutError:  # the send timeout, not a receive one: read on
                    if close_by is not None and perf_counter_ns() >= close_by:
                        break
                    continue
                except OSError:
                    break
                t = sock.rx_ns if stamped else perf_counter_ns()
                if lean and data:
                    data = self._lean(buf, data, t)
                    if data is None:  # every whole frame delivered, none for the protocol
                        continue
                with lock:
                    if data:
                        proto.receive_data(data)
                    else:
                        proto.receive_eof()
                    events = proto.events_received()
                    try:
                        self._write(proto.data_to_send())
                    except Closed:
                        pass
                    expect_close = proto.close_expected()
                    # back to the lean path once the protocol holds nothing half-read
                    lean = (proto.state is OPEN and proto.current_size is None
                            and not proto.reader.buffer)
                self._deliver(events, t)
                if not data or proto.state is State.CLOSED:
                    break
                if expect_close and close_by is None:
                    close_by = perf_counter_ns() + int(CLOSE_TIMEOUT_S * _NS)
                    sock.settimeout(CLOSE_TIMEOUT_S)
        except Exception:  # a bug of ours; the session still ends through on_close
            _LOG.exception("WebSocket receive loop failed")
        finally:
            code, reason = 1006, ""
            rcvd, sent = proto.close_rcvd, proto.close_sent
            if rcvd is not None:
                code, reason = rcvd.code, rcvd.reason
            elif sent is not None:
                code, reason = sent.code, sent.reason
            try:
                self._on_close(code, reason)
            finally:
                # nothing is delivered after on_close: drop the callbacks, the one reference
                # cycle we make (session -> transport -> its bound methods -> session), so a
                # finished session is freed by refcounting, never by a cyclic collection
                self._on_frame = self._on_close = _dropped
                self._done.set()

    def _lean(self, buf: bytearray, data: bytes, t: int) -> bytes | None:
        """The fast path for what a voice session receives: whole, unfragmented, unmasked
        TEXT/BINARY frames with no reserved bits, up to MAX_FRAME_BYTES, are cut out of the
        stream and delivered here, all that one read brought, without the protocol's per-frame
        bookkeeping (its state does not change on data frames). At the first frame of any other
        kind (control: ping, close; a fragment; anything the protocol must judge) the rest of
        the stream from that frame on is returned for the protocol (None: nothing for it; a
        partial frame waits in `buf`)."""
        if buf:
            buf += data
            view = buf
        else:
            view = data
        n, i = len(view), 0
        on_frame = self._on_frame
        rest = None
        while n - i >= 2:
            b0, b1 = view[i], view[i + 1]
            if b0 & 0xF0 != 0x80 or b1 & 0x80 or (b0 & 0x0F) not in (1, 2):
                rest = bytes(view[i:])  # fragment, control, reserved bits or masked
                break
            size, h = b1, 2
            if size == 126:
                if n - i < 4:
                    break
                size, h = int.from_bytes(view[i + 2:i + 4], "big"), 4
            elif size == 127:
                if n - i < 10:
                    break
                size, h = int.from_bytes(view[i + 2:i + 10], "big"), 10
            if size > MAX_FRAME_BYTES:
                rest = bytes(view[i:])  # the protocol ends the connection with 1009
                break
            end = i + h + size
            if end > n:
                break
            on_frame(bytes(view[i + h:end]), t)
            i = end
        if rest is not None:
            buf.clear()
            return rest
        if view is buf:
            del buf[:i]
        elif i < n:
            buf += view[i:]
        return None

    def _deliver(self, events: list, t: int) -> None:
        on_frame = self._on_frame
        for ev in events:
            if not isinstance(ev, Frame):
                continue
            op = ev.opcode
            if op is Opcode.TEXT or op is Opcode.BINARY:
                if ev.fin:
                    on_frame(ev.data, t)
                else:
                    self._frag = [ev.data]
            elif op is Opcode.CONT and self._frag is not None:
                self._frag.append(ev.data)
                if ev.fin:
                    data = b"".join(self._frag)
                    self._frag = None
                    on_frame(data, t)
            # ping / pong / close: the protocol answers pings and close frames itself


def _dropped(*_args) -> None:
    """The callbacks after on_close has run: nothing more is delivered."""


def redact_url(url: str) -> str:
    """scheme://host[:port]/path: no user info, no query string, no fragment."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{p.port}" if p.port else "")
        return urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return "<url>"
