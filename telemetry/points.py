"""Points in docs/design.md's storage schema and their InfluxDB line-protocol form.

A `Point` is what every sink stores: the embedded SQLite store keeps the same measurement, tag and
field names as InfluxDB, so one query layer answers from either. Ids and free text are always
fields, never tags (tags are indexed series keys; an id per tag value explodes cardinality).
"""

from __future__ import annotations

import math
import numbers
import time
import zlib
from dataclasses import dataclass, field

from probes.results import SessionResult, TurnResult

from .schema import CHECK_PREFIX, MAX_TEXT, MEASUREMENTS, RESULT_TAGS, SESSION_RESULT_FIELDS

#: Counts of any measurement: always written as integers (see telemetry.schema).
INT_FIELDS = frozenset().union(*(m.ints for m in MEASUREMENTS.values()))

FieldValue = float | int | str | bool


@dataclass(slots=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int = 0


# -- line protocol -----------------------------------------------------------------------------


def _esc_measurement(s: str) -> str:
    s = s.replace("\n", " ").replace("\r", " ")
    return s.replace(",", "\\,").replace(" ", "\\ ")


def _esc_key(s: str) -> str:
    """Tag keys, tag values and field keys: comma, equals and space are escaped; a backslash stays
    literal (InfluxDB 1.x unescapes only those three). A newline cannot be represented in these
    positions, so it becomes a space."""
    s = s.replace("\n", " ").replace("\r", " ")
    return s.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def plain_value(v):
    """A field value as a plain Python bool/int/float/str: numpy scalars and other number types
    become the Python type of the same kind (np.float64's repr is not line protocol, and an int64
    written as a string would be a field type conflict)."""
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", "") == "b":
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return str(v)


def _field_value(v: FieldValue) -> str | None:
    v = plain_value(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None  # not representable; the field is left out
        return repr(v)
    s = v.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


#: Timestamp divisor per line-protocol precision (the `precision=` of /write).
PRECISION_NS = {"ns": 1, "n": 1, "u": 1_000, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def to_line(p: Point, precision: str = "ns") -> str:
    """One line of InfluxDB line protocol (no trailing newline). Empty tag values are omitted
    (InfluxDB rejects them); NaN/inf fields are omitted. Raises ValueError with no fields left.
    `precision` other than ns truncates the timestamp (and can merge distinct points: keep ns)."""
    parts = [_esc_measurement(p.measurement)]
    for k in sorted(p.tags):
        v = p.tags[k]
        if v is None or v == "":
            continue
        parts.append(f",{_esc_key(k)}={_esc_key(str(v))}")
    fields = []
    for k, v in p.fields.items():
        if v is None:
            continue
        fv = _field_value(v)
        if fv is not None:
            fields.append(f"{_esc_key(k)}={fv}")
    if not fields:
        raise ValueError(f"point {p.measurement!r} has no storable field")
    return f"{''.join(parts)} {','.join(fields)} {int(p.time_ns) // PRECISION_NS[precision]}"


def to_lines(points: list[Point], precision: str = "ns") -> str:
    return "\n".join(to_line(p, precision) for p in points)


# -- building points ---------------------------------------------------------------------------


def _text(s: str) -> str:
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 3] + "..."


def build_point(measurement: str, tags: dict, fields: dict, time_ns: int) -> Point:
    """A point of a measurement telemetry.schema declares: empty tags and None fields left out
    (InfluxDB stores neither), counts as int and every other number as float, free text cut to
    MAX_TEXT. Raises ValueError for a tag or field the schema does not declare."""
    m = MEASUREMENTS[measurement]
    t = {k: str(v) for k, v in tags.items() if v is not None and v != ""}
    f: dict[str, FieldValue] = {}
    for k, v in fields.items():
        v = plain_value(v)
        if v is None:
            continue
        if isinstance(v, str):
            f[k] = _text(v) if k in m.texts else v
        elif isinstance(v, bool):
            f[k] = v
        else:
            f[k] = int(v) if m.is_int(k) else float(v)
    bad = [k for k in t if k not in m.tags] + [k for k in f if not m.declares(k) or k in m.tags]
    if bad:
        raise ValueError(f"{measurement!r} declares no {', '.join(sorted(bad))} (telemetry.schema)")
    return Point(measurement=measurement, tags=t, fields=f, time_ns=int(time_ns))


# -- results -> points -------------------------------------------------------------------------


def _discriminator(session_key: str, index: int) -> int:
    """0..999 ns, stable per (session, turn): two turns of the same series that land in the same
    microsecond still get distinct timestamps, so InfluxDB never overwrites one with the other."""
    return zlib.crc32(f"{session_key}/{index}".encode()) % 1000


def _tags(r: SessionResult, outcome: str) -> dict[str, str]:
    return {t: outcome if t == "outcome" else getattr(r, t) for t in RESULT_TAGS}


def _turn_time_ns(r: SessionResult, t: TurnResult, anchor_us: int, key: str) -> int:
    """The turn's E (intended end of speech) on the wall clock: anchor + monotonic offset."""
    offset_us = None
    if r.connect_start_ns is not None:
        mark = t.speech_end_ns or t.speech_sent_ns or t.first_audio_ns or t.response_done_ns
        if mark is not None:
            offset_us = max(0, (mark - r.connect_start_ns) // 1000)
    if offset_us is None:  # no marks: keep order and distinctness within the session
        offset_us = t.index + 1
    return (anchor_us + offset_us) * 1000 + _discriminator(key, t.index)


def session_points(r: SessionResult) -> list[Point]:
    """docs/design.md's `turn` points (one per turn) and one `session` point for a result."""
    key = r.session_id or f"{r.target}/{r.started_at!r}/{r.connect_start_ns}"
    started = r.started_at or (time.time() - r.duration_s)  # an unset anchor: about now
    anchor_us = int(round(started * 1_000_000))
    run_id = r.run_id or None
    points: list[Point] = []
    for t in r.turns:
        fields: dict[str, FieldValue | None] = {
            **t.metrics(), "turn_index": t.index, "session_id": r.session_id, "run_id": run_id,
            "error": t.error or None, "response_status": t.response_status or None}
        for name, passed in t.checks.items():  # scenario checks: check_<name> = 1 passed / 0
            fields[f"{CHECK_PREFIX}{name}"] = int(passed)
        if t.checks:
            fields["checks_failed"] = sum(not v for v in t.checks.values())
        fields["notes"] = t.notes or None
        fields["caller"] = r.caller or None  # a load run's drawn caller (probes/callers.py)
        points.append(build_point("turn", _tags(r, t.outcome), fields,
                                  _turn_time_ns(r, t, anchor_us, key)))
    sf: dict[str, FieldValue | None] = {
        "ok": int(r.ok),
        "turns": len(r.turns),
        "turns_ok": sum(t.outcome == "ok" for t in r.turns),
        "duration_s": float(r.duration_s),
        "audio_s": float(sum(t.audio_s or 0.0 for t in r.turns)),
        "session_id": r.session_id,
        "unknown_events": int(r.unknown_events),
        "go_away": bool(r.go_away),
        # a long call reached the provider's session limit, as its scenario expected
        "ended_by": r.ended_by or None,
        **{name: getattr(r, name) for name in SESSION_RESULT_FIELDS},
        "cost_usd": r.cost_usd,
        "run_id": run_id,
        "error": r.error or None,
        "caller": r.caller or None,
    }
    points.append(build_point("session", _tags(r, r.outcome), sf,
                              anchor_us * 1000 + _discriminator(key, -1)))
    return points


@dataclass(slots=True)
class LoadgenSample:
    """One interval of the load generator's own health (docs/design.md `loadgen`)."""

    run_id: str
    scenario: str
    worker: str
    users: int = 0
    active_sessions: int = 0
    arrivals_due: int = 0
    arrivals_started: int = 0
    late_starts: int = 0
    send_lag_p99_ms: float | None = None
    cpu_pct: float | None = None
    extra: dict[str, FieldValue] = field(default_factory=dict)

    def point(self, time_ns: int) -> Point:
        f = {k: getattr(self, k) for k in ("users", "active_sessions", "arrivals_due",
                                           "arrivals_started", "late_starts",
                                           "send_lag_p99_ms", "cpu_pct")}
        tags = {"run_id": self.run_id, "scenario": self.scenario, "worker": self.worker}
        return build_point("loadgen", tags, {**f, **self.extra}, time_ns)


def alert_point(*, rule: str, target: str, severity: str, state: str, value: float | None,
                threshold: float | None, message: str, time_ns: int, agent: str = "",
                window: str | None = None, kind: str | None = None) -> Point:
    """An `alert` state change (docs/design.md): rule, target, severity, state, agent are tags."""
    tags = {"rule": rule, "target": target, "severity": severity, "state": state, "agent": agent}
    fields = {"message": message, "value": value, "threshold": threshold, "window": window,
              "kind": kind}
    return build_point("alert", tags, fields, time_ns)
