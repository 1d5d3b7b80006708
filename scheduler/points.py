"""The service's own points: `alert` (docs/design.md) and `schedule` (runs, lateness, skips).

`schedule` is this service's addition to the schema: one point per probe run (field
`lateness_ms`), one per skipped run (field `skips`=1), and one per missed run or probe aborted by
shutdown (field `count`=1); tags target, scenario, agent, event (run | skip | missed | aborted). Skips are stored, never just logged, so a dashboard can show that a target
was too slow to be probed on time.
"""

from __future__ import annotations

from scheduler.alerts import AlertEvent
from telemetry.points import Point


def make_point(measurement: str, tags: dict[str, str], fields: dict, time_s: float) -> Point:
    """A telemetry Point without empty tags or None fields (InfluxDB stores neither)."""
    tags = {k: v for k, v in tags.items() if v not in (None, "")}
    fields = {k: v for k, v in fields.items() if v is not None}
    return Point(measurement=measurement, tags=tags, fields=fields, time_ns=int(time_s * 1e9))


def alert_point(event: AlertEvent):
    return make_point(
        "alert",
        {"rule": event.rule, "target": event.target, "severity": event.severity,
         "state": event.state, "agent": event.agent},
        {"value": _float(event.value), "threshold": _float(event.threshold),
         "message": event.message[:500],
         "window": event.window, "kind": event.kind},
        event.at,
    )


def schedule_point(target: str, scenario: str, agent: str, event: str, at: float, *,
                   lateness_ms: float | None = None):
    fields: dict = {"runs": 1} if event == "run" else {"skips": 1} if event == "skip" else \
        {"count": 1}
    if lateness_ms is not None:
        fields["lateness_ms"] = round(lateness_ms, 3)
    return make_point("schedule", {"target": target, "scenario": scenario, "agent": agent,
                                   "event": event}, fields, at)


def _float(v) -> float | None:
    """Always a float: InfluxDB rejects a field whose type changes between points."""
    return None if v is None else float(v)
