"""The pacing scheduler (probes/pacing.py): every chunk of every stream sent, in order, at its
intended time, never early; under a fake clock (the schedule itself) and then on its real
thread (bounded, not timed)."""

from __future__ import annotations

import random
import threading

import pytest

from probes.pacing import Pacer, Stream

MS = 1_000_000


class FakeClock:
    def __init__(self, t: int = 1_000 * MS) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def run_fake(pacer: Pacer, clock: FakeClock, late_ns=lambda: 0, limit: int = 100_000) -> int:
    """Drive the loop: jump the clock to the next due chunk (plus an optional lateness)."""
    wakes = 0
    nxt = pacer.step(clock())
    while nxt is not None and wakes < limit:
        clock.t = max(clock.t, nxt + late_ns())
        nxt = pacer.step(clock())
        wakes += 1
    return wakes


def recorder(clock, log, name):
    return lambda m: log.append((name, m, clock()))


def test_every_chunk_in_order_at_its_intended_time_under_a_fake_clock():
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    rng = random.Random(7)
    log: list = []
    streams = {}
    for i in range(50):  # 50 sessions, chunk sizes 20..100 ms, starts spread over 1 s
        chunk = rng.choice((20, 40, 100)) * MS
        t0 = clock.t + rng.randrange(0, 1000, 20) * MS + (rng.randrange(0, MS) if i % 2 else 0)
        msgs = [f"{i}:{k}".encode() for k in range(rng.randrange(1, 40))]
        s = Stream(msgs, t0, chunk, recorder(clock, log, i))
        streams[i] = s
        pacer.submit(s)
    wakes = run_fake(pacer, clock)
    assert len(log) == sum(len(s.msgs) for s in streams.values())
    for i, s in streams.items():
        mine = [(m, t) for name, m, t in log if name == i]
        assert [m for m, _ in mine] == list(s.msgs)  # every chunk, in order
        assert [t for _, t in mine] == [s.t0 + k * s.chunk_ns for k in range(len(s.msgs))]
        assert s.lags == [0] * len(s.msgs) and s.finished and s.error is None
    # one wake-up serves every chunk due at the same instant: fewer wake-ups than chunks
    assert wakes < len(log)


def test_a_late_loop_records_each_chunk_lag_and_never_sends_early():
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    log: list = []
    s = Stream([b"a", b"b", b"c", b"d"], clock.t + 10 * MS, 100 * MS, recorder(clock, log, 0))
    pacer.submit(s)
    lates = iter([3 * MS, 0, 250 * MS, 0, 0, 0])  # the 3rd wake-up is 250 ms late
    run_fake(pacer, clock, late_ns=lambda: next(lates))
    due = [s.t0 + k * s.chunk_ns for k in range(4)]
    sent = [t for _, _, t in log]
    assert [m for _, m, _ in log] == [b"a", b"b", b"c", b"d"]
    assert all(t >= d for t, d in zip(sent, due, strict=True))  # never early
    assert s.lags == [t - d for t, d in zip(sent, due, strict=True)]
    assert s.lags[0] == 3 * MS and max(s.lags) >= 150 * MS  # lateness is recorded, not absorbed


def test_chunks_due_together_are_sent_in_one_step_each_stamped_before_its_send():
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    stamps: list[int] = []

    def slow_send(m):  # each send costs 1 ms of the loop's time
        stamps.append(clock.t)
        clock.t += MS

    streams = [Stream([b"x"], clock.t, 100 * MS, slow_send) for _ in range(5)]
    for s in streams:
        pacer.submit(s)
    assert pacer.step(clock()) is None
    assert [s.lags[0] for s in streams] == [0, MS, 2 * MS, 3 * MS, 4 * MS]


def test_check_ends_a_stream_before_its_next_chunk_and_on_sent_marks_each():
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    sent, marks = [], []
    stop = {"at": 2}

    def check():
        if len(sent) >= stop["at"]:
            raise RuntimeError("receiver failed")

    s = Stream([b"0", b"1", b"2", b"3"], clock.t, 100 * MS, sent.append, check=check,
               on_sent=lambda k, now: marks.append((k, now)))
    other = Stream([b"o"] * 4, clock.t, 100 * MS, lambda m: None)
    pacer.submit(s)
    pacer.submit(other)
    run_fake(pacer, clock)
    assert sent == [b"0", b"1"] and isinstance(s.error, RuntimeError)
    assert marks == [(0, s.t0), (1, s.t0 + 100 * MS)]
    assert other.finished and other.error is None and len(other.lags) == 4  # others go on


def test_a_stream_that_cannot_write_is_handed_back_and_does_not_hold_up_others():
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    blocked = Stream([b"b0", b"b1"], clock.t, 100 * MS, lambda m: None, writable=lambda: False)
    free_log: list = []
    free = Stream([b"f0", b"f1", b"f2"], clock.t, 100 * MS, free_log.append)
    pacer.submit(blocked)
    pacer.submit(free)
    run_fake(pacer, clock)
    assert blocked.handoff and blocked.k == 0 and blocked._done.is_set()  # the owner's turn
    assert free_log == [b"f0", b"f1", b"f2"]


@pytest.mark.timeout(20)
def test_on_the_real_loop_concurrent_owners_get_every_chunk_in_order():
    pacer = Pacer()
    from time import perf_counter_ns
    results: dict[int, list] = {}
    errors: list = []

    def owner(i):
        got: list = []
        results[i] = got
        s = Stream([bytes([i, k]) for k in range(10)], perf_counter_ns() + 5 * MS, 10 * MS,
                   got.append)
        try:
            pacer.play(s, timeout_s=10)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        assert all(lag >= 0 for lag in s.lags)

    threads = [threading.Thread(target=owner, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors
    assert all(results[i] == [bytes([i, k]) for k in range(10)] for i in range(20))
    assert pacer.sent == 200


def test_play_sends_handed_back_chunks_itself_and_raises_the_streams_error():
    pacer = Pacer()
    from time import perf_counter_ns
    got: list = []
    flip = iter([False, True, False, True])
    s = Stream([b"a", b"b", b"c", b"d"], perf_counter_ns(), 2 * MS, got.append,
               writable=lambda: next(flip))
    pacer.play(s, timeout_s=5)
    assert got == [b"a", b"b", b"c", b"d"] and len(s.lags) == 4

    def boom(m):
        raise OSError("gone")

    bad = Stream([b"x", b"y"], perf_counter_ns(), 2 * MS, boom)
    with pytest.raises(OSError):
        pacer.play(bad, timeout_s=5)


def test_transport_writable_turns_false_when_the_server_stops_reading():
    """WebSocketTransport.writable(), what the pacer asks before sending: true on a fresh
    connection, false once the kernel's send queue fills because the server reads nothing."""
    import base64
    import hashlib
    import socket

    from probes.transport import connect_websocket

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    held: list = []

    def serve():
        c, _ = srv.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key:")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                               .digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        held.append(c)  # and never read again

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ws = connect_websocket(f"ws://127.0.0.1:{port}/", [], ca_file=None, timeout_s=5,
                           on_frame=lambda d, t: None, on_close=lambda c, r: None)
    try:
        assert ws.writable()
        chunk = b"x" * 6400
        sent = 0
        while ws.writable() and sent < 20_000:  # bounded: ~128 MB would mean it never fills
            ws.send(chunk)
            sent += 1
        assert not ws.writable() and sent < 20_000, sent
    finally:
        for c in held:
            c.close()
        ws.close()
        srv.close()


def test_a_failed_stream_leaves_no_reference_cycle():
    """The session's sender must not leave cycles (tests/probes/test_no_cycles.py): a stream
    whose send raised is freed by refcounting once play() has raised."""
    import gc
    import weakref
    from time import perf_counter_ns

    pacer = Pacer()

    def boom(m):
        raise OSError("gone")

    gc.collect()
    gc.disable()
    try:
        s = Stream([b"x"], perf_counter_ns(), MS, boom)
        ref = weakref.ref(s)
        try:
            pacer.play(s, timeout_s=5)
        except OSError:
            pass
        del s
        alive = ref() is not None
    finally:
        gc.enable()
    assert not alive
