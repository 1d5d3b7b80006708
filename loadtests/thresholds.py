"""Pass/fail expressions over the merged run: `ttfa_ms.p95<800`, `error_rate<0.01`,
`late_starts==0`, or over a sliding window: `ttfa_ms.p95[60s]<800`.

Grammar: METRIC.STAT[WINDOW] OP NUMBER for histogram metrics (STAT: p50 p90 p95 p99 p999 p99.9
min max mean count), or COUNTER[WINDOW] OP NUMBER. A trailing ` abort_on_fail` stops the run
as soon as the expression fails. A percentile over no data fails: "no sessions measured" must
never pass as "fast".
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from loadtests.metrics import Delta
from loadtests.profile import parse_duration_s
from telemetry.hdr import percentiles_ms

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
_EXPR = re.compile(
    r"^\s*(?P<metric>[a-z_][a-z0-9_]*)(?:\.(?P<stat>p\d+(?:\.\d+)?|min|max|mean|count))?"
    r"(?:\[(?P<window>[^\]]+)\])?\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?(?:e-?\d+)?)"
    r"\s*(?P<abort>abort_on_fail)?\s*$")

#: Counters and rates a threshold may name without a stat.
COUNTERS = ("error_rate", "errors", "sessions", "sessions_ok", "turn_error_rate", "late_starts",
            "late_rate", "no_slot", "dropped", "cut", "arrivals_due", "arrivals_started",
            "start_rate")


@dataclass(frozen=True, slots=True)
class Threshold:
    expr: str
    metric: str
    stat: str | None
    op: str
    value: float
    window_s: float | None = None
    abort_on_fail: bool = False


@dataclass(slots=True)
class Verdict:
    expr: str
    ok: bool
    actual: float | None
    abort_on_fail: bool = False

    def to_dict(self) -> dict:
        return {"expr": self.expr, "ok": self.ok, "actual": self.actual,
                "abort_on_fail": self.abort_on_fail}


def parse_threshold(text: str, abort_on_fail: bool = False) -> Threshold:
    m = _EXPR.match(str(text))
    if not m:
        raise ValueError(f"threshold {text!r}: expected e.g. ttfa_ms.p95<800, error_rate<0.01 or "
                         "ttfa_ms.p95[60s]<800")
    metric, stat = m["metric"], m["stat"]
    if stat is None and metric not in COUNTERS:
        raise ValueError(f"threshold {text!r}: {metric} needs a statistic like .p95 (or use one "
                         f"of {', '.join(COUNTERS)})")
    if stat is not None and metric in COUNTERS:
        raise ValueError(f"threshold {text!r}: {metric} is a counter; drop .{stat}")
    if stat and stat.startswith("p"):
        p = float(stat[1:]) if stat != "p999" else 99.9
        if not 0 < p <= 100:
            raise ValueError(f"threshold {text!r}: percentile out of range")
    window = None
    if m["window"]:
        try:
            window = parse_duration_s(m["window"])
        except ValueError:
            raise ValueError(f"threshold {text!r}: window {m['window']!r} is not a duration") from None
        if window <= 0:
            raise ValueError(f"threshold {text!r}: window must be above zero")
    expr = re.sub(r"\s*abort_on_fail\s*$", "", str(text).strip())
    return Threshold(expr, metric, stat, m["op"], float(m["value"]), window,
                     abort_on_fail or bool(m["abort"]))


def value_of(t: Threshold, d: Delta, seconds: float) -> float | None:
    """The threshold's quantity on merged data `d` covering `seconds`; None when there is none."""
    c = d.counters
    if t.stat is None:
        if t.metric == "error_rate":
            return (c.sessions - c.sessions_ok) / c.sessions if c.sessions else None
        if t.metric == "turn_error_rate":
            return (c.turns - c.turns_ok) / c.turns if c.turns else None
        if t.metric == "errors":
            return float(c.sessions - c.sessions_ok)
        if t.metric == "late_rate":
            return c.late_starts / c.arrivals_started if c.arrivals_started else None
        if t.metric == "start_rate":
            return c.arrivals_started / seconds if seconds > 0 else None
        return float(getattr(c, t.metric))
    h = d.hist.get(t.metric)
    if h is None or h.count == 0:
        return 0.0 if t.stat == "count" else None
    if t.stat == "count":
        return float(h.count)
    if t.stat == "min":
        return h.min_ms
    if t.stat == "max":
        return h.max_ms
    if t.stat == "mean":
        return h.sum_ms / h.count
    p = 99.9 if t.stat == "p999" else float(t.stat[1:])
    return percentiles_ms(h.hist, (p,))[p]


def evaluate(t: Threshold, d: Delta, seconds: float) -> Verdict:
    v = value_of(t, d, seconds)
    ok = v is not None and _OPS[t.op](v, t.value)
    return Verdict(t.expr, ok, v, t.abort_on_fail)
