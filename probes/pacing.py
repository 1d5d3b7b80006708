"""One pacing loop per process: every session's due audio chunks, sent from one wake-up.

Without it each session's sender sleeps once per chunk (a timer and two context switches per
100 ms chunk per session: 10,000 wake-ups/s at 1,000 sessions). With it the sender hands its
utterance over as a `Stream` (chunk k due at t0 + k * chunk_ns) and waits once; the pacer's loop
wakes at the earliest due chunk of all streams, sends every chunk that is due by then (each
stamped and its send lag recorded just before its own send, so a chunk sent after others in the
same wake-up shows its real lateness) and sleeps until the next. Chunks of a stream go out in
order and never before they are due.

A chunk is sent by the pacer only if the stream's `writable()` says the socket can take it;
otherwise (the server stopped reading) the chunk is handed back to the stream's own thread,
which sends it with the transport's blocking send and its timeout, so one stuck connection can
never hold up the others. The stream's `check()` runs before every chunk (the receiver's
failure, the caller's stop, the session deadline): an exception it raises ends the stream and is
raised in the sender's thread, as is one from `send`.

Plain threading primitives: the loop is an OS thread in a CLI process and, unchanged, a greenlet
under gevent's monkey-patching (Locust). `Pacer.step(now)` is the loop's body without any clock
or wait, so the schedule is tested under a fake clock (tests/probes/test_pacing.py).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence
from time import perf_counter_ns

_NS = 1_000_000_000
#: the loop never sleeps longer than this (a stream submitted meanwhile wakes it anyway)
MAX_WAIT_S = 0.5


class Stream:
    """One utterance's chunks on an absolute schedule, and what to do around each send.

    `send(msg)` writes one chunk; `check()` may raise to end the stream before a chunk;
    `on_sent(k, now_ns)` runs right after chunk k went out (e.g. the turn's speech-sent mark);
    `lags` (a list) gets now - due of every chunk sent; `writable()` (optional) says whether a
    send would go through without blocking."""

    __slots__ = ("msgs", "t0", "chunk_ns", "send", "check", "on_sent", "lags", "writable",
                 "k", "error", "handoff", "_done", "__weakref__")

    def __init__(self, msgs: Sequence[bytes], t0_ns: int, chunk_ns: int, send: Callable,
                 *, check: Callable[[], None] | None = None,
                 on_sent: Callable[[int, int], None] | None = None,
                 lags: list[int] | None = None,
                 writable: Callable[[], bool] | None = None) -> None:
        self.msgs = msgs
        self.t0 = t0_ns
        self.chunk_ns = chunk_ns
        self.send = send
        self.check = check
        self.on_sent = on_sent
        self.lags = lags if lags is not None else []
        self.writable = writable
        self.k = 0  # the next chunk to send
        self.error: BaseException | None = None
        self.handoff = False  # the next chunk is the owner's to send (socket not writable)
        self._done = threading.Event()

    @property
    def due(self) -> int:
        return self.t0 + self.k * self.chunk_ns

    @property
    def finished(self) -> bool:
        return self.error is not None or self.k >= len(self.msgs)

    def send_one(self, now: int) -> None:
        """Send chunk k now (check first, then stamp, send, mark); errors end the stream."""
        try:
            if self.check is not None:
                self.check()
            k = self.k
            self.lags.append(now - (self.t0 + k * self.chunk_ns))
            self.send(self.msgs[k])
            self.k = k + 1
            if self.on_sent is not None:
                self.on_sent(k, now)
        except BaseException as e:  # noqa: BLE001 - raised again in the owner's thread
            self.error = e


class Pacer:
    """The process's pacing loop (start it with `start()`, or drive `step()` yourself)."""

    def __init__(self, clock: Callable[[], int] = perf_counter_ns) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, Stream]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.wakeups = 0  # loop wake-ups (for the benchmark: chunks per wake-up)
        self.sent = 0

    # ---- the owner's side (the session's sender thread) --------------------------------

    def submit(self, s: Stream) -> None:
        """Schedule a stream's chunks; the loop wakes if it is now the earliest."""
        if not s.msgs:
            s._done.set()
            return
        with self._lock:
            early = not self._heap or s.due < self._heap[0][0]
            self._seq += 1
            heapq.heappush(self._heap, (s.due, self._seq, s))
        if early:
            self._wake.set()

    def play(self, s: Stream, timeout_s: float | None = None) -> None:
        """Submit `s` and wait until its last chunk went out; chunks the pacer handed back
        (socket not writable) are sent here, with the caller's blocking send. Raises what
        check() or send() raised; TimeoutError if not done within timeout_s (then it is
        cancelled: no further chunk of it is sent)."""
        self.start()
        self.submit(s)
        deadline = None if timeout_s is None else self._clock() + int(timeout_s * _NS)
        while True:
            left = None if deadline is None else max(0.0, (deadline - self._clock()) / _NS)
            if not s._done.wait(left):
                s.error = _TAKEN  # cancelled: the loop drops it
                raise TimeoutError("pacing: stream not sent in time")
            s._done.clear()
            if s.handoff and s.error is None:
                s.handoff = False
                s.send_one(self._clock())
                if not s.finished:
                    self.submit(s)
                    continue
            if s.error is not None:
                # the stream keeps a stand-in, not the exception: its traceback holds the
                # frames that hold the stream, a cycle only the cyclic collector would free
                err, s.error = s.error, _TAKEN
                try:
                    raise err
                finally:
                    del err  # nor this frame -> err -> its traceback -> this frame
            if s.finished:
                return

    # ---- the loop ---------------------------------------------------------------------

    def step(self, now: int) -> int | None:
        """Send every chunk due by `now` (stamped by the clock just before each send) and
        return when the next one is due (None: nothing scheduled)."""
        heap, lock, clock = self._heap, self._lock, self._clock
        while True:
            with lock:
                if not heap or heap[0][0] > now:
                    return heap[0][0] if heap else None
                _, _, s = heapq.heappop(heap)
            if s.error is not None:  # cancelled by its owner
                s._done.set()
                continue
            if s.writable is not None and not s.writable():
                s.handoff = True
                s._done.set()
                continue
            s.send_one(clock())
            self.sent += 1
            if s.finished:
                s._done.set()
            else:
                with lock:
                    self._seq += 1
                    heapq.heappush(heap, (s.due, self._seq, s))

    def start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="vp-pacer")
                    self._thread.start()

    def _run(self) -> None:
        clock, wake = self._clock, self._wake
        while True:
            wake.clear()
            nxt = self.step(clock())
            self.wakeups += 1
            wait = MAX_WAIT_S if nxt is None else (nxt - clock()) / _NS
            if wait > 0:
                wake.wait(min(wait, MAX_WAIT_S))


#: what a stream's error becomes once raised in its owner's thread (or cancelled)
_TAKEN = RuntimeError("raised in the owner's thread")

_shared: Pacer | None = None
_shared_lock = threading.Lock()


def shared() -> Pacer:
    """The process's one pacer (created and started on first use)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = Pacer()
    return _shared
