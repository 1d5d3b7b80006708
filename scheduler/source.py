"""What the alert engine asks of the store, and the adapters that answer it.

The engine only needs two questions, both over a wall-clock window [start, end) in epoch seconds:
how many probe sessions ran and how many succeeded, and the raw values of a turn metric. Keeping
the surface this small is what lets one rule set run on the embedded store and on InfluxDB alike.

* `TelemetrySource` wraps the telemetry query layer (`telemetry.query.open_query`), which asks
  the embedded store in SQL or InfluxDB in InfluxQL over `/query`.
* `MemorySource` holds results in memory: for unit tests and for a store-less dry run.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass
from typing import Protocol

from probes.results import SessionResult


@dataclass(slots=True, frozen=True)
class Counts:
    total: int
    ok: int

    @property
    def bad(self) -> int:
        return self.total - self.ok

    @property
    def error_ratio(self) -> float | None:
        return self.bad / self.total if self.total else None


class AlertSource(Protocol):
    def session_counts(self, target: str, start: float, end: float, kind: str = "probe") -> Counts:
        """Sessions of `target` that started in [start, end), and how many ended `ok`."""
        ...

    def turn_values(self, target: str, metric: str, start: float, end: float,
                    kind: str = "probe") -> list[float]:
        """Every stored value of a turn metric of `target` in [start, end)."""
        ...


class MemorySource:
    """An in-memory store of results (thread-safe). Answers exactly what the real stores answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: list[tuple[float, str, str, bool]] = []  # (time, target, kind, ok)
        self._turns: list[tuple[float, str, str, dict]] = []

    def record(self, result: SessionResult) -> None:
        with self._lock:
            self._add(self._sessions, (result.started_at, result.target, result.kind, result.ok))
            for turn in result.turns:
                if turn.outcome == "ok":
                    self._add(self._turns, (result.started_at, result.target, result.kind,
                                            turn.metrics()))

    @staticmethod
    def _add(rows: list, row: tuple) -> None:
        if not rows or rows[-1][0] <= row[0]:
            rows.append(row)
        else:
            rows.insert(bisect_left([r[0] for r in rows], row[0]), row)

    def _window(self, rows: list, start: float, end: float) -> list:
        times = [r[0] for r in rows]
        return rows[bisect_left(times, start):bisect_left(times, end)]

    def session_counts(self, target: str, start: float, end: float, kind: str = "probe") -> Counts:
        with self._lock:
            rows = [r for r in self._window(self._sessions, start, end)
                    if r[1] == target and r[2] == kind]
        return Counts(len(rows), sum(1 for r in rows if r[3]))

    def turn_values(self, target: str, metric: str, start: float, end: float,
                    kind: str = "probe") -> list[float]:
        with self._lock:
            return [float(r[3][metric]) for r in self._window(self._turns, start, end)
                    if r[1] == target and r[2] == kind and metric in r[3]]


class TelemetrySource:
    """Adapts the telemetry query layer (`telemetry.query.open_query(...)`: the embedded store or
    InfluxDB via InfluxQL) to `AlertSource`."""

    def __init__(self, query) -> None:
        self.query = query

    def session_counts(self, target: str, start: float, end: float, kind: str = "probe") -> Counts:
        got = self.query.success_ratio(start_ns=int(start * 1e9), end_ns=int(end * 1e9),
                                       targets=[target], kind=kind)
        r = got.get(target)
        return Counts(r.total, r.ok) if r is not None else Counts(0, 0)

    def turn_values(self, target: str, metric: str, start: float, end: float,
                    kind: str = "probe") -> list[float]:
        rows = self.query.turn_values(metric, start_ns=int(start * 1e9), end_ns=int(end * 1e9),
                                      targets=[target], kind=kind, outcome="ok")
        return [r.value for r in rows]

    def close(self) -> None:
        self.query.close()
