"""Everything a report shows, gathered from the query layer (`telemetry.query`) into plain data.

Most of it comes from the query layer's public calls (summary, scenario_summary,
percentiles_over_time, merged_series, error_counts, alerts, loadgen). Two things it does not offer yet are built
here on the same backend primitive (`Query.select`, the backends' row primitive):
`session_rows` (tags and time of every session: the data's extent, kinds, scenarios and sessions
per bucket by outcome) and `spectrum` (an HDR percentile spectrum from a merged histogram).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

LATENCY_PERCENTILES = (50.0, 95.0, 99.0)
SPECTRUM_METRICS = ("ttfa_ms", "ttfa_audible_ms", "turn_ms")
#: x = 1/(1-p): 1 is 0 %, 10 is 90 %, 10^4 is 99.99 % (the classic HdrHistogram plot's axis)
SPECTRUM_MAX_X = 10_000.0
SPECTRUM_POINTS_PER_DECADE = 24
NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_BUCKETS = 80


@dataclass(slots=True)
class SessionRow:
    time_ns: int
    target: str
    model: str
    provider: str
    kind: str
    scenario: str
    outcome: str
    run_id: str


@dataclass(slots=True)
class Spectrum:
    target: str
    metric: str
    count: int
    percentiles: list[float]  # 0 .. 99.99
    values_ms: list[float]
    max_ms: float


@dataclass(slots=True)
class AudibleSummary:
    """One target's audible TTFA (`ttfa_audible_ms`: E -> the first output chunk past the
    audible gate): the exact nearest-rank p95 of its turns' raw values."""

    target: str
    turns: int
    p95: float | None


@dataclass(slots=True)
class OutcomeBucket:
    time_ns: int
    target: str
    total: int
    ok: int


@dataclass
class ReportData:
    title: str
    start_ns: int  # the window asked for
    end_ns: int
    first_ns: int | None  # the data's own extent inside it
    last_ns: int | None
    bucket_s: int
    targets: list[str]
    run_id: str | None
    kinds: list[str]
    scenarios: list[str]
    models: dict[str, list[str]]  # target -> models
    providers: dict[str, str]
    summary: list  # telemetry.query.TargetSummary rows
    latency: dict[str, list]  # metric -> [PercentileBucket]
    spectra: list[Spectrum]
    errors: list  # [ErrorCount] per bucket
    outcomes: list[OutcomeBucket]
    alerts: list  # [AlertRecord]
    loadgen: list  # [LoadgenRow]
    params: dict[str, str] = field(default_factory=dict)
    thresholds: list[str] = field(default_factory=list)
    judged: list[dict] = field(default_factory=list)  # thresholds the run judged itself
    warnings: list[str] = field(default_factory=list)  # e.g. the generator was overloaded
    latency_window: tuple[int, int] | None = None  # where `latency` points were read
    latency_kind: str | None = None
    scenario: dict = field(default_factory=dict)  # target -> telemetry.query.ScenarioSummary
    audible: dict = field(default_factory=dict)  # target -> AudibleSummary (turns that have it)
    capacity: dict | None = None  # a --find-capacity search's result (reports/capacity.py)

    @property
    def is_load(self) -> bool:
        return bool(self.loadgen) or "load" in self.kinds

    @property
    def sessions(self) -> int:
        return sum(s.sessions for s in self.summary)


DEFAULT_INTERVAL_S = 10.0  # docs/design.md: one `latency` point per 10 s interval


def nice_bucket_s(span_s: float, min_s: float = DEFAULT_INTERVAL_S) -> int:
    """A round bucket size giving at most MAX_BUCKETS buckets, never finer than the data's own
    interval (a finer bucket would only show gaps)."""
    for b in NICE_BUCKETS_S:
        if b >= min_s - 1e-9 and span_s / b <= MAX_BUCKETS:
            return b
    return NICE_BUCKETS_S[-1]


def latency_interval_s(query, start_ns: int, end_ns: int, targets=None) -> float:
    """The interval the `latency` points were written at (10 s by docs/design.md; a test or a load
    run may use less): per series, the smallest gap between two of its points; the largest of
    those over the series (writers are not aligned with each other)."""
    rows = query.select("latency", ("target", "kind", "scenario", "agent"), start_ns, end_ns,
                         {"metric": "ttfa_ms", "target": targets})
    series: dict[tuple, set[int]] = defaultdict(set)
    for r in rows:
        series[tuple(r[1:])].add(int(r[0]))
    best = 0.0
    for times in series.values():
        t = sorted(times)
        gaps = [b - a for a, b in zip(t, t[1:], strict=False) if b > a]
        if gaps:
            best = max(best, min(gaps) / 1e9)
    return best or DEFAULT_INTERVAL_S


def loadgen_rows(query, start_ns: int, end_ns: int, run_id: str | None = None) -> list:
    """`loadgen` points with every field the load generator writes (telemetry.schema's)."""
    from telemetry.query import LOADGEN_FIELDS as fields
    from telemetry.query import LoadgenRow

    rows = query.select("loadgen", ("run_id", "scenario", "worker", *fields), start_ns, end_ns,
                         {"run_id": run_id})
    out = [LoadgenRow(int(r[0]), r[1] or "", r[2] or "", r[3] or "",
                      {k: v for k, v in zip(fields, r[4:], strict=True) if v is not None})
           for r in rows]
    out.sort(key=lambda r: (r.time_ns, r.run_id, r.worker))  # one order on either backend
    return out


def session_rows(query, start_ns: int, end_ns: int, targets=None, kind=None, run_id=None):
    """Every session's time and tags in the window (the query layer's backend primitive)."""
    cols = ("target", "model", "provider", "kind", "scenario", "outcome", "run_id")
    filters = {"target": targets, "kind": kind, "run_id": run_id}
    return [
        SessionRow(int(r[0]), *(x if x is not None else "" for x in r[1:]))
        for r in query.select("session", cols, start_ns, end_ns, filters)
    ]


def audible_summary(query, start_ns: int, end_ns: int, targets=None,
                    run_id=None) -> dict[str, AudibleSummary]:
    """Per target whose turns carry `ttfa_audible_ms`: its exact p95 (data written before the
    metric existed, or turns without an audible reply, add nothing)."""
    from telemetry.stats import percentile

    by: dict[str, list[float]] = defaultdict(list)
    for v in query.turn_values("ttfa_audible_ms", start_ns=start_ns, end_ns=end_ns,
                               targets=targets, run_id=run_id):
        by[v.target].append(v.value)
    return {t: AudibleSummary(t, len(vs), percentile(vs, 95))
            for t, vs in sorted(by.items())}


def outcomes_over_time(rows: Sequence[SessionRow], bucket_s: int) -> list[OutcomeBucket]:
    step = int(bucket_s * 1e9)
    acc: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        a = acc[(r.time_ns - r.time_ns % step, r.target)]
        a[0] += 1
        a[1] += r.outcome == "ok"
    return [OutcomeBucket(t, tg, n, ok) for (t, tg), (n, ok) in sorted(acc.items())]


def spectrum_grid(count: int) -> list[float]:
    """Percentiles from 0 to 99.99 %, evenly spaced on log(1/(1-p)), but none beyond what
    `count` values can tell apart (p <= 1 - 1/count): the last point is the maximum."""
    top = min(SPECTRUM_MAX_X, float(max(count, 1)))
    n = int(math.ceil(math.log10(top) * SPECTRUM_POINTS_PER_DECADE)) if top > 1 else 0
    xs = [10 ** (i / SPECTRUM_POINTS_PER_DECADE) for i in range(n)] + [top]
    return [round(100.0 * (1.0 - 1.0 / x), 6) for x in xs]


def spectrum(hist, target: str, metric: str) -> Spectrum | None:
    """The percentile spectrum of one merged series (a telemetry.hdr.SeriesHistogram, or a bare
    HdrHistogram): nearest rank, clamped to the exact min and max, in ms."""
    from telemetry.hdr import SeriesHistogram

    sh = hist if isinstance(hist, SeriesHistogram) else SeriesHistogram.of(hist)
    if sh.count == 0:
        return None
    ps = spectrum_grid(sh.count)
    d = sh.percentiles_ms(ps)
    vals = [d[p] for p in ps]
    vals[-1] = sh.max_ms  # the curve ends at the recorded maximum
    return Spectrum(target, metric, sh.count, ps, vals, sh.max_ms)


def _load_window(query, run_id: str, start: int, end: int, loadgen: list) -> tuple[int, int]:
    """A load run's own time range: its loadgen points, else its turns."""
    times = [r.time_ns for r in loadgen]
    if not times:
        times = [v.time_ns for v in query.turn_values("ttfa_ms", start_ns=start, end_ns=end,
                                                      run_id=run_id)]
    if not times:
        return start, end
    return max(start, min(times)), min(end, max(times) + 10_000_000_000)


def _alerts(query, start_ns, end_ns, targets, run_id, rows, run_window) -> list:
    """Alert state changes in the range; for one load run, those of the run's targets during
    the run (an alert on another target says nothing about this run)."""
    if not run_id:
        return query.alerts(start_ns=start_ns, end_ns=end_ns, targets=targets)
    run_targets = sorted({r.target for r in rows})
    if not run_targets:
        return []
    return query.alerts(start_ns=run_window[0], end_ns=run_window[1], targets=run_targets)


def collect(
    query,
    *,
    start_ns: int,
    end_ns: int,
    targets: Sequence[str] | None = None,
    run_id: str | None = None,
    title: str | None = None,
    params: dict | None = None,
    thresholds: Sequence[str] | None = None,
    bucket_s: int | None = None,
    judged: Sequence[dict] | None = None,
    warnings: Sequence[str] | None = None,
) -> ReportData:
    targets = list(targets) if targets else None
    loadgen = loadgen_rows(query, start_ns, end_ns, run_id)
    kind = None
    lat_start, lat_end = start_ns, end_ns
    if run_id:
        # `latency` points carry no run_id (it is not a tag): a run's latency is the load
        # sessions' latency inside the run's own time range
        kind = "load"
        lat_start, lat_end = _load_window(query, run_id, start_ns, end_ns, loadgen)
    rows = session_rows(query, start_ns, end_ns, targets, None, run_id)
    summary = query.summary(start_ns=start_ns, end_ns=end_ns, targets=targets, run_id=run_id)
    first = min((r.time_ns for r in rows), default=None)
    last = max((r.time_ns for r in rows), default=None)
    if loadgen:
        first = min(first or loadgen[0].time_ns, loadgen[0].time_ns)
        last = max(last or loadgen[-1].time_ns, loadgen[-1].time_ns)
    span_s = ((last - first) / 1e9) if first is not None and last is not None else 0.0
    if not bucket_s:
        bucket_s = nice_bucket_s(span_s, latency_interval_s(query, lat_start, lat_end, targets))

    latency = {
        m: query.percentiles_over_time(m, bucket_s, start_ns=lat_start, end_ns=lat_end,
                                       targets=targets, kind=kind,
                                       percentiles=LATENCY_PERCENTILES)
        for m in SPECTRUM_METRICS
    }
    spectra = []
    for m in SPECTRUM_METRICS:
        hists = query.merged_series(m, start_ns=lat_start, end_ns=lat_end, targets=targets,
                                    kind=kind)
        for target, h in hists.items():
            s = spectrum(h, target, m)
            if s is not None:
                spectra.append(s)

    models: dict[str, list[str]] = {}
    providers: dict[str, str] = {}
    for r in rows:
        ms = models.setdefault(r.target, [])
        if r.model and r.model not in ms:
            ms.append(r.model)
        if r.provider:
            providers.setdefault(r.target, r.provider)
    return ReportData(
        title=title or ("VoicePulse load test report" if (loadgen or run_id)
                        else "VoicePulse report"),
        start_ns=start_ns,
        end_ns=end_ns,
        first_ns=first,
        last_ns=last,
        bucket_s=bucket_s,
        targets=sorted({r.target for r in rows} | {s.target for s in summary}),
        run_id=run_id,
        kinds=sorted({r.kind for r in rows if r.kind}),
        scenarios=sorted({r.scenario for r in rows if r.scenario}),
        models=models,
        providers=providers,
        summary=summary,
        latency=latency,
        spectra=spectra,
        errors=query.error_counts(start_ns=start_ns, end_ns=end_ns, targets=targets,
                                  run_id=run_id, bucket_s=bucket_s),
        outcomes=outcomes_over_time(rows, bucket_s),
        alerts=_alerts(query, start_ns, end_ns, targets, run_id, rows, (lat_start, lat_end)),
        loadgen=loadgen,
        params={str(k): str(v) for k, v in (params or {}).items()},
        thresholds=list(thresholds or ()),
        judged=[dict(j) for j in judged or ()],
        warnings=list(warnings or ()),
        latency_window=(lat_start, lat_end),
        latency_kind=kind,
        scenario={s.target: s for s in query.scenario_summary(
            start_ns=start_ns, end_ns=end_ns, targets=targets, run_id=run_id)},
        audible={t: a for t, a in audible_summary(query, start_ns, end_ns, targets,
                                                   run_id).items()
                 if t in {s.target for s in summary}},
    )
