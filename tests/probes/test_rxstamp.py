"""Kernel receive timestamps: a late reader still learns when the bytes arrived."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from probes import rxstamp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS")


@pytest.fixture(autouse=True, scope="module")
def stamping_on():
    """The kernel switches packet stamping on asynchronously (rxstamp.warm): give it a moment
    before the first measurement, or that packet is stamped when read."""
    rxstamp.warm()
    time.sleep(0.05)


def pair():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=5)
    s, _ = srv.accept()
    srv.close()
    return rxstamp.stamping(c), s


def test_late_reader_gets_the_arrival_time_on_perf_counter():
    c, s = pair()
    try:
        assert type(c).__name__ == "StampingSocket"
        sent = time.perf_counter_ns()
        s.sendall(b"hello")
        time.sleep(0.1)  # the reader is 100 ms late
        assert c.recv(100) == b"hello"
        read = time.perf_counter_ns()
        assert read - sent >= 100_000_000
        # arrival, not the late read (the clock conversion is good to a few microseconds)
        assert -50_000 <= c.rx_ns - sent < 5_000_000
    finally:
        c.close()
        s.close()


def test_a_read_spanning_two_arrivals_gets_the_later_one():
    c, s = pair()
    try:
        s.sendall(b"a")
        time.sleep(0.05)
        second = time.perf_counter_ns()
        s.sendall(b"b")
        time.sleep(0.05)
        assert c.recv(100) == b"ab"
        # never earlier than the last byte's arrival: conservative for every frame in the read
        assert -50_000 <= c.rx_ns - second < 5_000_000
    finally:
        c.close()
        s.close()


def test_settings_survive_the_rewrap():
    raw = socket.socket()
    raw.settimeout(2.5)
    wrapped = rxstamp.stamping(raw)
    assert wrapped.gettimeout() == 2.5
    wrapped.close()
