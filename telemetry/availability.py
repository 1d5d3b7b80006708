"""The availability cards: one function computes what the status page, `voicepulse status
--html` and `voicepulse results` show per target, so the three always agree.

Per target, at one instant `end_ns`:
- provider and model (of its latest session);
- TTFA p50/p95 over its last N runs and over the window (default 24 h);
- runs that failed out of the last N, with their error classes (the `outcome` tag);
- the last run's time and outcome;
- uptime (runs that succeeded / runs) over 24 h, 7 d and 30 d;
- a bar of `BAR_INTERVALS` wall-clock intervals, each `ok`, `degraded`, `down` or `none`.

Percentiles use the one rule of `telemetry.stats` (nearest rank, never interpolated) over the raw
per-turn values, exactly like `Query.summary()`: the window's p50/p95 equal its ttfa_p50/p95.
Only classes and numbers come out: no error text, no URL, no session id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from .query import Query
from .stats import percentile

#: What the JSON says about the percentile rule (telemetry.stats).
PERCENTILE_RULE = ("nearest rank: the p-th percentile of n values is the value of rank "
                   "ceil(p/100 * n) in sorted order (never interpolated)")
DAY = 86400.0
UPTIME_WINDOWS = (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))
BAR_INTERVALS = 90
DEFAULT_RUNS = 6


@dataclass(slots=True)
class Interval:
    """One slice of the uptime bar: [start_ns, end_ns) and its runs."""

    start_ns: int
    end_ns: int
    runs: int = 0
    ok: int = 0

    @property
    def state(self) -> str:
        """`none` no run; `ok` every run succeeded; `down` more than half failed; else
        `degraded`."""
        if not self.runs:
            return "none"
        bad = self.runs - self.ok
        if not bad:
            return "ok"
        return "down" if 2 * bad > self.runs else "degraded"


@dataclass(slots=True)
class Uptime:
    ok: int
    runs: int

    @property
    def ratio(self) -> float | None:
        return self.ok / self.runs if self.runs else None


@dataclass(slots=True)
class Card:
    target: str
    provider: str = ""
    model: str = ""
    runs_asked: int = DEFAULT_RUNS  # N
    runs: int = 0  # the last N runs found (fewer while the target is new)
    runs_failed: int = 0
    runs_errors: dict[str, int] = field(default_factory=dict)
    runs_ttfa_p50_ms: float | None = None
    runs_ttfa_p95_ms: float | None = None
    window_runs: int = 0
    window_ok: int = 0
    window_ttfa_p50_ms: float | None = None
    window_ttfa_p95_ms: float | None = None
    last_at_ns: int | None = None
    last_outcome: str | None = None
    uptime: dict[str, Uptime] = field(default_factory=dict)
    bar: list[Interval] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("uptime", "bar")}
        d["last_at"] = iso(self.last_at_ns)
        d["uptime"] = {k: {"ok": u.ok, "runs": u.runs, "ratio": u.ratio}
                       for k, u in self.uptime.items()}
        d["bar"] = [{"start_ns": i.start_ns, "end_ns": i.end_ns, "runs": i.runs, "ok": i.ok,
                     "state": i.state} for i in self.bar]
        return d


@dataclass(slots=True)
class Availability:
    start_ns: int  # of the window
    end_ns: int
    window_s: float
    runs: int
    bar_span_s: float
    kind: str | None
    cards: list[Card]

    def to_dict(self) -> dict:
        return {"percentile_rule": PERCENTILE_RULE,
                "window": {"start": iso(self.start_ns), "end": iso(self.end_ns),
                           "start_ns": self.start_ns, "end_ns": self.end_ns,
                           "seconds": self.window_s},
                "runs": self.runs, "kind": self.kind,
                "uptime_windows": {k: s for k, s in UPTIME_WINDOWS},
                "bar": {"intervals": BAR_INTERVALS, "span_s": self.bar_span_s},
                "targets": [c.to_dict() for c in self.cards]}


def iso(time_ns: int | None) -> str | None:
    """UTC, to the millisecond (the page's window ends on a whole millisecond)."""
    if time_ns is None:
        return None
    d = datetime.fromtimestamp(time_ns // 1_000_000 / 1000, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ns // 1_000_000 % 1000:03d}Z"


def now_ms_ns() -> int:
    """Now, rounded up to a whole millisecond, in ns: an end `--until` can name exactly."""
    import time

    return math.ceil(time.time_ns() / 1e6) * 1_000_000


def availability(query: Query, *, end_ns: int | None = None, window_s: float = DAY,
                 runs: int = DEFAULT_RUNS, bar_span_s: float = DAY,
                 targets: Sequence[str] | None = None, kind: str | None = "probe",
                 ) -> Availability:
    """The cards at `end_ns` (default now, on a whole ms). With `targets`, one card per name in
    that order (an empty card for a target without runs); otherwise every target found."""
    end = now_ms_ns() if end_ns is None else int(end_ns)
    start = end - int(window_s * 1e9)
    step = max(1, int(bar_span_s * 1e9) // BAR_INTERVALS)
    last_slot = (end - 1) // step
    bar_start = (last_slot - BAR_INTERVALS + 1) * step
    earliest = min(start, bar_start, end - int(max(s for _, s in UPTIME_WINDOWS) * 1e9))
    f = {"target": list(targets) if targets is not None else None, "kind": kind}
    if targets is not None and not targets:  # nothing asked: no query (and no empty IN ())
        return Availability(start, end, window_s, runs, bar_span_s, kind, [])
    sessions = query.select("session", ("target", "provider", "model", "outcome", "ok",
                                        "session_id"), earliest, end, f)
    by: dict[str, list[tuple]] = {}
    for row in sessions:
        by.setdefault(row[1], []).append(row)
    names = list(targets) if targets is not None else sorted(by)
    cards = {t: Card(t, runs_asked=runs) for t in names}
    last_ids: dict[str, set[str]] = {}
    turns_from = start
    for t, card in cards.items():
        rows = by.get(t, [])
        _fill(card, rows, start, end, bar_start, step)
        tail = rows[-runs:] if runs > 0 else []
        card.runs = len(tail)
        for *_x, outcome, ok, _sid in tail:
            if not _is_ok(ok, outcome):
                card.runs_failed += 1
                card.runs_errors[outcome or "unknown"] = card.runs_errors.get(
                    outcome or "unknown", 0) + 1
        card.runs_errors = dict(sorted(card.runs_errors.items()))
        last_ids[t] = {r[6] for r in tail if r[6]}
        if tail:
            turns_from = min(turns_from, tail[0][0])
    window_ttfa: dict[str, list[float]] = {t: [] for t in cards}
    runs_ttfa: dict[str, list[float]] = {t: [] for t in cards}
    for t_ns, target, ttfa, sid in query.select("turn", ("target", "ttfa_ms", "session_id"),
                                                turns_from, end, f):
        if ttfa is None or target not in cards:
            continue
        if t_ns >= start:
            window_ttfa[target].append(float(ttfa))
        if sid and sid in last_ids[target]:
            runs_ttfa[target].append(float(ttfa))
    for t, card in cards.items():
        card.window_ttfa_p50_ms = percentile(window_ttfa[t], 50)
        card.window_ttfa_p95_ms = percentile(window_ttfa[t], 95)
        card.runs_ttfa_p50_ms = percentile(runs_ttfa[t], 50)
        card.runs_ttfa_p95_ms = percentile(runs_ttfa[t], 95)
    return Availability(start, end, window_s, runs, bar_span_s, kind, list(cards.values()))


def _is_ok(ok, outcome) -> bool:
    """The rule of `Query.summary()`: the `ok` field, else the outcome tag."""
    return bool(ok) or (ok is None and outcome == "ok")


def _fill(card: Card, rows: list[tuple], start: int, end: int, bar_start: int,
          step: int) -> None:
    bar = [Interval(bar_start + i * step, min(end, bar_start + (i + 1) * step))
           for i in range(BAR_INTERVALS)]
    ups = {label: Uptime(0, 0) for label, _ in UPTIME_WINDOWS}
    bounds = {label: end - int(s * 1e9) for label, s in UPTIME_WINDOWS}
    for t_ns, _target, _provider, _model, outcome, ok, _sid in rows:
        good = _is_ok(ok, outcome)
        for label, lo in bounds.items():
            if t_ns >= lo:
                ups[label].runs += 1
                ups[label].ok += good
        if t_ns >= start:
            card.window_runs += 1
            card.window_ok += good
        if t_ns >= bar_start:
            cell = bar[(t_ns - bar_start) // step]
            cell.runs += 1
            cell.ok += good
    if rows:
        t_ns, _target, provider, model, outcome, _ok, _sid = rows[-1]
        card.provider, card.model = provider or "", model or ""
        card.last_at_ns, card.last_outcome = t_ns, outcome or "unknown"
    card.uptime, card.bar = ups, bar


def firing_alerts(query: Query, end_ns: int, lookback_s: float = 30 * DAY) -> list[dict]:
    """Alerts whose last recorded state before `end_ns` is `firing` (what the store knows when
    no service is running): rule, target, severity, since; numbers only, no message."""
    last: dict[tuple[str, str], object] = {}
    for a in query.alerts(start_ns=end_ns - int(lookback_s * 1e9), end_ns=end_ns):
        last[(a.rule, a.target)] = a
    return [{"rule": a.rule, "target": a.target, "severity": a.severity,
             "since": a.time_ns / 1e9, "value": a.value, "threshold": a.threshold}
            for a in last.values() if a.state == "firing"]
