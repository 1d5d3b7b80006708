"""Kernel receive timestamps: a late reader still learns when the bytes arrived."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from probes import rxstamp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS")


def pair():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=5)
    s, _ = srv.accept()
    srv.close()
    return rxstamp.stamping(c), s


def wall_offset() -> int:
    return time.time_ns() - time.perf_counter_ns()


def steady(measure, tries: int = 5):
    """Run `measure` until the wall clock did not step during it (the kernel stamps on
    CLOCK_REALTIME: a step makes the stamp unusable and rxstamp falls back to the read time,
    which is what it should do, but then this test cannot judge the stamp)."""
    for _ in range(tries):
        before = wall_offset()
        out = measure()
        if abs(wall_offset() - before) < 1_000_000:
            return out
    pytest.fail(f"the wall clock stepped during each of {tries} tries")


def test_late_reader_gets_the_arrival_time_on_perf_counter():
    def measure():
        c, s = pair()
        try:
            assert type(c).__name__ == "StampingSocket"
            sent = time.perf_counter_ns()
            s.sendall(b"hello")
            time.sleep(0.1)  # the reader is 100 ms late
            assert c.recv(100) == b"hello"
            return sent, time.perf_counter_ns(), c.rx_ns
        finally:
            c.close()
            s.close()

    sent, read, rx = steady(measure)
    assert read - sent >= 100_000_000
    # arrival, not the late read (the clock conversion is good to a few microseconds)
    assert -50_000 <= rx - sent < 5_000_000


def test_a_read_spanning_two_arrivals_gets_the_later_one():
    def measure():
        c, s = pair()
        try:
            s.sendall(b"a")
            time.sleep(0.05)
            second = time.perf_counter_ns()
            s.sendall(b"b")
            time.sleep(0.05)
            assert c.recv(100) == b"ab"
            return second, c.rx_ns
        finally:
            c.close()
            s.close()

    second, rx = steady(measure)
    # never earlier than the last byte's arrival: conservative for every frame in the read
    assert -50_000 <= rx - second < 5_000_000


def test_settings_survive_the_rewrap():
    raw = socket.socket()
    raw.settimeout(2.5)
    wrapped = rxstamp.stamping(raw)
    assert wrapped.gettimeout() == 2.5
    wrapped.close()
