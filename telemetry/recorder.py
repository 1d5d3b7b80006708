"""The facade probes, schedulers and load runs write through.

`Recorder.record(result)` stores the `turn` and `session` points and feeds the interval
aggregator; a background thread writes the `latency` points of each closed interval. A sink's
`write` only appends locally (SQLite, or a network sink's on-disk outbox), so recording never
waits on the network.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from probes.results import SessionResult

from .hdr import IntervalAggregator
from .points import Point, session_points

log = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, points: Iterable[Point]) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> bool: ...

    def health(self) -> dict: ...


class FanOut:
    """Several sinks; each has its own outbox, so one slow sink never stalls another."""

    def __init__(self, sinks: list[Sink], names: list[str] | None = None):
        self.sinks = list(sinks)
        self.names = names or [f"{type(s).__name__.lower()}{i}" for i, s in enumerate(sinks)]

    def write(self, points: Iterable[Point]) -> None:
        points = list(points)
        errors = []
        for s in self.sinks:
            try:
                s.write(points)
            except Exception as e:  # one broken sink must not starve the others
                errors.append(e)
        if errors:
            raise errors[0]

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        for s in self.sinks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ok = s.flush(left) and ok
        return ok

    def close(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        for s in self.sinks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ok = s.close(left) and ok
        return ok

    def health(self) -> dict:
        per = {n: s.health() for n, s in zip(self.names, self.sinks, strict=True)}
        total = {k: sum(h.get(k, 0) for h in per.values()) for k in HEALTH_KEYS}
        return {**total, "sinks": per}


HEALTH_KEYS = ("pending", "delivered", "retried", "dead_lettered", "dropped")


class Recorder:
    """Writes results and other points to a sink; aggregates `latency` points per interval."""

    def __init__(self, sink: Sink, interval_s: float = 10.0, *, aggregate: bool = True):
        self.sink = sink
        self.aggregator = IntervalAggregator(interval_s)
        self.interval_s = interval_s
        self.aggregate = aggregate
        self.write_errors = 0
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="voicepulse-recorder", daemon=True)
        self._thread.start()

    def record(self, result: SessionResult) -> None:
        """Store a session's points and feed the aggregator. Never raises on storage trouble."""
        if self.aggregate:
            self.aggregator.add(result)
        self.write(session_points(result))

    def write(self, points: Iterable[Point]) -> None:
        """Store other measurements (alert, loadgen, latency computed elsewhere)."""
        try:
            self.sink.write(list(points))
        except Exception:
            self.write_errors += 1
            log.exception("telemetry: writing points failed")

    def _flush_intervals(self, force: bool = False) -> None:
        pts = self.aggregator.flush(force=force)
        if pts:
            self.write(pts)

    def _run(self) -> None:
        while True:
            now = time.time()
            wait = self.interval_s - (now % self.interval_s) + 0.05  # just after the boundary
            if self._stop.wait(wait):
                return
            self._flush_intervals()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write the closed intervals and wait (bounded) until the sink has delivered."""
        self._flush_intervals()
        return self.sink.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Final aggregator flush (the open interval too), then flush and close the sink."""
        if self._closed:
            return True
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._flush_intervals(force=True)
        return self.sink.close(timeout)

    def health(self) -> dict:
        h = dict(self.sink.health())
        h["write_errors"] = self.write_errors
        h["clamped"] = self.aggregator.clamped_total
        return h

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
