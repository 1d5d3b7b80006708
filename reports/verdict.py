"""The report's overall verdict: thresholds, alerts that fired, and sessions that failed.

A threshold is any expression `voicepulse load --threshold` takes (telemetry.stats' one grammar,
vocabulary and percentile rule), judged from the stored points of the report's range:
- `METRIC.STAT` (ttfa_ms.p95<800, connect_ms.max<500): the merged `latency` points, per target
  (HDR, nearest rank, clamped to the points' exact min and max); every target must pass;
- `error_rate`, `success_ratio`, `sessions`, `sessions_ok`, `errors`: the `session` points, per
  target; `turn_error_rate`: the `turn` points, per target;
- `late_starts`, `late_rate`, `arrivals_due`, `arrivals_started`, `start_rate`, `no_slot`,
  `dropped`, `cut`: the load run's `loadgen` points (worker `all`), once for the run (`cut`
  only from runs that stored it: older points have no such field, and read as no data);
- `[WINDOW]` (ttfa_ms.p95[60s]<800): the same over the last WINDOW of the data, to the
  granularity of the stored intervals (points stamped after last - WINDOW).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telemetry.stats import Threshold, compare, hist_statistic, parse_threshold

__all__ = ["Check", "Verdict", "evaluate", "parse_threshold"]

SESSION_COUNTERS = ("error_rate", "success_ratio", "sessions", "sessions_ok", "errors")
LOADGEN_COUNTERS = ("late_starts", "late_rate", "arrivals_due", "arrivals_started",
                    "start_rate", "no_slot", "dropped", "cut")


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


def _session_value(metric: str, total: int, ok: int) -> float | None:
    if metric == "sessions":
        return float(total)
    if metric == "sessions_ok":
        return float(ok)
    if metric == "errors":
        return float(total - ok)
    if not total:
        return None
    return (total - ok) / total if metric == "error_rate" else ok / total


def _trailing(times: list[int], window_s: float | None) -> tuple[int, int] | None:
    """[start, end) of the last `window_s` of data stamped `times` (None: none stamped)."""
    if not times:
        return None
    last = max(times)
    return last - int(window_s * 1e9) + 1, last + 1


def _loadgen_value(th: Threshold, rows: list) -> float | None:
    """A run counter from `loadgen` points: the `all` worker's (every worker's when a run
    wrote none), summed over the intervals."""
    rows = [r for r in rows if r.worker == "all"] or rows
    if not rows:
        return None
    if th.metric == "cut" and not any("cut" in r.values for r in rows):
        return None
    total = {k: sum(float(r.values.get(k) or 0) for r in rows)
             for k in ("late_starts", "arrivals_due", "arrivals_started", "no_slot", "dropped",
                       "cut")}
    if th.metric == "late_rate":
        started = total["arrivals_started"]
        return total["late_starts"] / started if started else None
    if th.metric == "start_rate":
        times = sorted({r.time_ns for r in rows})
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        interval_s = min(gaps) / 1e9 if gaps else 10.0
        seconds = th.window_s or len(times) * interval_s
        return total["arrivals_started"] / seconds
    return total[th.metric]


def _values(th: Threshold, data, query, cache: dict) -> list[tuple[str, float | None]]:
    """(target, value) pairs a threshold judges; target "run" for run counters."""
    targets = [s.target for s in data.summary]
    if th.metric in LOADGEN_COUNTERS:
        rows = data.loadgen
        if th.window_s and rows:
            lo, hi = _trailing([r.time_ns for r in rows], th.window_s)
            rows = [r for r in rows if lo <= r.time_ns < hi]
        return [("run", _loadgen_value(th, rows))]
    if query is None and (th.stat is not None or th.window_s or th.metric == "turn_error_rate"):
        return [(t, None) for t in targets]
    if th.stat is not None:
        lo, hi = data.latency_window or (data.start_ns, data.end_ns)
        flt = {"targets": data.targets or None, "kind": data.latency_kind}
        if th.window_s:
            rows = query.select("latency", ("target", "count"), lo, hi,
                                {"metric": th.metric, "target": flt["targets"],
                                 "kind": flt["kind"]})
            span = _trailing([int(r[0]) for r in rows], th.window_s)
            if span is None:
                return [(t, None) for t in targets]
            lo, hi = max(lo, span[0]), min(hi, span[1])
        key = (th.metric, lo, hi)
        if key not in cache:
            cache[key] = query.merged_series(th.metric, start_ns=lo, end_ns=hi, **flt)
        return [(t, hist_statistic(cache[key].get(t), th.stat)) for t in targets]
    lo, hi = data.start_ns, data.end_ns
    f = {"target": data.targets or None, "run_id": data.run_id}
    if th.metric == "turn_error_rate":
        rows = query.select("turn", ("target", "outcome", "turn_index"), lo, hi, f)
        if th.window_s:
            span = _trailing([int(r[0]) for r in rows], th.window_s)
            rows = [r for r in rows if span[0] <= r[0] < span[1]] if span else []
        out = []
        for t in targets:
            mine = [r for r in rows if r[1] == t]
            bad = sum(1 for r in mine if r[2] != "ok")
            out.append((t, bad / len(mine) if mine else None))
        return out
    if not th.window_s:
        return [(s.target, _session_value(th.metric, s.sessions, s.ok_sessions))
                for s in data.summary]
    rows = query.select("session", ("target", "outcome", "ok"), lo, hi, f)
    span = _trailing([int(r[0]) for r in rows], th.window_s)
    rows = [r for r in rows if span[0] <= r[0] < span[1]] if span else []
    out = []
    for t in targets:
        mine = [r for r in rows if r[1] == t]
        out.append((t, _session_value(th.metric, len(mine),
                                      sum(1 for r in mine if r[2] == "ok"))))
    return out


def evaluate(data, query=None) -> Verdict:
    """Judge a ReportData. `query` answers merged histograms for percentile thresholds."""
    if not data.summary:
        return Verdict("empty", "No sessions in this range", ["nothing was measured"])
    checks: list[Check] = []
    cache: dict = {}
    for text in data.thresholds:
        try:
            th = parse_threshold(str(text))
        except ValueError:  # refused at the command line; a stored run's text may be older
            checks.append(Check(str(text).strip(), "*", None, None))
            continue
        for target, value in _values(th, data, query, cache):
            checks.append(Check(th.expr, target, value, None if value is None
                                else compare(th, value)))

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
