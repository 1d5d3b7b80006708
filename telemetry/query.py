"""One query interface for reports, `voicepulse results` and the alert engine.

Two backends answer the same calls: the embedded store (SQL over SQLite) and InfluxDB (InfluxQL
over `/query`, which InfluxDB 1.x, 2.x through its v1 API, and 3.x all serve). Both backends only
*select rows* (`_select`); every aggregate is computed here in Python by the same code, so the two
give identical answers for identical data.

Percentiles, stated plainly: one rule, nearest rank ceil(p/100 * n) (`telemetry.stats`).
- `summary()` and `scenario_summary()` use the raw per-turn / per-session values: exact.
- `percentiles_over_time()` and `merged_series()` merge the `latency` points' HDR blobs per
  bucket: the same rank, within HDR precision (3 significant digits), clamped to the points'
  exact min and max, and scalable to any range or worker count.
(InfluxQL's own PERCENTILE(), used by the Grafana dashboards, rounds the rank instead.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import orjson

from .hdr import SeriesHistogram
from .schema import CHECK_PREFIX, LOADGEN, MEASUREMENTS, latency_metric_names
from .stats import percentile

Filters = dict[str, str | Sequence[str] | None]
#: the `latency` fields a merge reads: the blob and the interval's exact figures
_LATENCY_COLS = ("target", "hdr", "mean", "count", "min", "max", "clamped")


@dataclass(slots=True)
class TargetSummary:
    target: str
    model: str
    provider: str
    sessions: int
    ok_sessions: int
    success_ratio: float
    turns: int
    ttfa_p50: float | None
    ttfa_p95: float | None
    ttfa_p99: float | None
    ttfa_max: float | None
    turn_p95: float | None
    connect_p95: float | None
    rtf_mean: float | None
    stalls: int
    errors: dict[str, int] = field(default_factory=dict)
    audio_s: float = 0.0
    cost_usd: float | None = None
    cost_per_audio_min: float | None = None


@dataclass(slots=True)
class ScenarioSummary:
    """Per target, what scripted scenarios measured (exact, from the raw `turn` points)."""

    target: str
    turns: int  # turns with any scenario value
    barge_in_p95: float | None
    tool_p95: float | None
    wer_mean: float | None
    wer_turns: int
    checks_passed: int
    checks_total: int
    checks: dict[str, Ratio] = field(default_factory=dict)  # check name -> passed / total


@dataclass(slots=True)
class PercentileBucket:
    time_ns: int  # bucket start
    target: str
    count: int
    values: dict[float, float]  # percentile -> ms


@dataclass(slots=True)
class Ratio:
    ok: int
    total: int

    @property
    def ratio(self) -> float | None:
        return self.ok / self.total if self.total else None


@dataclass(slots=True)
class ErrorCount:
    time_ns: int  # bucket start (or window start without buckets)
    target: str
    outcome: str
    count: int


@dataclass(slots=True)
class TurnValue:
    time_ns: int
    target: str
    value: float


@dataclass(slots=True)
class AlertRecord:
    time_ns: int
    rule: str
    target: str
    severity: str
    state: str
    value: float | None
    threshold: float | None
    message: str


@dataclass(slots=True)
class LoadgenRow:
    time_ns: int
    run_id: str
    scenario: str
    worker: str
    values: dict[str, float]


#: Every `loadgen` field (telemetry.schema), as `Query.loadgen` returns them.
LOADGEN_FIELDS = LOADGEN.fields


class Scope(TypedDict, total=False):
    """Which points a query reads (every key optional, keyword only): a window, `[start_ns,
    end_ns)` or the last `since_s` seconds (all time without either), and tag filters
    (`targets` one or several; the others one value; `run_id` is a field on turn/session)."""

    since_s: float | None
    start_ns: int | None
    end_ns: int | None
    targets: str | Sequence[str] | None
    kind: str | None
    scenario: str | None
    outcome: str | None
    run_id: str | None


#: Scope key -> the column it filters.
_FILTER_COLUMNS = {"targets": "target", "kind": "kind", "scenario": "scenario",
                   "outcome": "outcome", "run_id": "run_id"}


def window(
    since_s: float | None = None, start_ns: int | None = None, end_ns: int | None = None
) -> tuple[int, int]:
    """[start, end) in epoch ns: explicit bounds win; `since_s` counts back from end (or now)."""
    end = int(end_ns) if end_ns is not None else time.time_ns() + 1
    if start_ns is not None:
        start = int(start_ns)
    elif since_s is not None:
        start = end - int(since_s * 1e9)
    else:
        start = 0
    return start, end


def scoped(scope: Scope, **filters) -> tuple[int, int, Filters]:
    """(start, end, filters) of a Scope, plus extra column filters; an unknown key raises."""
    unknown = set(scope) - Scope.__optional_keys__
    if unknown:
        raise TypeError(f"unknown query scope {', '.join(sorted(unknown))}")
    start, end = window(scope.get("since_s"), scope.get("start_ns"), scope.get("end_ns"))
    f: Filters = {col: v for key, col in _FILTER_COLUMNS.items() if (v := scope.get(key)) is not None}
    return start, end, {**f, **filters}


@dataclass(slots=True)
class _TargetAcc:
    """One target's raw values while `summary` reads them."""

    provider: str = ""
    models: list[str] = field(default_factory=list)
    sessions: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    connect: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    cost: float | None = None
    turns: int = 0
    ttfa: list[float] = field(default_factory=list)
    turn: list[float] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)
    stalls: int = 0

    def row(self, target: str) -> TargetSummary:
        cost, audio = self.cost, self.audio_s
        return TargetSummary(
            target=target, model=",".join(self.models), provider=self.provider,
            sessions=self.sessions, ok_sessions=self.ok,
            success_ratio=self.ok / self.sessions if self.sessions else 0.0, turns=self.turns,
            ttfa_p50=percentile(self.ttfa, 50), ttfa_p95=percentile(self.ttfa, 95),
            ttfa_p99=percentile(self.ttfa, 99), ttfa_max=max(self.ttfa) if self.ttfa else None,
            turn_p95=percentile(self.turn, 95), connect_p95=percentile(self.connect, 95),
            rtf_mean=sum(self.rtf) / len(self.rtf) if self.rtf else None, stalls=self.stalls,
            errors=dict(sorted(self.errors.items())), audio_s=audio, cost_usd=cost,
            cost_per_audio_min=cost / (audio / 60.0) if cost is not None and audio > 0 else None)


class Query:
    """The shared logic; a backend provides `_select`. Every reading method takes a `Scope`."""

    def _select(self, measurement: str, columns: Sequence[str], start_ns: int, end_ns: int,
                filters: Filters) -> list[tuple]:
        """Rows (time_ns, *columns) in time order; missing columns read as None. Filters: column
        -> value or list of values (tags, or the `run_id` field)."""
        raise NotImplementedError

    def _field_names(self, measurement: str) -> list[str]:
        """Every field name the measurement has ever been written with (any time)."""
        raise NotImplementedError

    def select(self, measurement: str, columns: Sequence[str], start_ns: int, end_ns: int,
               filters: Filters | None = None) -> list[tuple]:
        """Public form of the backend primitive: rows (time_ns, *columns) in time order."""
        return self._select(measurement, columns, start_ns, end_ns, filters or {})

    def close(self) -> None:
        pass

    # -- summary --------------------------------------------------------------------------------
    def summary(self, **scope: Unpack[Scope]) -> list[TargetSummary]:
        """Per target: sessions, success, exact TTFA/turn/connect percentiles from raw values."""
        start, end, f = scoped(scope)
        cols = ("target", "model", "provider", "outcome", "ok", "connect_ms", "audio_s", "cost_usd")
        sess = self._select("session", cols, start, end, f)
        turns = self._select("turn", ("target", "ttfa_ms", "turn_ms", "rtf", "stalls"),
                             start, end, f)
        by: dict[str, _TargetAcc] = {}
        for _t, target, model, provider, outcome, ok, connect, audio, cost in sess:
            s = by.setdefault(target, _TargetAcc(provider=provider or ""))
            if model and model not in s.models:
                s.models.append(model)
            s.sessions += 1
            if ok or (ok is None and outcome == "ok"):
                s.ok += 1
            else:
                s.errors[outcome or "unknown"] += 1
            if connect is not None:
                s.connect.append(connect)
            s.audio_s += audio or 0.0
            if cost is not None:
                s.cost = (s.cost or 0.0) + cost
        for _t, target, ttfa, turn_ms, rtf, stalls in turns:
            s = by.get(target)
            if s is None:
                continue
            s.turns += 1
            for values, v in ((s.ttfa, ttfa), (s.turn, turn_ms), (s.rtf, rtf)):
                if v is not None:
                    values.append(v)
            s.stalls += int(stalls or 0)
        return [by[t].row(t) for t in sorted(by)]

    # -- scripted scenarios ---------------------------------------------------------------------
    def scenario_summary(self, **scope: Unpack[Scope]) -> list[ScenarioSummary]:
        """Per target with scenario data: exact barge-in and tool-call p95, mean WER and scenario
        checks passed/total (the `check_<name>` fields, 1 passed / 0 failed). Targets whose turns
        carry none of these are left out, so plain probes add nothing."""
        start, end, f = scoped(scope)
        names = sorted(n for n in self._field_names("turn") if n.startswith(CHECK_PREFIX))
        cols = ("target", "barge_in_ms", "tool_ms", "wer", *names)
        by: dict[str, dict] = {}
        for _t, target, barge, tool, wer, *checks in self._select("turn", cols, start, end, f):
            if barge is None and tool is None and wer is None and all(c is None for c in checks):
                continue
            s = by.setdefault(target, {"n": 0, "barge": [], "tool": [], "wer": [], "checks": {}})
            s["n"] += 1
            for key, v in (("barge", barge), ("tool", tool), ("wer", wer)):
                if v is not None:
                    s[key].append(float(v))
            for name, v in zip(names, checks, strict=True):
                if v is not None:
                    r = s["checks"].setdefault(name[len(CHECK_PREFIX):], Ratio(0, 0))
                    r.total += 1
                    r.ok += bool(v)
        return [_scenario_row(t, by[t]) for t in sorted(by)]

    # -- latency blobs --------------------------------------------------------------------------
    def _latency(self, metric: str, scope: Scope) -> list[tuple]:
        """The `latency` rows of `metric` (under any name it was stored with): (time_ns, target,
        *_LATENCY_COLS[1:])."""
        start, end, f = scoped(scope, metric=list(latency_metric_names(metric)))
        return self._select("latency", _LATENCY_COLS, start, end, f)

    def merged_series(self, metric: str, **scope: Unpack[Scope]) -> dict[str, SeriesHistogram]:
        """target -> one SeriesHistogram merged from every `latency` point in the window: the
        blobs' counts add up exactly, and count, sum, min and max are the points' exact ones."""
        out: dict[str, SeriesHistogram] = {}
        for _t, target, *row in self._latency(metric, scope):
            _add_point(out.setdefault(target, SeriesHistogram()), *row)
        return {t: out[t] for t in sorted(out) if out[t].count}

    def merged_histograms(self, metric: str, **scope: Unpack[Scope]):
        """target -> the bare HdrHistogram of `merged_series` (its exact figures dropped)."""
        return {t: s.hist for t, s in self.merged_series(metric, **scope).items()}

    def percentiles_over_time(self, metric: str, bucket_s: float,
                              percentiles: Sequence[float] = (50.0, 95.0, 99.0),
                              **scope: Unpack[Scope]) -> list[PercentileBucket]:
        """Per target and time bucket, percentiles of the merged `latency` blobs (never averaged;
        clamped to the bucket's exact min and max)."""
        step = int(bucket_s * 1e9)
        groups: dict[tuple[int, str], SeriesHistogram] = {}
        for t, target, *row in self._latency(metric, scope):
            _add_point(groups.setdefault((t - t % step, target), SeriesHistogram()), *row)
        return [PercentileBucket(b, target, h.count, h.percentiles_ms(percentiles))
                for (b, target), h in sorted(groups.items(), key=lambda kv: kv[0]) if h.count]

    # -- success and errors ---------------------------------------------------------------------
    def _outcomes(self, start: int, end: int, f: Filters) -> list[tuple]:
        """(time_ns, target, outcome) of every session (`ok` is selected too: InfluxQL returns
        nothing for a SELECT of tags alone)."""
        return [r[:3] for r in self._select("session", ("target", "outcome", "ok"), start, end, f)]

    def success_ratio(self, **scope: Unpack[Scope]) -> dict[str, Ratio]:
        """target -> sessions that succeeded / all sessions in the window."""
        out: dict[str, Ratio] = {}
        for _t, target, outcome in self._outcomes(*scoped(scope)):
            r = out.setdefault(target, Ratio(0, 0))
            r.total += 1
            r.ok += outcome == "ok"
        return dict(sorted(out.items()))

    def error_counts(self, bucket_s: float | None = None,
                     **scope: Unpack[Scope]) -> list[ErrorCount]:
        """Failed sessions by error class (the `outcome` tag), per bucket when bucket_s is given."""
        start, end, f = scoped(scope)
        step = int(bucket_s * 1e9) if bucket_s else None
        counts: dict[tuple[int, str, str], int] = defaultdict(int)
        for t, target, outcome in self._outcomes(start, end, f):
            if outcome != "ok":
                counts[(t - t % step if step else start, target, outcome or "unknown")] += 1
        return [ErrorCount(b, tg, o, n) for (b, tg, o), n in sorted(counts.items())]

    def count_below(self, metric: str, below: float, **scope: Unpack[Scope]) -> dict[str, Ratio]:
        """target -> turns whose `metric` is below `below` / turns that have the metric (latency SLO)."""
        out: dict[str, Ratio] = {}
        for v in self.turn_values(metric, **scope):
            r = out.setdefault(v.target, Ratio(0, 0))
            r.total += 1
            r.ok += v.value < below
        return dict(sorted(out.items()))

    # -- raw values -----------------------------------------------------------------------------
    def turn_values(self, metric: str, **scope: Unpack[Scope]) -> list[TurnValue]:
        """Every turn's value of `metric` in the window, in time order (turns without it skipped)."""
        start, end, f = scoped(scope)
        rows = self._select("turn", ("target", metric), start, end, f)
        return [TurnValue(t, target, float(v)) for t, target, v in rows if v is not None]

    def alerts(self, **scope: Unpack[Scope]) -> list[AlertRecord]:
        start, end, f = scoped(scope)
        cols = ("rule", "target", "severity", "state", "value", "threshold", "message")
        return [
            AlertRecord(r[0], *(x if x is not None else "" for x in r[1:5]), r[5], r[6], r[7] or "")
            for r in self._select("alert", cols, start, end, f)
        ]

    def loadgen(self, **scope: Unpack[Scope]) -> list[LoadgenRow]:
        start, end, f = scoped(scope)
        rows = self._select("loadgen", ("run_id", "scenario", "worker", *LOADGEN_FIELDS),
                            start, end, f)
        return [
            LoadgenRow(r[0], r[1] or "", r[2] or "", r[3] or "",
                       {k: v for k, v in zip(LOADGEN_FIELDS, r[4:], strict=True) if v is not None})
            for r in rows
        ]




def _scenario_row(target: str, s: dict) -> ScenarioSummary:
    checks = dict(sorted(s["checks"].items()))
    return ScenarioSummary(
        target=target,
        turns=s["n"],
        barge_in_p95=percentile(s["barge"], 95),
        tool_p95=percentile(s["tool"], 95),
        wer_mean=sum(s["wer"]) / len(s["wer"]) if s["wer"] else None,
        wer_turns=len(s["wer"]),
        checks_passed=sum(r.ok for r in checks.values()),
        checks_total=sum(r.total for r in checks.values()),
        checks=checks,
    )


def _add_point(into: SeriesHistogram, blob, mean, count, lo, hi, clamped) -> None:
    """Merge one `latency` point; its exact sum/min/max when stored (else HDR's)."""
    if not blob:
        return
    sum_ms = float(mean) * float(count) if mean is not None and count else None
    into.add_blob(blob, int(clamped or 0), sum_ms=None if sum_ms is None else float(sum_ms),
                  min_ms=None if lo is None else float(lo),
                  max_ms=None if hi is None else float(hi))


def _values(v: str | Sequence[str] | None) -> list[str] | None:
    if v is None:
        return None
    return [v] if isinstance(v, str) else list(v)


class EmbeddedQuery(Query):
    """Answers from the embedded SQLite store."""

    def __init__(self, store):
        self.store = store

    def _select(self, measurement, columns, start_ns, end_ns, filters):
        from .embedded import qi

        known = self.store.columns(measurement)
        if not known:
            return []
        where = ["time_ns >= ?", "time_ns < ?"]
        params: list = [start_ns, end_ns]
        for col, v in filters.items():
            vals = _values(v)
            if vals is None:
                continue
            if col not in known:
                return []  # filtering on a column never written: nothing matches
            where.append(f"{qi(col)} IN ({', '.join('?' * len(vals))})")
            params.extend(vals)
        return self.store.select(measurement, ("time_ns", *columns), " AND ".join(where), params)

    def _field_names(self, measurement):
        return [k for k, role in self.store.columns(measurement).items() if role == "field"]

    def close(self) -> None:
        self.store.close()


def _ql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: A field every point of the measurement carries (see InfluxQuery._select).
ANCHOR_FIELD = {m.name: m.anchor for m in MEASUREMENTS.values() if m.anchor}


class InfluxQuery(Query):
    """Answers with InfluxQL over `/query` (1.x; 2.x via its v1 API; 3.x)."""

    def __init__(self, url: str, database: str, *, retention_policy: str | None = None,
                 headers: dict[str, str] | None = None, verify_tls: bool = True,
                 ca_file: str | None = None, timeout_s: float = 30.0):
        import urllib3

        from .influx import pool

        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self._headers = dict(headers or {})
        self._timeout = urllib3.Timeout(connect=5.0, read=timeout_s)
        self._http = pool(verify_tls, ca_file, maxsize=2)

    def influxql(self, q: str) -> list[dict]:
        """Run one InfluxQL statement; the series of its result (chunked, epoch ns)."""
        from .influx import safe_url

        fields = {"db": self.database, "q": q, "epoch": "ns", "chunked": "true",
                  "chunk_size": "10000"}
        if self.retention_policy:
            fields["rp"] = self.retention_policy
        r = self._http.request(
            "POST",
            self.url + "/query",
            fields=fields,
            encode_multipart=False,
            headers=self._headers,
            timeout=self._timeout,
            preload_content=True,
        )
        if r.status != 200:
            raise QueryError(f"{safe_url(self.url)}/query: HTTP {r.status}: {r.data[:300]!r}")
        series: list[dict] = []
        for line in r.data.splitlines():
            if not line.strip():
                continue
            doc = orjson.loads(line)
            if doc.get("error"):
                raise QueryError(f"{safe_url(self.url)}/query: {doc['error']}")
            for res in doc.get("results", []):
                if res.get("error"):
                    raise QueryError(f"{safe_url(self.url)}/query: {res['error']}")
                series.extend(res.get("series", []))
        return series

    def _field_names(self, measurement):
        series = self.influxql(f"SHOW FIELD KEYS FROM {_ql_ident(measurement)}")
        return sorted({v[0] for s in series for v in s.get("values", [])})

    def _select(self, measurement, columns, start_ns, end_ns, filters):
        where = [f"time >= {int(start_ns)}", f"time < {int(end_ns)}"]
        for col, v in filters.items():
            vals = _values(v)
            if vals is None:
                continue
            where.append("(" + " OR ".join(f"{_ql_ident(col)} = {_ql_str(x)}" for x in vals) + ")")
        # InfluxQL returns no row for a point none of whose *selected fields* is set (and nothing
        # at all for tags alone), so a field every point of the measurement has is always added.
        anchor = ANCHOR_FIELD.get(measurement)
        wanted = list(columns) + ([anchor] if anchor and anchor not in columns else [])
        cols = ", ".join(_ql_ident(c) for c in wanted)
        q = f"SELECT {cols} FROM {_ql_ident(measurement)} WHERE {' AND '.join(where)}"
        rows: list[tuple] = []
        for s in self.influxql(q):
            names = s["columns"]
            idx = [names.index(c) if c in names else None for c in columns]
            for v in s.get("values", []):
                rows.append((v[0], *(v[i] if i is not None else None for i in idx)))
        rows.sort(key=lambda r: r[0])
        return rows


class QueryError(RuntimeError):
    """The store could not answer (message without credentials or query strings)."""


def open_query(store_path: str | None = None, influx=None) -> Query:
    """A query backend: InfluxDB when `influx` (an InfluxV1Sink or InfluxV2Sink config) is given,
    otherwise the embedded store at `store_path` (default voicepulse.db)."""
    from .embedded import DEFAULT_PATH, EmbeddedStore
    from .influx import InfluxV1Sink, InfluxV2Sink, auth_headers

    if influx is None:
        return EmbeddedQuery(EmbeddedStore(store_path or DEFAULT_PATH))
    if not isinstance(influx, InfluxV2Sink | InfluxV1Sink):
        raise TypeError(f"not an influx sink config: {type(influx).__name__}")
    headers = auth_headers(influx)  # an unset variable stops the reader as it stops the writer
    if isinstance(influx, InfluxV2Sink):
        return InfluxQuery(influx.url, influx.bucket, headers=headers,
                           verify_tls=influx.verify_tls, ca_file=influx.ca_file)
    return InfluxQuery(influx.url, influx.database, retention_policy=influx.retention_policy,
                       headers=headers, verify_tls=influx.verify_tls, ca_file=influx.ca_file)
