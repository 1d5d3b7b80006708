"""The storage schema, declared once: every measurement's tags, fields, integer fields and anchor,
and the `latency` metric set.

Point building (`telemetry.points`), the embedded store's tables (`telemetry.embedded`), the query
layer (`telemetry.query`), both `latency` writers (probes and load runs) and the dashboards
(`dashboards/generate.py`) take their names from here, and tests/telemetry/test_schema.py fails
when a dashboard or alert-rule query names anything not declared here. The per-turn metric names
live one layer down, in `probes.results` (probes imports nothing of ours), and are taken from
there rather than restated.
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.results import TURN_COUNTS, TURN_METRICS

#: One `check_<name>` field per scenario check on a `turn` point: 1 passed, 0 failed.
CHECK_PREFIX = "check_"


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: tuple[str, ...]
    #: counts, always written as integers; every other number is a float, so a field never
    #: changes type between points (InfluxDB rejects a type conflict with a 400)
    ints: frozenset[str] = frozenset()
    #: free text, cut to `MAX_TEXT` characters (a field, not a log)
    texts: frozenset[str] = frozenset()
    #: a field every point carries: InfluxQL returns no row for a point none of whose selected
    #: fields is set, so a reader always selects it too ("" = none; nothing reads the measurement)
    anchor: str = ""
    #: an open family of integer fields (`check_<name>`)
    int_prefix: str = ""

    def declares(self, name: str) -> bool:
        return (name in self.tags or name in self.fields
                or bool(self.int_prefix) and name.startswith(self.int_prefix))

    def is_int(self, name: str) -> bool:
        return name in self.ints or bool(self.int_prefix) and name.startswith(self.int_prefix)


MAX_TEXT = 1024

#: Tags of `turn` and `session` points (bounded values only: ids and free text are fields);
#: `transport` is websocket or webrtc (probes/rtc.py).
RESULT_TAGS = ("target", "provider", "model", "kind", "scenario", "agent", "outcome", "transport")

TURN = Measurement(
    "turn", RESULT_TAGS,
    (*TURN_METRICS, "turn_index", "session_id", "run_id", "error", "response_status",
     "checks_failed", "notes", "caller"),
    ints=frozenset({*TURN_COUNTS, "turn_index", "checks_failed"}),
    texts=frozenset({"error", "notes", "caller"}), anchor="turn_index", int_prefix=CHECK_PREFIX)

#: `session` fields read from the `SessionResult` attribute of the same name when set.
SESSION_RESULT_FIELDS = ("connect_ms", "ready_ms", "send_lag_p99_ms", "expiry_s")
SESSION = Measurement(
    "session", RESULT_TAGS,
    ("ok", "turns", "turns_ok", "duration_s", "audio_s", "session_id", "unknown_events",
     "go_away", "ended_by", *SESSION_RESULT_FIELDS, "cost_usd", "run_id", "error", "caller"),
    ints=frozenset({"ok", "turns", "turns_ok", "unknown_events"}),
    texts=frozenset({"error", "caller"}), anchor="ok")

#: Percentile -> `latency` field.
PERCENTILE_FIELDS = {50.0: "p50", 90.0: "p90", 95.0: "p95", 99.0: "p99", 99.9: "p999"}
LATENCY = Measurement(
    "latency", ("target", "model", "kind", "scenario", "agent", "metric"),
    ("count", "mean", "min", "max", *PERCENTILE_FIELDS.values(), "clamped", "hdr"),
    ints=frozenset({"count", "clamped"}), anchor="count")

LOADGEN = Measurement(
    "loadgen", ("run_id", "scenario", "worker"),
    ("users", "active_sessions", "arrivals_due", "arrivals_started", "late_starts",
     "send_lag_p99_ms", "cpu_pct", "no_slot", "dropped", "cut", "sessions", "errors",
     "overloaded", "loop_lag_p99_ms"),
    ints=frozenset({"users", "active_sessions", "arrivals_due", "arrivals_started",
                    "late_starts", "no_slot", "dropped", "cut", "sessions", "errors",
                    "overloaded"}),
    anchor="users")

ALERT = Measurement(
    "alert", ("rule", "target", "severity", "state", "agent"),
    ("value", "threshold", "message", "window", "kind"),
    texts=frozenset({"message"}), anchor="message")

#: The probe service's scheduling events: each point carries one of runs, skips or count (= 1).
SCHEDULE = Measurement(
    "schedule", ("target", "scenario", "agent", "event"),
    ("runs", "skips", "count", "lateness_ms"), ints=frozenset({"runs", "skips", "count"}))

MEASUREMENTS = {m.name: m for m in (TURN, SESSION, LATENCY, LOADGEN, ALERT, SCHEDULE)}


@dataclass(frozen=True, slots=True)
class LatencyMetric:
    """One quantity with an HDR histogram: the `metric` tag of `latency` points, one name for
    probes and load runs alike."""

    name: str
    group: str  # session | turn | generator: where the load summary lists it
    of: str = ""  # the result it is read from: session | turn; "" = the load worker feeds it
    attr: str = ""  # that result's attribute, when not `name`
    #: the probe aggregator records it too (a probe has no load generator, no session_ms, and
    #: stall_ms is 0 on most turns, which HDR's 1 µs floor would count as clamped)
    probe: bool = True

    @property
    def source(self) -> str:
        return self.attr or self.name


def _turn(*names: str) -> tuple[LatencyMetric, ...]:
    return tuple(LatencyMetric(n, "turn", "turn") for n in names)


LATENCY_METRICS = (
    LatencyMetric("connect_ms", "session", "session"),
    LatencyMetric("ready_ms", "session", "session"),
    LatencyMetric("session_ms", "session", probe=False),  # duration_s, in ms
    *_turn("ttfa_ms", "ttfa_audible_ms", "ttft_ms", "vad_ms", "turn_ms", "ttfa_sent_ms",
           "gap_p95_ms"),
    LatencyMetric("stall_ms", "turn", "turn", probe=False),
    *_turn("barge_in_ms", "tool_ms", "tool_result_ms"),
    LatencyMetric("start_lag_ms", "generator", probe=False),
    # a turn's chunk send lag (its p99): named send_lag_p99_ms by probes until issue 14
    LatencyMetric("send_lag_ms", "generator", "turn", "send_lag_p99_ms"),
    LatencyMetric("loop_lag_ms", "generator", probe=False),
    LatencyMetric("gc_pause_ms", "generator", probe=False),
)

#: Older `metric` tag values that readers accept as the current name.
LATENCY_ALIASES = {"send_lag_ms": ("send_lag_p99_ms",)}


def latency_metric_names(name: str) -> tuple[str, ...]:
    """`name` and the older names stored data may still carry for the same quantity."""
    for new, old in LATENCY_ALIASES.items():
        if name == new or name in old:
            return (new, *old)
    return (name,)
