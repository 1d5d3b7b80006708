"""Kernel receive timestamps: when data really arrived, not when this process got to it.

A receive loop stamps frames when it runs, and under load (a busy gevent hub, a CPU shared
with other processes) it runs late: on a 2-core box with load ~3 we measured wake-ups 2-4 ms
after the data had arrived, which a latency tool would report as server slowness. Linux stamps
every packet as it is queued on the socket (SO_TIMESTAMPNS, CLOCK_REALTIME); `StampingSocket`
reads it with recvmsg() and converts it onto perf_counter_ns (CLOCK_MONOTONIC) by the two
clocks' offset at that instant. Plain TCP only: TLS sockets cannot recvmsg, so wss keeps the
user-space stamp. Where the option is unavailable, nothing changes.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from time import perf_counter_ns

#: Linux SO_TIMESTAMPNS (not exported by Python's socket module).
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 64
#: A kernel stamp further in the past than this is not trusted (a wall-clock step): use now.
_MAX_AGE_NS = 60 * 1_000_000_000

_classes: dict[type, type] = {}
_warm: list[socket.socket] = []


def warm() -> None:
    """Keep one socket with SO_TIMESTAMPNS open for the life of the process.

    Linux turns packet stamping on lazily (a static key flipped from a workqueue when the first
    socket asks) and off again when the last such socket closes; a packet that arrives while it
    is off gets stamped when it is *read*, i.e. no better than user space. Holding one socket
    keeps it on between sessions."""
    if _warm or not sys.platform.startswith("linux"):
        return
    try:
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return
    _warm.append(keeper)


def stamping(sock: socket.socket) -> socket.socket:
    """`sock` re-wrapped so every recv() records the kernel arrival time in `rx_ns`, or `sock`
    itself if the platform cannot do it. The original object must not be used afterwards."""
    if not sys.platform.startswith("linux") or not hasattr(sock, "recvmsg"):
        return sock
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return sock
    warm()
    base = type(sock)  # socket.socket, or gevent's when monkey-patched
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type("StampingSocket", (base,), {"recv": _recv, "rx_ns": 0})
    timeout = sock.gettimeout()
    new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
    new.settimeout(timeout)
    return new


def _recv(self, bufsize: int, flags: int = 0) -> bytes:
    data, anc, _flags, _addr = self.recvmsg(bufsize, _ANC_SIZE, flags)
    # the wall clock read on both sides of the monotonic one: their midpoint is the wall time
    # at `now` to within a fraction of a microsecond, unless we were preempted in between
    r1 = time.time_ns()
    now = perf_counter_ns()
    r2 = time.time_ns()
    rx = now
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(cdata)
            age = (r1 + r2) // 2 - (sec * 1_000_000_000 + nsec)
            if 0 <= age <= _MAX_AGE_NS:
                rx = now - age
            break
    self.rx_ns = rx
    return data
