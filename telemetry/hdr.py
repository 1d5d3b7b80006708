"""HDR histograms in microseconds, the interval aggregator behind `latency` points, and merging.

Percentiles are never averaged: each `latency` point carries its interval's HDR V2 blob, and any
time range or set of workers is answered by merging blobs (`merge_blobs`) and reading the merged
histogram. Values outside 1 µs .. 10 min are clamped to the range and counted (`clamped`), never
dropped silently (hdrh's own `record_value` drops them and returns False).

Percentiles are read by the house's one rule (`telemetry.stats`, nearest rank ceil(p/100 * n)),
not hdrh's own (which rounds the rank), and reported as HDR does: the highest value equivalent
to the one of that rank (within 0.1 % at 3 significant digits; exact below 2.048 ms and for any
value that is its own highest equivalent). They are clamped to the recorded min and max, so no
table shows a p99 above its max.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

from probes.results import SessionResult

from .points import Point, build_point
from .schema import LATENCY, LATENCY_METRICS, PERCENTILE_FIELDS
from .stats import rank

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 min
SIG_FIGS = 3
PCT_FIELDS = PERCENTILE_FIELDS
PERCENTILES = tuple(PERCENTILE_FIELDS)

#: The metrics the probe aggregator keeps histograms for (milliseconds in, µs inside), by the
#: result they are read from (telemetry.schema.LATENCY_METRICS).
SESSION_LATENCY_METRICS = tuple(m.name for m in LATENCY_METRICS if m.probe and m.of == "session")
TURN_LATENCY_METRICS = tuple(m.name for m in LATENCY_METRICS if m.probe and m.of == "turn")

#: Tags of `latency` points. `agent` keeps two probe agents from overwriting each other's point
#: for the same interval; an empty agent is simply not written.
LATENCY_TAGS = LATENCY.tags


def result_latencies(r: SessionResult, probe_only: bool = False) -> list[tuple[str, float]]:
    """(metric, ms) of every latency metric a session and its turns carry (None skipped)."""
    ms = [m for m in LATENCY_METRICS if m.of and (m.probe or not probe_only)]
    out = [(m.name, v) for m in ms if m.of == "session" and (v := getattr(r, m.source)) is not None]
    for t in r.turns:
        out += [(m.name, v) for m in ms if m.of == "turn" and (v := getattr(t, m.source)) is not None]
    return out


def latency_point(series: Sequence[str], h: SeriesHistogram, time_ns: int) -> Point:
    """The `latency` point of one interval of one series (values in LATENCY_TAGS order): probes
    (IntervalAggregator) and load runs (loadtests.collector) both build theirs here."""
    return build_point("latency", dict(zip(LATENCY_TAGS, series, strict=True)), h.fields(), time_ns)


def acyclic(h: HdrHistogram) -> HdrHistogram:
    """Give a histogram a weak back-reference from its encoder. hdrh makes each one a reference
    cycle (histogram -> encoder -> histogram) around its 172 KiB counts buffer, so a dropped one
    waits for a full collection; a Locust worker defers those for the whole run
    (loadtests/worker.py), and its RSS grew 5-7 % per 10 min in the 60-minute chaos soak. With
    the weak reference a dropped histogram is freed at once."""
    h.encoder.histogram = weakref.proxy(h)
    return h


def new_histogram() -> HdrHistogram:
    return acyclic(HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS))


def ms_to_us(value_ms: float) -> tuple[int, bool]:
    """Microseconds within the histogram's range, and whether the value had to be clamped."""
    us = int(round(value_ms * 1000.0))
    if us < LOWEST_US:
        return LOWEST_US, True
    if us > HIGHEST_US:
        return HIGHEST_US, True
    return us, False


def decode(blob: str | bytes) -> HdrHistogram:
    return acyclic(HdrHistogram.decode(blob.encode("ascii") if isinstance(blob, str) else blob))


def merge_blobs(blobs: Iterable[str | bytes]) -> HdrHistogram:
    """One histogram holding every value of the given V2 blobs (exact: counts add up)."""
    merged = new_histogram()
    for b in blobs:
        if b:
            merged.add(decode(b))  # not decode_and_add: its decoded histogram is a cycle
    return merged


def percentiles_ms(h: HdrHistogram, ps: Sequence[float] = PERCENTILES,
                   lo_ms: float | None = None, hi_ms: float | None = None) -> dict[float, float]:
    """Percentile -> value in ms: the nearest rank (`telemetry.stats.rank`), read as HDR's
    highest equivalent value and clamped to [lo_ms, hi_ms]; rank 1 is lo_ms itself. Default
    bounds: the histogram's own tracked min and max, exact for values recorded here, bucket
    bounds after a decode."""
    n = h.get_total_count()
    if n == 0:
        return {}
    cum = np.cumsum(np.ctypeslib.as_array(h.counts)[: h.counts_len])
    lo = h.min_value / 1000.0 if lo_ms is None else lo_ms
    hi = h.max_value / 1000.0 if hi_ms is None else hi_ms
    out = {}
    for p in ps:
        r = rank(n, p)
        if r == 1:  # the first rank is the minimum itself
            out[p] = lo
            continue
        idx = int(np.searchsorted(cum, r, side="left"))
        v = h.get_highest_equivalent_value(h.get_value_from_index(idx)) / 1000.0
        out[p] = min(max(v, lo), hi)
    return out


@dataclass(slots=True)
class SeriesHistogram:
    """One interval of one series: the histogram plus exact count, sum, min and max."""

    hist: HdrHistogram = field(default_factory=new_histogram)
    count: int = 0
    sum_ms: float = 0.0
    min_ms: float = float("inf")
    max_ms: float = float("-inf")
    clamped: int = 0

    def record(self, value_ms: float) -> None:
        us, clamped = ms_to_us(value_ms)
        self.hist.record_value(us)
        self.clamped += clamped
        self.count += 1
        self.sum_ms += value_ms
        self.min_ms = min(self.min_ms, value_ms)
        self.max_ms = max(self.max_ms, value_ms)

    def add_blob(self, blob: str | bytes, clamped: int = 0, *, sum_ms: float | None = None,
                 min_ms: float | None = None, max_ms: float | None = None) -> None:
        """Add a histogram shipped by another process (e.g. a Locust worker's report) or read
        from a stored `latency` point; its exact sum, min and max when known (the point's
        fields), else HDR's (bucket bounds)."""
        h = decode(blob)
        n = h.get_total_count()
        if n == 0:
            return
        self.hist.add(h)
        self.count += n
        self.sum_ms += h.get_mean_value() * n / 1000.0 if sum_ms is None else sum_ms
        self.min_ms = min(self.min_ms, h.get_min_value() / 1000.0 if min_ms is None else min_ms)
        self.max_ms = max(self.max_ms, h.get_max_value() / 1000.0 if max_ms is None else max_ms)
        self.clamped += clamped

    def merge(self, o: SeriesHistogram) -> None:
        """Add another series exactly: counts, sums, min and max merge; nothing is averaged."""
        if not o.count:
            return
        self.hist.add(o.hist)
        self.count += o.count
        self.sum_ms += o.sum_ms
        self.min_ms = min(self.min_ms, o.min_ms)
        self.max_ms = max(self.max_ms, o.max_ms)
        self.clamped += o.clamped

    def to_wire(self) -> list:
        """Plain msgpack-able data (a Locust worker's report): the HDR V2 blob plus the exact
        count, sum, min, max and clamped count, which the blob alone cannot restore."""
        return [self.hist.encode().decode("ascii"), self.count, self.sum_ms, self.min_ms,
                self.max_ms, self.clamped]

    @classmethod
    def from_wire(cls, w: list) -> SeriesHistogram:
        blob, count, sum_ms, lo, hi, clamped = w
        return cls(hist=decode(blob), count=int(count), sum_ms=float(sum_ms),
                   min_ms=float(lo), max_ms=float(hi), clamped=int(clamped))

    @classmethod
    def of(cls, h: HdrHistogram) -> SeriesHistogram:
        """Wrap a bare histogram (min and max as HDR tracked them)."""
        n = h.get_total_count()
        return cls(hist=h, count=n, sum_ms=h.get_mean_value() * n / 1000.0 if n else 0.0,
                   min_ms=h.min_value / 1000.0 if n else float("inf"),
                   max_ms=h.max_value / 1000.0 if n else float("-inf"))

    def count_above(self, value_ms: float) -> int:
        """How many recorded values exceed `value_ms` (to HDR's 0.1 %: values equivalent to it
        count as not above). Exact 0 when the max does not exceed it."""
        if not self.count or self.max_ms <= value_ms:
            return 0
        us, _ = ms_to_us(value_ms)
        idx = self.hist._counts_index_for(us)
        counts = np.ctypeslib.as_array(self.hist.counts)[: self.hist.counts_len]
        return int(counts[idx + 1:].sum())

    def percentiles_ms(self, ps: Sequence[float] = PERCENTILES) -> dict[float, float]:
        """Nearest-rank percentiles clamped to this series' exact min and max."""
        return percentiles_ms(self.hist, ps, self.min_ms, self.max_ms) if self.count else {}

    def fields(self) -> dict[str, float | int | str]:
        f: dict[str, float | int | str] = {
            "count": self.count,
            "mean": self.sum_ms / self.count,
            "min": float(self.min_ms),
            "max": float(self.max_ms),
            "clamped": self.clamped,
        }
        for p, v in self.percentiles_ms().items():
            f[PCT_FIELDS[p]] = v
        f["hdr"] = self.hist.encode().decode("ascii")
        return f


SeriesKey = tuple[str, str, str, str, str, str]  # LATENCY_TAGS order


class IntervalAggregator:
    """Turns results into `latency` points, one per interval x series (LATENCY_TAGS).

    A value is filed under the interval in which it is *recorded* (wall clock, aligned to
    multiples of interval_s), so a closed interval never receives late values and its point is
    written exactly once. The point's timestamp is the interval start. Thread-safe.
    """

    def __init__(self, interval_s: float = 10.0, clock=time.time):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_ns = int(interval_s * 1e9)
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[int, dict[SeriesKey, SeriesHistogram]] = {}
        self.clamped_total = 0

    def _bucket(self, now_s: float | None) -> dict[SeriesKey, SeriesHistogram]:
        t = int((self._clock() if now_s is None else now_s) * 1e9)
        start = t - t % self.interval_ns
        return self._open.setdefault(start, {})

    def record(self, key: SeriesKey, value_ms: float, now_s: float | None = None) -> None:
        with self._lock:
            s = self._bucket(now_s).setdefault(key, SeriesHistogram())
            before = s.clamped
            s.record(value_ms)
            self.clamped_total += s.clamped - before

    def add_blob(self, key: SeriesKey, blob: str | bytes, now_s: float | None = None) -> None:
        with self._lock:
            self._bucket(now_s).setdefault(key, SeriesHistogram()).add_blob(blob)

    def add(self, r: SessionResult, now_s: float | None = None) -> None:
        """Record every latency metric of a session and its turns."""
        series = (r.target, r.model, r.kind, r.scenario, r.agent)
        values = result_latencies(r, probe_only=True)
        with self._lock:
            bucket = self._bucket(now_s)
            for m, v in values:
                s = bucket.setdefault((*series, m), SeriesHistogram())
                before = s.clamped
                s.record(v)
                self.clamped_total += s.clamped - before

    def flush(self, now_s: float | None = None, *, force: bool = False) -> list[Point]:
        """Points of every interval that has ended (all of them with force=True)."""
        t = int((self._clock() if now_s is None else now_s) * 1e9)
        with self._lock:
            done = [s for s in self._open if force or s + self.interval_ns <= t]
            closed = [(s, self._open.pop(s)) for s in sorted(done)]
        return [latency_point(k, sh, start) for start, series in closed
                for k, sh in series.items() if sh.count]
