"""The report's overall verdict: thresholds (as `voicepulse load` takes them), alerts that fired,
and sessions that failed.

A threshold reads `<metric>.<stat><op><number>` or `<ratio><op><number>`:
  ttfa_ms.p95<800   turn_ms.p99<=3000   connect_ms.max<500   error_rate<0.01   success_ratio>=0.99
Percentile stats (p50, p90, p95, p99, p999, max, mean) come from the merged HDR histogram of the
report's range, per target; every target must pass.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_RE = re.compile(r"^\s*([a-z_]+)(?:\.(p\d+(?:\.\d+)?|p999|max|mean))?\s*(<=|>=|<|>)\s*"
                 r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?\d+)?)\s*$")
RATIOS = ("error_rate", "success_ratio")


@dataclass(slots=True)
class Threshold:
    text: str
    metric: str
    stat: str | None
    op: str
    limit: float


@dataclass(slots=True)
class Check:
    text: str
    target: str
    value: float | None
    passed: bool | None  # None: no data to judge


@dataclass
class Verdict:
    status: str  # pass | warn | fail | empty
    headline: str
    reasons: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


def parse_threshold(text: str) -> Threshold:
    m = _RE.match(text)
    if not m:
        raise ValueError(f"threshold {text!r}: expected e.g. ttfa_ms.p95<800 or error_rate<0.01")
    metric, stat, op, limit = m.groups()
    if metric in RATIOS:
        if stat:
            raise ValueError(f"threshold {text!r}: {metric} takes no statistic")
    elif not stat:
        raise ValueError(f"threshold {text!r}: name a statistic, e.g. {metric}.p95")
    return Threshold(text.strip(), metric, stat, op, float(limit))


def _stat(hist, stat: str) -> float | None:
    if hist is None or hist.get_total_count() == 0:
        return None
    if stat == "max":
        return hist.get_max_value() / 1000.0
    if stat == "mean":
        return hist.get_mean_value() / 1000.0
    p = 99.9 if stat == "p999" else float(stat[1:])
    return hist.get_value_at_percentile(p) / 1000.0


def evaluate(data, query=None) -> Verdict:
    """Judge a ReportData. `query` answers merged histograms for percentile thresholds."""
    if not data.summary:
        return Verdict("empty", "No sessions in this range", ["nothing was measured"])
    checks: list[Check] = []
    hist_cache: dict[str, dict] = {}
    for text in data.thresholds:
        try:
            th = parse_threshold(str(text).replace("abort_on_fail", ""))
        except ValueError:
            # e.g. a load run's sliding-window threshold (ttfa_ms.p95[60s]<800) or a counter:
            # the load run judged those itself; the report cannot from stored points
            checks.append(Check(str(text).strip(), "*", None, None))
            continue
        for s in data.summary:
            if th.metric == "error_rate":
                value = 1.0 - s.success_ratio
            elif th.metric == "success_ratio":
                value = s.success_ratio
            else:
                if th.metric not in hist_cache:
                    start, end = data.latency_window or (data.start_ns, data.end_ns)
                    hist_cache[th.metric] = query.merged_histograms(
                        th.metric, start_ns=start, end_ns=end,
                        targets=data.targets or None,
                        kind=data.latency_kind) if query is not None else {}
                value = _stat(hist_cache[th.metric].get(s.target), th.stat)
            passed = None if value is None else OPS[th.op](value, th.limit)
            checks.append(Check(th.text, s.target, value, passed))

    for j in data.judged:  # the load run's own verdicts (sliding windows, counters, ...)
        actual = j.get("actual")
        checks.append(Check(str(j.get("expr", "?")), "run", None if actual is None
                            else float(actual), None if actual is None and not j.get("ok")
                            else bool(j.get("ok"))))
    reasons: list[str] = []
    failed = [c for c in checks if c.passed is False]
    for c in failed:
        measured = "no data" if c.value is None else f"measured {c.value:.4g}"
        reasons.append(f"{c.target}: {c.text} failed ({measured})")
    fired = [a for a in data.alerts if a.state == "firing"]
    for a in fired:
        reasons.append(f"alert {a.rule} fired" + (f" for {a.target}" if a.target else ""))
    reasons.extend(data.warnings)
    bad = [s for s in data.summary if s.success_ratio < 1.0]
    for s in bad:
        reasons.append(f"{s.target}: {s.sessions - s.ok_sessions} of {s.sessions} sessions "
                       f"failed ({', '.join(f'{k} {v}' for k, v in s.errors.items())})")
    if failed or fired:
        status = "fail"
        headline = "FAIL: " + ("thresholds not met" if failed else "alerts fired")
    elif bad or data.warnings:
        status = "warn"
        what = "some sessions failed" if bad else "the measurement has warnings"
        headline = f"PASS with warnings: {what}" if checks else f"WARN: {what}"
    else:
        status = "pass"
        headline = ("PASS: every threshold met, no alert fired, every session succeeded"
                    if checks else "PASS: no alert fired and every session succeeded")
    unjudged = [c for c in checks if c.passed is None]
    for c in unjudged:
        reasons.append(f"{c.target}: {c.text} not judged (no data)")
    return Verdict(status, headline, reasons, checks)
