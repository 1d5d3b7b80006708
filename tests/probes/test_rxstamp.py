"""Kernel receive timestamps: a late reader still learns when the bytes arrived."""

from __future__ import annotations

import fcntl
import select
import socket
import sys
import termios
import time

import pytest

from probes import rxstamp
from tests.timing import bounded

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS")


def stamps_at_arrival(timeout: float = 5.0) -> float:
    """Poll until the kernel stamps packets when they arrive, not when they are read: a
    datagram is left unread for 20 ms after it is queued, and its stamp must be that much older
    than the read. Returns the seconds it took; fails at the deadline."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, rxstamp.SO_TIMESTAMPNS, 1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            tx.sendto(b"x", rx.getsockname())
            assert select.select([rx], [], [], 2.0)[0], "a loopback datagram did not arrive"
            time.sleep(0.02)  # the gap being measured, not a wait for something to happen
            _, anc, _, _ = rx.recvmsg(16, rxstamp._ANC_SIZE)
            read = time.time_ns()
            [(_, _, cdata)] = anc
            sec, nsec = rxstamp._TIMESPEC.unpack_from(cdata)
            if read - (sec * 1_000_000_000 + nsec) >= 15_000_000:
                return time.monotonic() - t0
        raise AssertionError(f"the kernel still stamps packets at read time after {timeout} s")
    finally:
        rx.close()
        tx.close()


@pytest.fixture(autouse=True, scope="module")
def stamping_on():
    """The kernel switches packet stamping on asynchronously (rxstamp.warm): wait until the
    keeper socket is open and a probe datagram shows stamps taken on arrival."""
    rxstamp.warm()
    [keeper] = rxstamp._warm
    assert keeper.getsockopt(socket.SOL_SOCKET, rxstamp.SO_TIMESTAMPNS) == 1
    stamps_at_arrival()


def queued(sock: socket.socket, n: int, timeout: float = 5.0) -> None:
    """Wait until `n` bytes sit in the socket's receive queue (FIONREAD), unread."""
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while True:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
        if int.from_bytes(buf, sys.byteorder) >= n:
            return
        assert time.monotonic() < deadline, f"{n} bytes not queued within {timeout} s"
        time.sleep(0.001)


def pair():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=5)
    s, _ = srv.accept()
    srv.close()
    return rxstamp.stamping(c), s


def arrival_misses(rx_ns: int, truth_ns: int) -> list:
    """The stamp is the arrival, not the late read: within [-50 us, 5 ms) of the send (the clock
    conversion is good to a few microseconds). A timing bound: a preemption between taking
    `truth_ns` and the send shows as a miss, so it runs under tests/timing.bounded."""
    d = rx_ns - truth_ns
    return [] if -50_000 <= d < 5_000_000 else [f"stamp {d / 1e6:.3f} ms after the send"]


def test_late_reader_gets_the_arrival_time_on_perf_counter():
    def measure():
        c, s = pair()
        try:
            assert type(c).__name__ == "StampingSocket"
            sent = time.perf_counter_ns()
            s.sendall(b"hello")
            queued(c, 5)
            time.sleep(0.1)  # the reader is 100 ms late (the delay under test)
            assert c.recv(100) == b"hello"
            read = time.perf_counter_ns()
            assert read - sent >= 100_000_000
            return c.rx_ns, sent
        finally:
            c.close()
            s.close()

    bounded(measure, lambda r: arrival_misses(*r), pids=[], budget_ms=5.0,
            what="kernel stamp of a late read")


def test_a_read_spanning_two_arrivals_gets_the_later_one():
    def measure():
        c, s = pair()
        try:
            s.sendall(b"a")
            queued(c, 1)
            time.sleep(0.05)  # two arrivals 50 ms apart
            second = time.perf_counter_ns()
            s.sendall(b"b")
            queued(c, 2)
            time.sleep(0.05)  # and a late reader
            assert c.recv(100) == b"ab"
            return c.rx_ns, second
        finally:
            c.close()
            s.close()

    # never earlier than the last byte's arrival: conservative for every frame in the read
    bounded(measure, lambda r: arrival_misses(*r), pids=[], budget_ms=5.0,
            what="kernel stamp of a read spanning two arrivals")


def test_settings_survive_the_rewrap():
    raw = socket.socket()
    raw.settimeout(2.5)
    wrapped = rxstamp.stamping(raw)
    assert wrapped.gettimeout() == 2.5
    wrapped.close()
