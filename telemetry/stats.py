"""One percentile rule, one statistic vocabulary and one threshold grammar for every surface.

`/status`, `voicepulse results`, alert rules, the report and the load summary all compute their
numbers here, so the same turns give the same p50/p95/p99 everywhere.

**The percentile rule is nearest rank**: the p-th percentile of n values is the value of rank
ceil(p/100 * n) (at least 1) in sorted order. For 7 values at p90 that is rank 7 (6.3 rounded
up), the maximum; for 20 values at p95 it is rank 19. It is always one of the values measured,
never an interpolation. The rule has exactly one implementation, `probes.playback.rank` (the
probe engine computes its in-session figures with it and `probes` may import nothing of ours);
this module re-exports it, and `telemetry.hdr` reads HDR histograms with the same rank.

**Statistics** (`STATS`): `pNN` / `pNN.N` (any percentile in (0, 100]; `p999` is p99.9,
`median` is p50), `mean`, `min`, `max`, `count`. Counters and rates (`COUNTERS`) take no
statistic: `error_rate`, `success_ratio`, `late_starts`, ...

**Thresholds** read `METRIC.STAT[WINDOW] OP NUMBER[UNIT] [abort_on_fail]` or
`COUNTER[WINDOW] OP NUMBER[UNIT]`:
  ttfa_ms.p95<800   turn_ms.p99.9<=3000   error_rate<1%   late_starts==0
  ttfa_ms.p95[60s]<800 abort_on_fail   connect_ms.max<0.5s   success_ratio>=0.99
OP is one of < <= > >= == !=; UNIT is ms, s (x1000) or % (/100). A window judges only the last
WINDOW of the data. A statistic over no data fails: "nothing measured" never passes as "fast".
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from probes.playback import percentile as _percentile
from probes.playback import rank

__all__ = ["rank", "percentile", "quantile", "statistic", "hist_statistic", "parse_threshold",
           "parse_duration_s", "compare", "Threshold", "STATS", "COUNTERS", "OPS"]

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
       "==": operator.eq, "!=": operator.ne}

#: The named statistics; any `pNN` / `pNN.N` percentile is one too (`quantile`).
STATS = ("p50", "p90", "p95", "p99", "p999", "median", "mean", "min", "max", "count")
_NAMED = {"p999": 99.9, "median": 50.0}

#: Counters and rates a threshold names without a statistic.
COUNTERS = ("error_rate", "success_ratio", "errors", "sessions", "sessions_ok",
            "turn_error_rate", "late_starts", "late_rate", "no_slot", "dropped", "cut",
            "arrivals_due", "arrivals_started", "start_rate")

_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)(?:\.(?P<stat>[A-Za-z][A-Za-z0-9]*(?:\.\d+)?))?"
    r"(?:\[(?P<window>[^\]]+)\])?\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*(?P<unit>%|ms|s)?"
    r"\s*(?P<abort>abort_on_fail)?\s*$")
_PCT = re.compile(r"^p(\d+(?:\.\d+)?)$")


def percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank percentile (module docstring) of raw values, sorted or not; None when
    there are none. This is `probes.playback.percentile`, the one implementation."""
    v = _percentile(list(values), p)
    return None if v is None else float(v)


def quantile(stat: str) -> float | None:
    """The percentile a statistic names (`p95` -> 95.0, `p99.9`/`p999` -> 99.9, `median` ->
    50.0), None for mean/min/max/count. Raises ValueError for a name outside the vocabulary."""
    if stat in _NAMED:
        return _NAMED[stat]
    if stat in ("mean", "min", "max", "count"):
        return None
    m = _PCT.match(stat)
    if m:
        p = float(m[1])
        if 0 < p <= 100:
            return p
        raise ValueError(f"percentile {stat!r} out of range (0, 100]")
    raise ValueError(f"unknown statistic {stat!r} (known: {', '.join(STATS)}, or any pNN)")


def statistic(values: Sequence[float], stat: str) -> float | None:
    """A statistic of raw values; None over no values (except `count`, 0.0)."""
    if stat == "count":
        return float(len(values))
    if not values:
        return None
    if stat == "mean":
        return float(sum(values)) / len(values)
    if stat == "min":
        return float(min(values))
    if stat == "max":
        return float(max(values))
    return percentile(values, quantile(stat))


def hist_statistic(h, stat: str) -> float | None:
    """A statistic of a `telemetry.hdr.SeriesHistogram` (exact count, mean, min and max; HDR
    percentiles by the same rank, clamped to min..max); None when it holds nothing."""
    if h is None or not h.count:
        return 0.0 if stat == "count" else None
    if stat == "count":
        return float(h.count)
    if stat == "mean":
        return h.sum_ms / h.count
    if stat == "min":
        return float(h.min_ms)
    if stat == "max":
        return float(h.max_ms)
    p = quantile(stat)
    return h.percentiles_ms((p,))[p]


def parse_duration_s(text: str) -> float:
    """Seconds from "30", "30s", "250ms", "5m", "1h" (a window). Raises ValueError. (telemetry
    may import only probes.results and the rank from probes, so not probes.spec's parser.)"""
    t = str(text).strip()
    for unit, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(unit) and (unit != "s" or not t.endswith("ms")):
            return float(t[: -len(unit)]) * mult
    return float(t)


@dataclass(frozen=True, slots=True)
class Threshold:
    expr: str  # as written, without abort_on_fail
    metric: str
    stat: str | None  # None: a counter
    op: str
    value: float  # in the metric's own unit (ms, ratio, count)
    window_s: float | None = None
    abort_on_fail: bool = False

    @property
    def limit(self) -> float:  # the report's old name for `value`
        return self.value

    @property
    def text(self) -> str:  # the report's old name for `expr`
        return self.expr


def parse_threshold(text: str, abort_on_fail: bool = False, *,
                    default_stat: str | None = None) -> Threshold:
    """Parse one threshold (module docstring). `default_stat` is what a bare metric means
    (alert rules: p95); without it a latency metric must name its statistic. Raises
    ValueError saying why."""
    m = _EXPR.match(str(text))
    if not m:
        raise ValueError(f"threshold {text!r}: expected e.g. ttfa_ms.p95<800, error_rate<0.01 "
                         "or ttfa_ms.p95[60s]<800")
    metric, stat = m["metric"], m["stat"]
    if stat is None and metric not in COUNTERS:
        if default_stat is None:
            raise ValueError(f"threshold {text!r}: {metric} needs a statistic like .p95 (or "
                             f"use one of {', '.join(COUNTERS)})")
        stat = default_stat
    if stat is not None and metric in COUNTERS:
        raise ValueError(f"threshold {text!r}: {metric} is a counter and takes no statistic; "
                         f"drop .{stat}")
    if stat is not None:
        try:
            quantile(stat)
        except ValueError as exc:
            raise ValueError(f"threshold {text!r}: {exc}") from None
    window = None
    if m["window"]:
        try:
            window = parse_duration_s(m["window"])
        except ValueError:
            raise ValueError(f"threshold {text!r}: window {m['window']!r} is not a duration") \
                from None
        if not window > 0 or not math.isfinite(window):
            raise ValueError(f"threshold {text!r}: window must be above zero")
    value = float(m["value"])
    if m["unit"] == "%":
        value /= 100.0
    elif m["unit"] == "s":
        value *= 1000.0
    expr = re.sub(r"\s*abort_on_fail\s*$", "", str(text).strip())
    return Threshold(expr, metric, stat, m["op"], value, window,
                     abort_on_fail or bool(m["abort"]))


def compare(t: Threshold, value: float | None) -> bool:
    """Whether `value` meets the threshold; no value never does."""
    return value is not None and OPS[t.op](value, t.value)
