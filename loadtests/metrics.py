"""What a worker measures and ships, and what the master merges: per-metric HDR histograms (µs,
3 significant figures, telemetry's clamped `SeriesHistogram`) plus exact counters.

Workers keep one open `Delta` and hand it over (encoded) with every report, starting a new one,
so nothing is counted twice and nothing between reports is lost. The master adds every delta to
the run total, to the current 10 s interval and to a ring of recent deltas for sliding windows.

Scripted scenarios add per-turn checks and WER (`ScenarioTally`): exact counts, and WER as a
multiset of values rounded to `WER_STEP`, so means and percentiles merge exactly across workers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, fields

from probes.results import SessionResult
from telemetry.hdr import SeriesHistogram, result_latencies
from telemetry.schema import LATENCY_METRICS
from telemetry.stats import rank

#: The metrics with a histogram (ms), by where the summary lists them. Names are
#: telemetry.schema.LATENCY_METRICS', as stored and as in thresholds. The generator's own health:
#: start lag of each session (actual - intended start), send lag of each turn (its p99 chunk lag,
#: as the engine reports it), the event loop's wake-up lag and GC pauses.
SESSION_HDR_METRICS, TURN_HDR_METRICS, GENERATOR_METRICS = (
    tuple(m.name for m in LATENCY_METRICS if m.group == g) for g in ("session", "turn", "generator"))
#: WER is kept as value -> count at this resolution: 1e-4 is finer than any real WER difference
#: (1 word in 10,000) and bounds the map to the distinct ratios actually seen.
WER_STEP = 1e-4


@dataclass(slots=True)
class Counters:
    sessions: int = 0
    sessions_ok: int = 0
    turns: int = 0
    turns_ok: int = 0
    arrivals_due: int = 0
    arrivals_started: int = 0
    late_starts: int = 0
    no_slot: int = 0
    dropped: int = 0
    cut: int = 0
    # turns whose median chunk send lag passed load.overload_lag_ms (loadtests/overload.py;
    # their p99s and the loop probes are counted from the histograms)
    slow_turns: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, o: Counters) -> None:
        for f in fields(self):
            if f.name == "errors":
                for k, v in o.errors.items():
                    self.errors[k] = self.errors.get(k, 0) + v
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(o, f.name))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Counters:
        c = cls(**{k: v for k, v in d.items() if k != "errors"})
        c.errors = dict(d.get("errors") or {})
        return c


@dataclass(slots=True)
class ScenarioTally:
    """Scenario checks (name -> [passed, total]) and per-turn WER of scripted sessions.

    WER is a bounded multiset of integers (round(wer / WER_STEP) -> turns): merging adds counts,
    integer arithmetic is order-free, so the mean and the nearest-rank p95 come out identical
    however the turns were spread over workers and reports (to within WER_STEP / 2 of the raw
    values)."""

    checks: dict[str, list[int]] = field(default_factory=dict)
    wer: dict[int, int] = field(default_factory=dict)  # round(wer / WER_STEP) -> turns

    @property
    def wer_count(self) -> int:
        return sum(self.wer.values())

    @property
    def wer_mean(self) -> float | None:
        n = self.wer_count
        return sum(k * c for k, c in self.wer.items()) * WER_STEP / n if n else None

    def __bool__(self) -> bool:
        return bool(self.checks or self.wer)

    def record_turn(self, checks: dict[str, bool], wer: float | None) -> None:
        for name, passed in checks.items():
            c = self.checks.setdefault(name, [0, 0])
            c[0] += bool(passed)
            c[1] += 1
        if wer is not None:
            k = round(float(wer) / WER_STEP)
            self.wer[k] = self.wer.get(k, 0) + 1

    def add(self, o: ScenarioTally) -> None:
        for name, (p, n) in o.checks.items():
            c = self.checks.setdefault(name, [0, 0])
            c[0] += p
            c[1] += n
        for k, n in o.wer.items():
            self.wer[k] = self.wer.get(k, 0) + n

    def wer_percentile(self, p: float) -> float | None:
        """Nearest rank, the one rule (telemetry.stats.rank: ceil(p/100 * n))."""
        n = self.wer_count
        if not n:
            return None
        want = rank(n, p)
        seen = 0
        for k in sorted(self.wer):
            seen += self.wer[k]
            if seen >= want:
                return round(k * WER_STEP, 6)
        return None  # unreachable: the counts add up to n

    def encode(self) -> dict:
        """msgpack-safe: string map keys only (msgpack's default unpacker refuses int keys)."""
        return {"checks": {k: list(v) for k, v in self.checks.items()},
                "wer": [[k, n] for k, n in self.wer.items()]}

    @classmethod
    def decode(cls, d: dict | None) -> ScenarioTally:
        d = d or {}
        return cls(checks={k: [int(p), int(n)] for k, (p, n) in (d.get("checks") or {}).items()},
                   wer={int(k): int(n) for k, n in d.get("wer") or ()})


@dataclass(slots=True)
class Delta:
    """Everything measured since the last report."""

    hist: dict[str, SeriesHistogram] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    scenario: ScenarioTally = field(default_factory=ScenarioTally)
    # wall clock (time.time_ns: comparable across worker processes and machines) of the first
    # and last session started, 0 for none: the achieved rate is measured between them
    first_start_ns: int = 0
    last_start_ns: int = 0

    def note_start(self, wall_ns: int) -> None:
        self.first_start_ns = min(self.first_start_ns or wall_ns, wall_ns)
        self.last_start_ns = max(self.last_start_ns, wall_ns)

    def record(self, metric: str, value_ms: float | None) -> None:
        if value_ms is None:
            return
        h = self.hist.get(metric)
        if h is None:
            h = self.hist[metric] = SeriesHistogram()
        h.record(max(float(value_ms), 0.0))

    def add_result(self, r: SessionResult) -> None:
        c = self.counters
        c.sessions += 1
        if r.ok:
            c.sessions_ok += 1
        else:
            c.errors[r.outcome] = c.errors.get(r.outcome, 0) + 1
        for metric, value_ms in result_latencies(r):
            self.record(metric, value_ms)
        self.record("session_ms", r.duration_s * 1000.0 if r.duration_s else None)
        for t in r.turns:
            c.turns += 1
            c.turns_ok += t.outcome == "ok"
            if t.checks or t.wer is not None:
                self.scenario.record_turn(t.checks, t.wer)

    def add(self, o: Delta) -> None:
        self.counters.add(o.counters)
        self.scenario.add(o.scenario)
        if o.first_start_ns:
            self.note_start(o.first_start_ns)
            self.note_start(o.last_start_ns)
        for k, h in o.hist.items():
            if h.count:
                self.hist.setdefault(k, SeriesHistogram()).merge(h)

    def encode(self) -> dict:
        """Plain msgpack-able data: HDR V2 blobs (ascii) plus exact sums, min and max."""
        out = {
            "counters": self.counters.to_dict(),
            "hist": {k: h.to_wire() for k, h in self.hist.items() if h.count},
        }
        if self.scenario:
            out["scenario"] = self.scenario.encode()
        if self.first_start_ns:
            out["starts_ns"] = [self.first_start_ns, self.last_start_ns]
        return out

    @classmethod
    def decode(cls, d: dict) -> Delta:
        out = cls(counters=Counters.from_dict(d.get("counters") or {}),
                  scenario=ScenarioTally.decode(d.get("scenario")))
        if d.get("starts_ns"):
            out.first_start_ns, out.last_start_ns = (int(t) for t in d["starts_ns"])
        for k, w in (d.get("hist") or {}).items():
            out.hist[k] = SeriesHistogram.from_wire(w)
        return out


class Window:
    """Recent deltas with their arrival time, for sliding-window thresholds."""

    def __init__(self, keep_s: float):
        self.keep_s = keep_s
        self.items: deque[tuple[float, Delta]] = deque()

    def push(self, t: float, d: Delta) -> None:
        self.items.append((t, d))
        while self.items and self.items[0][0] < t - self.keep_s:
            self.items.popleft()

    def merged(self, now: float, seconds: float) -> Delta:
        out = Delta()
        for t, d in self.items:
            if t >= now - seconds:
                out.add(d)
        return out
