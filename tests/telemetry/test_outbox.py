"""Outbox policy over a real loopback HTTP server that answers from a script."""

import http.server
import threading
import time

import pytest

from telemetry.outbox import Outbox
from telemetry.points import Point
from telemetry.sinks import InfluxV1Sink
from telemetry.transports import V1Transport, parse_retry_after


class Scripted(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with srv.lock:
            status, headers, msg = srv.script.pop(0) if srv.script else (204, {}, b"")
            srv.requests.append((time.monotonic(), status, body))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg)

    def log_message(self, *a):
        pass


@pytest.fixture
def scripted():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    srv.lock, srv.script, srv.requests = threading.Lock(), [], []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _outbox(srv, tmp_path, **kw):
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    return Outbox(
        str(tmp_path / "ob.sqlite"), V1Transport(InfluxV1Sink(url=url, database="d")), **kw
    )


def pts(a, b):
    return [Point("m", {"k": "v"}, {"i": i}, i) for i in range(a, b)]


@pytest.mark.slow
def test_retry_after_is_honoured(scripted, tmp_path):
    scripted.script = [(503, {"Retry-After": "1"}, b'{"error":"busy"}')]
    ob = _outbox(scripted, tmp_path, backoff_initial_s=0.01)
    ob.write(pts(0, 3))
    assert ob.flush(10.0)
    (t1, s1, b1), (t2, s2, b2) = scripted.requests
    assert (s1, s2) == (503, 204) and b1 == b2
    assert t2 - t1 >= 1.0
    h = ob.health()
    assert (h["delivered"], h["retried"], h["pending"]) == (3, 1, 0)
    ob.close()


@pytest.mark.slow
def test_backoff_grows_with_jitter_and_429_is_transient(scripted, tmp_path):
    scripted.script = [(500, {}, b"")] * 3 + [(429, {}, b"")]
    ob = _outbox(scripted, tmp_path, backoff_initial_s=0.2, backoff_max_s=10)
    ob.write(pts(0, 1))
    assert ob.flush(20.0)
    times = [t for t, _, _ in scripted.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 4
    for k, g in enumerate(gaps):  # attempt k+1 waits 0.2 * 2^k * U(0.5, 1)
        assert 0.2 * 2**k * 0.5 <= g, (k, gaps)
    assert ob.health()["retried"] == 4 and ob.health()["dead_lettered"] == 0
    ob.close()


def test_size_bound_drops_oldest_and_counts(scripted, tmp_path):
    ob = _outbox(scripted, tmp_path, max_points=100, start=False)
    for a in range(0, 150, 10):
        ob.write(pts(a, a + 10))
    h = ob.health()
    assert (h["pending"], h["dropped"]) == (100, 50)
    ob.start()
    assert ob.flush(10.0)
    sent = b"\n".join(b for _, _, b in scripted.requests).decode().splitlines()
    assert [int(x.split()[-1]) for x in sent] == list(range(50, 150))  # the newest 100
    ob.close()


def test_pending_points_survive_a_restart(scripted, tmp_path):
    scripted.script = [(503, {}, b"")] * 1000
    ob = _outbox(scripted, tmp_path, backoff_initial_s=0.05, backoff_max_s=0.05)
    ob.write(pts(0, 25))
    assert not ob.close(0.3)
    assert scripted.requests  # it tried
    scripted.script = []
    ob2 = _outbox(scripted, tmp_path)
    assert ob2.health()["pending"] == 25
    assert ob2.flush(10.0)
    ob2.close()
    last = scripted.requests[-1]
    assert last[1] == 204 and last[2].count(b"\n") == 24


@pytest.mark.slow
def test_write_returns_while_server_hangs(tmp_path):
    """A server that accepts and never answers: write() still returns at once."""
    import socket

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    url = f"http://127.0.0.1:{lsock.getsockname()[1]}"
    ob = Outbox(str(tmp_path / "ob.sqlite"), V1Transport(InfluxV1Sink(url=url, database="d")))
    worst = 0.0
    for a in range(0, 2000, 100):
        t = time.perf_counter()
        ob.write(pts(a, a + 100))
        worst = max(worst, time.perf_counter() - t)
    assert ob.health()["pending"] == 2000
    assert worst < 0.5, worst  # local disk append, not a network wait (~1 ms quiet)
    assert not ob.close(0.2)
    lsock.close()


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
