"""The transport's lean receive path (probes/transport.py `_lean`): whole data frames are cut out
of the stream and delivered directly, everything else goes to websockets' protocol, and the two
interleave without losing order, answers or error handling. Against a raw loopback server that
writes exactly the bytes each test wants (frames split anywhere, pings, fragments, bad frames)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
import time

from probes import transport
from probes.transport import connect_websocket


def frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv: int = 0,
          mask: bytes | None = None) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


class RawServer:
    """Accepts one connection, completes the upgrade, then runs `script(conn)`; keeps what
    the client sent afterwards."""

    def __init__(self, script):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.script = script
        self.received = b""
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        c, _ = self.srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key:")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                               .digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        self.script(c)
        c.settimeout(0.3)  # then read what the client answers until it goes quiet
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                self.received += d
        except OSError:
            pass
        c.close()
        self.srv.close()


def run(script, timeout_s: float = 5.0):
    """(frames delivered, (close code, reason), bytes the client wrote after the upgrade)."""
    got: list[bytes] = []
    closed: list[tuple[int, str]] = []
    done = threading.Event()
    srv = RawServer(script)

    def on_close(code, reason):
        closed.append((code, reason))
        done.set()

    ws = connect_websocket(f"ws://127.0.0.1:{srv.port}/", [], ca_file=None, timeout_s=5,
                           on_frame=lambda d, t: got.append(d), on_close=on_close)
    done.wait(timeout_s)
    ws.close()
    srv.t.join(5)
    return got, closed, srv.received


def _close(code=1000):
    return frame(struct.pack("!H", code), opcode=8)


def test_many_frames_split_at_every_byte_arrive_whole_and_in_order():
    msgs = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 37 % 300)) for i in range(40)]
    msgs.append(b"y" * 70_000)  # a 64-bit length
    stream = b"".join(frame(m) for m in msgs) + _close()

    def script(c):
        for i in range(0, len(stream), 7):  # 7-byte writes: headers and lengths split
            c.sendall(stream[i:i + 7])
            if i % 7000 == 0:
                time.sleep(0.001)

    got, closed, _ = run(script)
    assert got == msgs
    assert closed == [(1000, "")]


def test_a_ping_between_data_frames_is_answered_and_the_lean_path_resumes():
    before = [b"a1", b"a2"]
    after = [b"b%d" % i for i in range(20)]

    def script(c):
        time.sleep(0.05)  # after the 101, in a read of their own: the lean path's
        c.sendall(b"".join(frame(m) for m in before) + frame(b"hi", opcode=9)
                  + frame(after[0]))
        time.sleep(0.05)
        c.sendall(b"".join(frame(m) for m in after[1:]) + _close())

    got, closed, received = run(script)
    assert got == before + after
    assert closed == [(1000, "")]
    # the client's pong (opcode 0xA, masked, payload "hi") went out
    assert received[0] == 0x8A and received[1] == 0x80 | 2
    mask = received[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(received[6:8])) == b"hi"


def test_a_ping_that_came_with_the_upgrade_response_is_answered_too():
    def script(c):  # no pause: the 101 and these frames share the client's first read
        c.sendall(frame(b"first") + frame(b"hi", opcode=9))
        time.sleep(0.05)
        c.sendall(frame(b"second") + _close())

    got, closed, received = run(script)
    assert got == [b"first", b"second"] and closed == [(1000, "")]
    assert received[0] == 0x8A, received[:8].hex()


def test_a_fragmented_message_goes_through_the_protocol_whole():
    def script(c):
        c.sendall(frame(b"one") + frame(b"par", fin=False) + frame(b"t1", opcode=0, fin=False))
        time.sleep(0.02)
        c.sendall(frame(b"-end", opcode=0) + frame(b"two") + _close())

    got, closed, _ = run(script)
    assert got == [b"one", b"part1-end", b"two"]
    assert closed == [(1000, "")]


def test_frames_the_protocol_must_refuse_still_end_the_connection_as_before():
    def masked(c):  # a server must not mask: protocol error 1002
        c.sendall(frame(b"ok") + frame(b"bad", mask=b"\1\2\3\4"))

    got, closed, _ = run(masked)
    assert got == [b"ok"] and closed and closed[0][0] == 1002

    def reserved(c):  # RSV1 without an extension: 1002
        c.sendall(frame(b"ok") + frame(b"bad", rsv=0x40))

    got, closed, _ = run(reserved)
    assert got == [b"ok"] and closed[0][0] == 1002

    def oversized(c):  # over MAX_FRAME_BYTES: 1009
        c.sendall(frame(b"ok") + frame(b"z" * (transport.MAX_FRAME_BYTES + 1)))

    got, closed, _ = run(oversized)
    assert got == [b"ok"] and closed[0][0] == 1009


def test_an_eof_mid_frame_is_an_abnormal_close():
    def script(c):
        c.sendall(frame(b"ok") + frame(b"cut short")[:5])
        c.shutdown(socket.SHUT_WR)

    got, closed, _ = run(script)
    assert got == [b"ok"] and closed == [(1006, "")]


def _read_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(opcode, masked, unmasked payload) of every whole client frame in `data`."""
    out, i = [], 0
    while len(data) - i >= 2:
        b0, b1 = data[i], data[i + 1]
        n, h = b1 & 0x7F, 2
        if n == 126:
            n, h = struct.unpack("!H", data[i + 2:i + 4])[0], 4
        elif n == 127:
            n, h = struct.unpack("!Q", data[i + 2:i + 10])[0], 10
        masked = bool(b1 & 0x80)
        key = data[i + h:i + h + 4] if masked else b"\0\0\0\0"
        h += 4 if masked else 0
        body = data[i + h:i + h + n]
        if len(body) < n:
            break
        out.append((b0, masked, bytes(b ^ key[j % 4] for j, b in enumerate(body))))
        i += h + n
    return out


def test_sent_messages_are_masked_text_frames_of_every_length_class():
    msgs = [b"", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536, b'{"type":"a"}']
    srv_done = threading.Event()

    def script(c):
        srv_done.wait(5)
        c.sendall(_close())

    got: list = []
    srv = RawServer(script)
    ws = connect_websocket(f"ws://127.0.0.1:{srv.port}/", [], ca_file=None, timeout_s=5,
                           on_frame=lambda d, t: got.append(d), on_close=lambda c, r: None)
    for m in msgs:
        ws.send(m)
    srv_done.set()
    srv.t.join(5)
    ws.close()
    frames = _read_frames(srv.received)
    data = [f for f in frames if f[0] == 0x81]
    assert [p for _, _, p in data] == msgs
    assert all(masked for _, masked, _ in frames)
    assert frames[len(msgs)][0] == 0x88  # then our answer to the server's close
