"""The service's own points: `alert` (docs/design.md) and `schedule` (runs, lateness, skips).

`schedule` is this service's measurement (telemetry.schema.SCHEDULE): one point per probe run
(field `lateness_ms`), one per skipped run (field `skips`=1), and one per missed run, probe
aborted by shutdown, fire dropped by shutdown, probe killed with its process, or fire time that
fell while no process ran (field `count`, 1 except a long outage's last `down` point); tags
target, scenario, agent, event (run | skip | missed | aborted | shutdown | killed | down; the
last two written at restart from scheduler/ledger.py). Skips are stored, never just logged, so a dashboard can show that a target was too slow
to be probed on time.
"""

from __future__ import annotations

from scheduler.alerts import AlertEvent
from telemetry.points import Point, build_point
from telemetry.points import alert_point as _alert_point


def make_point(measurement: str, tags: dict[str, str], fields: dict, time_s: float) -> Point:
    """A point telemetry.schema declares, stamped at `time_s` (empty tags and None fields left
    out: InfluxDB stores neither)."""
    return build_point(measurement, tags, fields, int(time_s * 1e9))


def alert_point(event: AlertEvent) -> Point:
    """The `alert` point of a state change (telemetry.points.alert_point, the one builder)."""
    return _alert_point(rule=event.rule, target=event.target, severity=event.severity,
                        state=event.state, agent=event.agent, value=event.value,
                        threshold=event.threshold, message=event.message, window=event.window,
                        kind=event.kind, time_ns=int(event.at * 1e9))


def schedule_point(target: str, scenario: str, agent: str, event: str, at: float, *,
                   lateness_ms: float | None = None, count: int = 1) -> Point:
    fields: dict = {"runs": 1} if event == "run" else {"skips": 1} if event == "skip" else \
        {"count": count}
    if lateness_ms is not None:
        fields["lateness_ms"] = round(lateness_ms, 3)
    return make_point("schedule", {"target": target, "scenario": scenario, "agent": agent,
                                   "event": event}, fields, at)
