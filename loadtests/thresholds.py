"""Pass/fail thresholds of a load run, judged on the merged run data (or a sliding window).

The grammar, vocabulary and percentile rule are telemetry.stats' (the report judges the same
expressions from stored points): `ttfa_ms.p95<800`, `error_rate<0.01`, `late_starts==0`,
`ttfa_ms.p95[60s]<800 abort_on_fail`. This module only says what each name means on a `Delta`.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.metrics import Delta
from telemetry.stats import COUNTERS, Threshold, compare, hist_statistic, parse_threshold

__all__ = ["COUNTERS", "Threshold", "Verdict", "parse_threshold", "value_of", "evaluate"]


@dataclass(slots=True)
class Verdict:
    expr: str
    ok: bool
    actual: float | None
    abort_on_fail: bool = False

    def to_dict(self) -> dict:
        return {"expr": self.expr, "ok": self.ok, "actual": self.actual,
                "abort_on_fail": self.abort_on_fail}


def value_of(t: Threshold, d: Delta, seconds: float) -> float | None:
    """The threshold's quantity on merged data `d` covering `seconds`; None when there is none."""
    c = d.counters
    if t.stat is not None:
        return hist_statistic(d.hist.get(t.metric), t.stat)
    if t.metric == "error_rate":
        return (c.sessions - c.sessions_ok) / c.sessions if c.sessions else None
    if t.metric == "success_ratio":
        return c.sessions_ok / c.sessions if c.sessions else None
    if t.metric == "turn_error_rate":
        return (c.turns - c.turns_ok) / c.turns if c.turns else None
    if t.metric == "errors":
        return float(c.sessions - c.sessions_ok)
    if t.metric == "late_rate":
        return c.late_starts / c.arrivals_started if c.arrivals_started else None
    if t.metric == "start_rate":
        return c.arrivals_started / seconds if seconds > 0 else None
    return float(getattr(c, t.metric))


def evaluate(t: Threshold, d: Delta, seconds: float) -> Verdict:
    v = value_of(t, d, seconds)
    return Verdict(t.expr, compare(t, v), v, t.abort_on_fail)
