"""Ground truth: what the simulator did and when, on time.monotonic_ns().

On Linux CPython, time.monotonic_ns() and time.perf_counter_ns() both read CLOCK_MONOTONIC, which
is shared by all processes, so a client compares its own perf_counter_ns() marks to these directly.
One `TurnTruth` per response; one `SessionTruth` per connection attempt. Kept in memory (bounded)
for GET /truth and appended as JSON lines to --truth-file.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson


@dataclass(slots=True)
class TurnTruth:
    session_id: str
    turn_index: int
    model: str
    response_id: str
    trigger: str = "vad"  # vad | response.create
    status: str = "in_progress"  # completed | cancelled | failed | error | dropped | closed
    speech_start_ns: int | None = None  # append holding the first speech frame received
    speech_end_ns: int | None = None  # append holding the last speech frame received
    speech_stopped_ns: int | None = None  # speech_stopped written
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    commit_ns: int | None = None  # input_audio_buffer.commit received (manual mode)
    response_create_ns: int | None = None  # response.create received
    response_created_ns: int | None = None
    first_audio_ns: int | None = None  # first audio delta written to the socket
    first_text_ns: int | None = None  # first transcript/text delta written
    tool_args_done_ns: int | None = None  # function_call_arguments.done written
    tool_output_ns: int | None = None  # function_call_output item received (answered here)
    cancel_ns: int | None = None  # the stop written (response.done cancelled; Gemini interrupted)
    barge_in_speech_ns: int | None = None  # append holding the speech that interrupted this reply
    response_done_ns: int | None = None
    injected_ttfa_ms: float | None = None  # scheduled first audio - trigger
    reply_audio_ms: int = 0  # audio actually sent
    planned_audio_ms: int = 0
    deltas: int = 0
    input_audio_ms: int = 0
    tool_call: dict | None = None
    transcript: str | None = None  # input transcription sent, if any
    usage: dict | None = None
    faults: list[dict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # not dataclasses.asdict: its deep copy cost ~0.3 ms per turn on the hot path
        return {k: getattr(self, k) for k in _TURN_FIELDS}


@dataclass(slots=True)
class SessionTruth:
    session_id: str | None
    model: str
    path: str
    shape: str  # ga | beta | retired
    connect_ns: int  # upgrade request seen
    ready_ns: int | None = None  # session.created written
    closed_ns: int | None = None
    close_code: int | None = None
    outcome: str = "open"  # open | closed | refused | http_<status> | expired | dropped
    faults: list[dict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_TURN_FIELDS = [f.name for f in fields(TurnTruth)]


class TruthLog:
    def __init__(self, path: str | None = None, keep: int = 200_000):
        self.turns: collections.deque[dict] = collections.deque(maxlen=keep)
        self.sessions: collections.deque[dict] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._file = open(path, "ab") if path else None  # noqa: SIM115 (kept open for the run)

    def _write(self, kind: str, rec: dict) -> None:
        if self._file is not None:
            self._file.write(orjson.dumps({"kind": kind, **rec}) + b"\n")
            self._file.flush()

    def turn(self, t: TurnTruth) -> None:
        rec = t.to_json()
        self.turns.append(rec)
        self._write("turn", rec)

    def session(self, s: SessionTruth) -> None:
        rec = s.to_json()
        self.sessions.append(rec)
        self._write("session", rec)

    def query(self, session_id: str | None = None, model: str | None = None) -> dict:
        def keep(r: dict) -> bool:
            return (session_id is None or r["session_id"] == session_id) and (
                model is None or r["model"] == model)
        return {"turns": [r for r in self.turns if keep(r)],
                "sessions": [r for r in self.sessions if keep(r)]}

    def clear(self) -> None:
        self.turns.clear()
        self.sessions.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Lateness:
    """Lateness of scheduled audio deltas (actual write - scheduled time): a fixed histogram of
    10 us bins up to 2 s (constant memory however long the run), plus the exact maximum."""

    BIN_US = 10
    BINS = 200_000

    def __init__(self):
        self.counts = [0] * self.BINS
        self.count = 0
        self.max_us = 0

    def add(self, us: int) -> None:
        us = max(us, 0)
        self.counts[min(us // self.BIN_US, self.BINS - 1)] += 1
        self.count += 1
        if us > self.max_us:
            self.max_us = us

    def summary(self, reset: bool = False) -> dict:
        import numpy as np

        n, mx = self.count, self.max_us
        cum = np.cumsum(np.asarray(self.counts, dtype=np.int64)) if n else None
        if reset:
            self.__init__()
        if not n:
            return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

        def pct(p: float) -> float:  # upper edge of the bin holding the p-th percentile
            i = int(np.searchsorted(cum, max(1, int(np.ceil(p / 100 * n)))))
            return min((i + 1) * self.BIN_US, mx) / 1000
        return {"count": n, "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": mx / 1000}
