"""Writes the Grafana dashboard JSON files in this folder (availability, load run, comparison).

The dashboards are generated, not hand-edited, so layout (gridPos), datasource references, uids
and the shared template variables stay consistent; tests/dashboards checks that the committed JSON
equals this script's output. Run `python dashboards/generate.py` after editing it.

Every query is raw InfluxQL over docs/design.md's schema (turn, session, latency, loadgen, alert), so the
same dashboards work on InfluxDB 1.x, 2.x (v1 API + DBRP) and 3.x. Percentiles over time are the
stored per-interval percentiles of `latency`, plotted as they are (max() per bucket when a bucket
holds several intervals); percentiles over a whole range are computed exactly from the raw `turn`
points with percentile(). Percentiles are never averaged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scheduler.config import DEFAULT_TIERS
from telemetry.schema import LATENCY_METRICS, MEASUREMENTS

HERE = Path(__file__).resolve().parent
DS = {"type": "influxdb", "uid": "voicepulse-influxdb"}
SCHEMA_VERSION = 39
TAGS = ["voicepulse"]

#: Every name telemetry.schema declares (tags and fields of any measurement).
DECLARED = {n for m in MEASUREMENTS.values() for n in (*m.tags, *m.fields)}
LATENCY_METRIC_NAMES = {m.name for m in LATENCY_METRICS}


def name(n: str) -> str:
    """A tag or field name, refused unless telemetry.schema declares it."""
    if n not in DECLARED:
        raise KeyError(f"telemetry.schema declares no {n!r}")
    return n


def tag_eq(key: str, value: str) -> str:
    return f"\"{name(key)}\" = '{value}'"


def tag_re(key: str, var: str) -> str:
    return f'"{name(key)}" =~ /^${var}$/'


def metric_is(metric: str) -> str:
    """The filter on a `latency` metric telemetry.schema.LATENCY_METRICS declares."""
    if metric not in LATENCY_METRIC_NAMES:
        raise KeyError(f"telemetry.schema declares no latency metric {metric!r}")
    return tag_eq("metric", metric)


# Filters shared by the queries ("All" selects `.*`, which also matches an absent tag).
F_TARGET = tag_re("target", "target")
F_MODEL = tag_re("model", "model")
F_AGENT = tag_re("agent", "agent")
F_KIND = tag_re("kind", "kind")
F_SCEN = tag_re("scenario", "scenario")
F_RUN = tag_eq("run_id", "$run_id")
F_FAILED = f"\"{name('outcome')}\" != 'ok'"
W_ALL = tag_eq("worker", "all")  # the master's sum over workers (loadgen)
W_EACH = f"\"{name('worker')}\" != 'all'"


def where(*conds: str) -> str:
    return " AND ".join(("$timeFilter", *conds))


# -- building blocks -----------------------------------------------------------------------------


class Layout:
    """Places panels left to right in rows of 24 grid units, so rectangles never overlap."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.newline()
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i


def target(ref: str, query: str, fmt: str = "time_series", alias: str | None = None) -> dict:
    t = {"refId": ref, "datasource": DS, "rawQuery": True, "query": query, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def panel(L: Layout, kind: str, title: str, desc: str, targets: list[dict], w: int, h: int,
          unit: str | None = None, interval: str | None = "10s", **extra) -> dict:
    p = {
        "id": L.id(),
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": L.place(w, h),
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if interval:
        p["interval"] = interval  # the `latency` interval: never group finer than stored data
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    for k, v in extra.items():
        if k in ("defaults",):
            p["fieldConfig"]["defaults"].update(v)
        elif k == "overrides":
            p["fieldConfig"]["overrides"] = v
        else:
            p[k] = v
    return p


def row(L: Layout, title: str) -> dict:
    L.newline()
    p = {"id": L.id(), "type": "row", "title": title, "collapsed": False, "panels": [],
         "gridPos": L.place(24, 1)}
    L.newline()
    return p


def collapsed_row(L: Layout, title: str, build) -> dict:
    """A row shown folded: its panels live inside it (Grafana's layout for collapsed rows), are
    placed below it, and load only when a user opens it. `build()` returns those panels."""
    r = row(L, title)
    r["collapsed"] = True
    r["panels"] = build()
    return r


def query_var(name: str, label: str, query: str, multi: bool = True, include_all: bool = True,
              refresh: int = 2) -> dict:
    v = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": refresh,  # 2 = on time range change
        "multi": multi,
        "includeAll": include_all,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {},
        "options": [],
        "hide": 0,
    }
    if include_all:
        v["allValue"] = ".*"
    return v


def custom_var(name: str, label: str, values: list[str], default: str, include_all=False) -> dict:
    v = {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "multi": False,
        "includeAll": include_all,
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": x == default, "text": x, "value": x} for x in values],
        "hide": 0,
    }
    if include_all:
        v["allValue"] = ".*"
    return v


def alert_annotation(filter_target: bool = True) -> dict:
    cond = [F_TARGET] if filter_target else []
    q = ('SELECT "message", "value", "threshold", "rule", "state", "severity" FROM "alert" WHERE '
         + where(*cond))
    return {
        "name": "VoicePulse alerts",
        "datasource": DS,
        "enable": True,
        "iconColor": "red",
        "query": q,
        "target": {"refId": "Anno", "query": q, "rawQuery": True, "resultFormat": "table"},
        "textColumn": "message",
        "tagsColumn": "rule,state,severity",
    }


def dashboard(uid: str, title: str, desc: str, panels: list[dict], variables: list[dict],
              annotations: list[dict], time_from: str = "now-6h") -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {"title": "VoicePulse", "type": "dashboards", "tags": TAGS, "asDropdown": True,
             "includeVars": False, "keepTime": True}
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *annotations,
            ]
        },
        "templating": {"list": variables},
        "panels": panels,
    }


def ts_defaults(stack: bool = False, bars: bool = False) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
              "showPoints": "auto", "spanNulls": False, "pointSize": 4}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {"custom": custom}


STAT_OPTS = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "colorMode": "value",
    "graphMode": "none",
    "textMode": "value_and_name",
    "orientation": "auto",
    "justifyMode": "auto",
}


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"thresholds": {"mode": "absolute",
                           "steps": [{"color": c, "value": v} for v, c in steps]}}


# -- 1. availability ------------------------------------------------------------------------------


def availability() -> dict:
    L = Layout()
    flt_s = (F_KIND, F_TARGET, F_MODEL, F_AGENT)
    panels = [row(L, "Is it up?")]
    panels.append(panel(
        L, "stat", "Success ratio",
        "Share of probe sessions that succeeded over the selected range, per target "
        "(mean of the session `ok` field: successes / runs).",
        [target("A", f'SELECT 100 * mean("ok") FROM "session" WHERE {where(*flt_s)} GROUP BY "target"',
                alias="$tag_target")],
        8, 5, unit="percent", interval=None, options=STAT_OPTS,
        defaults={"decimals": 2, "min": 0, "max": 100,
                  **thresholds((None, "red"), (99, "orange"), (99.5, "green"))}))
    panels.append(panel(
        L, "stat", "SLO error budget left",
        "Error budget left for an availability objective of $slo % over the selected range: "
        "1 - (1 - success ratio) / (1 - objective). Set the range to the SLO period (e.g. 30d) to "
        "read it against the period. Negative means the budget is spent.",
        [target("A", f'SELECT 100 * (1 - (1 - mean("ok")) / (1 - $slo / 100)) FROM "session" '
                     f'WHERE {where(*flt_s)} GROUP BY "target"', alias="$tag_target")],
        8, 5, unit="percent", interval=None, options=STAT_OPTS,
        defaults={"decimals": 1, **thresholds((None, "red"), (0, "orange"), (25, "green"))}))
    panels.append(panel(
        L, "stat", "Last probe",
        "When each target was last probed (the time of its newest session point). A probe "
        "service that stopped shows here first.",
        [target("A", f'SELECT last("ok") FROM "session" WHERE {where(*flt_s)} GROUP BY "target"',
                alias="$tag_target")],
        8, 5, unit="dateTimeFromNow", interval=None,
        options={**STAT_OPTS, "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^Time$/",
                                                "values": False}, "colorMode": "none"}))
    panels.append(panel(
        L, "state-timeline", "Up / down per target",
        "Worst probe outcome per target in each time bucket: 1 = every session succeeded, "
        "0 = at least one failed (min of `ok`).",
        [target("A", f'SELECT min("ok") FROM "session" WHERE {where(*flt_s)} '
                     'GROUP BY time($__interval), "target" fill(none)', alias="$tag_target")],
        12, 7, options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
        defaults={"mappings": [{"type": "value", "options": {
            "0": {"text": "failed", "color": "red", "index": 0},
            "1": {"text": "ok", "color": "green", "index": 1}}}],
            **thresholds((None, "red"), (1, "green"))}))
    panels.append(panel(
        L, "timeseries", "Probe outcomes by class",
        "Sessions per time bucket, stacked by outcome: `ok` and each stable error class "
        "(connect_refused, timeout:<phase>, http_<status>, ws_closed_<code>, ...).",
        [target("A", f'SELECT count("ok") FROM "session" WHERE {where(*flt_s)} '
                     'GROUP BY time($__interval), "outcome" fill(none)', alias="$tag_outcome")],
        12, 7, unit="short", defaults=ts_defaults(stack=True, bars=True),
        overrides=[{"matcher": {"id": "byName", "options": "ok"},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "green"}}]}]))
    panels.append(row(L, "How fast?"))
    for metric, label in (("ttfa_ms", "TTFA (voice to voice)"), ("turn_ms", "Turn (response complete)"),
                          ("ttfa_audible_ms", "TTFA audible (first sound past the gate)")):
        panels.append(panel(
            L, "timeseries", f"{label} p50 / p95",
            f"Stored per-interval (10 s) percentiles of `{metric}` from the `latency` measurement, "
            "plotted as they are; when a bucket holds several intervals the max() of them is shown "
            "(an upper bound), never an average of percentiles.",
            [target("A", f'SELECT max("p50") AS "p50", max("p95") AS "p95" FROM "latency" WHERE '
                         f"{where(F_KIND, F_TARGET, F_MODEL, F_AGENT, metric_is(metric))} "
                         'GROUP BY time($__interval), "target" fill(none)', alias="$tag_target $col")],
            12, 8, unit="ms", defaults=ts_defaults()))
    panels.append(row(L, "Status page"))
    panels.append(panel(
        L, "table", "Status by target",
        "One row per target, like a public status page: uptime % (successful sessions / runs), "
        "TTFA p50/p95 computed exactly from the raw turns of the range (percentile() over "
        "`turn`, not from averaged percentiles), errors out of runs and the last run.",
        [
            target("A", 'SELECT count("ok") AS "runs", count("ok") - sum("ok") AS "errors", '
                        f'100 * mean("ok") AS "uptime" FROM "session" WHERE {where(*flt_s)} '
                        'GROUP BY "target", "model"', fmt="table"),
            target("B", 'SELECT percentile("ttfa_ms", 50) AS "ttfa_p50", percentile("ttfa_ms", 95) '
                        f'AS "ttfa_p95" FROM "turn" WHERE {where(*flt_s)} GROUP BY "target"',
                   fmt="table"),
            target("C", f'SELECT last("ok") AS "last_ok" FROM "session" WHERE {where(*flt_s)} '
                        'GROUP BY "target"', fmt="table"),
        ],
        24, 8, interval=None,
        transformations=[
            {"id": "joinByField", "options": {"byField": "target", "mode": "outer"}},
            {"id": "organize", "options": {
                "excludeByName": {"Time 1": True, "Time 2": True, "last_ok": True},
                "renameByName": {"Time 3": "last run", "uptime": "uptime %", "ttfa_p50": "TTFA p50",
                                 "ttfa_p95": "TTFA p95"},
                "indexByName": {"target": 0, "model": 1, "uptime": 2, "ttfa_p50": 3, "ttfa_p95": 4,
                                "errors": 5, "runs": 6, "Time 3": 7}}},
        ],
        overrides=[
            {"matcher": {"id": "byRegexp", "options": "TTFA.*"},
             "properties": [{"id": "unit", "value": "ms"}, {"id": "decimals", "value": 0}]},
            {"matcher": {"id": "byName", "options": "uptime %"},
             "properties": [{"id": "unit", "value": "percent"}, {"id": "decimals", "value": 2}]},
        ],
        options={"showHeader": True, "sortBy": [{"displayName": "target", "desc": False}]}))
    panels.append(row(L, "Probe service"))
    sched = where(F_TARGET, F_AGENT)
    panels.append(panel(
        L, "timeseries", "Probe schedule: runs, skips, lateness",
        "From the probe service's `schedule` points: probe runs and skipped runs per target (a "
        "skip means the previous probe of that target was still running: the target is slower "
        "than its interval), and the p99 lateness of runs against their schedule (exact, over "
        "the raw run points of each bucket).",
        [target("A", f'SELECT count("runs") AS "runs", sum("skips") AS "skips" FROM "schedule" '
                     f'WHERE {sched} GROUP BY time($__interval), "target" fill(none)',
                alias="$tag_target $col"),
         target("B", f'SELECT percentile("lateness_ms", 99) AS "lateness p99" FROM "schedule" '
                     f'WHERE {sched} GROUP BY time($__interval), "target" fill(none)',
                alias="$tag_target $col")],
        12, 8, unit="short", defaults=ts_defaults(bars=True),
        overrides=[{"matcher": {"id": "byRegexp", "options": ".*lateness p99$"},
                    "properties": [{"id": "unit", "value": "ms"},
                                   {"id": "custom.drawStyle", "value": "line"},
                                   {"id": "custom.axisPlacement", "value": "right"}]}]))
    panels.append(panel(
        L, "table", "Alert state changes",
        "Every alert state change the probe service wrote (pending, firing, resolved), newest "
        "first: the same events as the red annotations.",
        [target("A", 'SELECT "state", "severity", "rule", "value", "threshold", "message" FROM '
                     f'"alert" WHERE {where(F_TARGET)} GROUP BY "target" ORDER BY time DESC',
                fmt="table")],
        12, 8, interval=None, options={"showHeader": True}))
    panels.append(collapsed_row(L, "Voice scenarios", lambda: scenario_panels(L)))
    variables = [
        custom_var("kind", "kind", ["probe", "load"], "probe", include_all=True),
        query_var("provider", "provider",
                  'SHOW TAG VALUES FROM "session" WITH KEY = "provider"'),
        query_var("target", "target", 'SHOW TAG VALUES FROM "session" WITH KEY = "target" '
                                      'WHERE "provider" =~ /^$provider$/'),
        query_var("model", "model",
                  'SHOW TAG VALUES FROM "session" WITH KEY = "model" WHERE "target" =~ /^$target$/'),
        query_var("agent", "agent (probe location)", 'SHOW TAG VALUES FROM "session" WITH KEY = "agent"'),
        custom_var("slo", "availability objective %", ["99", "99.5", "99.9", "99.95"], "99.5"),
    ]
    return dashboard(
        "voicepulse-availability", "VoicePulse / Availability",
        "Is each voice target up, and how fast is it right now? From the scheduled probes "
        "(voicepulse serve).", panels, variables, [alert_annotation()], time_from="now-6h")


#: Scenario latencies with a `latency` histogram (telemetry.schema.LATENCY_METRICS).
SCENARIO_LATENCY = (("barge_in_ms", "barge-in"), ("tool_ms", "tool call"),
                    ("tool_result_ms", "tool result"))


def scenario_panels(L: Layout) -> list[dict]:
    """Scripted scenarios (barge-in, tool calls, transcription, checks); empty for plain probes."""
    flt = (F_KIND, F_TARGET, F_MODEL, F_AGENT)
    return [
        panel(
            L, "timeseries", "Barge-in and tool-call p95",
            "Stored per-interval (10 s) p95 from `latency`: barge-in (the user starts speaking "
            "over a reply -> the server stops it), tool call (end of speech -> function-call "
            "arguments complete) and tool result (result sent -> first audio after it). Like the "
            "TTFA panels, a bucket holding several intervals shows their max() (an upper bound), "
            "never an average of percentiles.",
            [target(ref, f'SELECT max("p95") AS "{label} p95" FROM "latency" WHERE '
                         f"{where(*flt, metric_is(metric))} "
                         'GROUP BY time($__interval), "target" fill(none)',
                    alias="$tag_target $col")
             for ref, (metric, label) in zip("ABC", SCENARIO_LATENCY, strict=True)],
            12, 8, unit="ms", defaults=ts_defaults()),
        panel(
            L, "timeseries", "Word error rate (mean)",
            "Mean word error rate of the server's input transcription over the turns of each "
            "bucket (`turn.wer`: 0 = every word heard right; scenarios that say known text).",
            [target("A", f'SELECT mean("wer") AS "wer" FROM "turn" WHERE {where(*flt)} '
                         'GROUP BY time($__interval), "target" fill(none)', alias="$tag_target")],
            12, 8, unit="percentunit", defaults={**ts_defaults(), "min": 0}),
        panel(
            L, "timeseries", "Failed scenario checks",
            "Scenario checks that failed per bucket (sum of `turn.checks_failed`): a tool not "
            "called or called with wrong arguments, a reply that did not stop when talked over, "
            "speech not transcribed. The turn's `notes` field says why.",
            [target("A", f'SELECT sum("checks_failed") AS "failed checks" FROM "turn" WHERE '
                         f'{where(*flt)} GROUP BY time($__interval), "target" fill(none)',
                    alias="$tag_target")],
            12, 8, unit="short", defaults={**ts_defaults(bars=True), "min": 0,
                                           **thresholds((None, "green"), (1, "red"))}),
    ]


# -- 2. load test run ---------------------------------------------------------------------------


def load_run() -> dict:
    L = Layout()
    panels = [row(L, "Arrivals and sessions")]
    lg = where(F_RUN)
    panels.append(panel(
        L, "timeseries", "Active sessions and users",
        "Concurrent sessions and Locust users (session slots) per worker, and their sum (worker "
        "`all`), as reported by the master every interval (`loadgen`).",
        [target("A", f'SELECT max("active_sessions") AS "active", max("users") AS "users" FROM '
                     f'"loadgen" WHERE {lg} GROUP BY time($__interval), "worker" fill(none)',
                alias="$tag_worker $col")],
        12, 8, unit="short", defaults=ts_defaults()))
    panels.append(panel(
        L, "timeseries", "Arrivals due vs started, late starts",
        "Open model: sessions due by the arrival schedule, sessions actually started, and starts "
        "that came late (or found no free slot). Due above started means the generator fell "
        "behind: never silently dropped.",
        [target("A", f'SELECT sum("arrivals_due") AS "due", sum("arrivals_started") AS "started", '
                     f'sum("late_starts") AS "late", sum("no_slot") AS "no slot" FROM "loadgen" '
                     f'WHERE {where(F_RUN, W_ALL)} GROUP BY time($__interval) fill(none)',
                alias="$col")],
        12, 8, unit="short", defaults=ts_defaults(bars=True),
        overrides=[{"matcher": {"id": "byName", "options": "late"},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}]))
    panels.append(row(L, "Latency"))
    lat = (F_TARGET, F_SCEN, "\"kind\" = 'load'")
    for metric, label, w in (("ttfa_ms", "TTFA", 8), ("turn_ms", "Turn", 8), ("connect_ms", "Connect", 8)):
        panels.append(panel(
            L, "timeseries", f"{label} percentiles",
            f"p50/p95/p99 of `{metric}` per 10 s interval from `latency`, merged exactly from every "
            "worker's HDR histogram by the master. Plotted as stored; a bucket spanning several "
            "intervals shows their max(), never an average. `latency` has no run_id tag: set the "
            "time range to the run (the run table below shows it).",
            [target("A", f'SELECT max("p50") AS "p50", max("p95") AS "p95", max("p99") AS "p99" '
                         f'FROM "latency" WHERE {where(*lat, metric_is(metric))} '
                         'GROUP BY time($__interval), "target" fill(none)', alias="$tag_target $col")],
            w, 8, unit="ms", defaults=ts_defaults()))
    panels.append(panel(
        L, "heatmap", "TTFA heatmap (every turn)",
        "Distribution of `ttfa_ms` of every turn of the run (raw `turn` points bucketed by "
        "Grafana), so bimodal latency and outliers show up that percentiles hide.",
        [target("A", f'SELECT "ttfa_ms" FROM "turn" WHERE {where(F_RUN, F_TARGET)}', alias="ttfa_ms")],
        16, 9, interval="10s",
        options={"calculate": True, "calculation": {"yBuckets": {"mode": "count", "value": "20"}},
                 "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential",
                           "exponent": 0.5, "steps": 64},
                 "yAxis": {"unit": "ms", "axisPlacement": "left"}, "cellGap": 1,
                 "tooltip": {"mode": "single", "yHistogram": True}, "legend": {"show": True}}))
    panels.append(panel(
        L, "stat", "Run totals",
        "Sessions, error ratio and exact TTFA p95 for the whole run (percentile() over raw "
        "`turn` points).",
        [target("A", 'SELECT count("ok") AS "sessions", 100 * (1 - mean("ok")) AS "error %" '
                     f'FROM "session" WHERE {where(F_RUN, F_TARGET)}', alias="$col"),
         target("B", 'SELECT percentile("ttfa_ms", 95) AS "TTFA p95 ms" FROM "turn" WHERE '
                     f'{where(F_RUN, F_TARGET)}', alias="$col")],
        8, 9, interval=None, options={**STAT_OPTS, "orientation": "vertical"},
        defaults={"decimals": 1}))
    panels.append(row(L, "Errors"))
    panels.append(panel(
        L, "timeseries", "Errors per second by class",
        "Failed sessions per second, one series per stable error class (the `outcome` tag).",
        [target("A", f'SELECT count("ok") * 1000 / $__interval_ms FROM "session" WHERE '
                     f"{where(F_RUN, F_TARGET, F_FAILED)} "
                     'GROUP BY time($__interval), "outcome" fill(none)', alias="$tag_outcome")],
        12, 8, unit="reqps", defaults=ts_defaults(stack=True, bars=True)))
    panels.append(panel(
        L, "timeseries", "Error ratio",
        "Share of sessions that failed in each bucket (1 - mean of `ok`).",
        [target("A", f'SELECT 100 * (1 - mean("ok")) FROM "session" WHERE {where(F_RUN, F_TARGET)} '
                     'GROUP BY time($__interval) fill(none)', alias="error %")],
        12, 8, unit="percent", defaults=ts_defaults()))
    panels.append(row(L, "Generator health"))
    panels.append(panel(
        L, "timeseries", "Send lag p99 per worker",
        "How late each worker sent its audio chunks against the real-time schedule (p99 per "
        "interval). Above a few ms the generator itself distorts latency: add --processes or "
        "workers. Red shading marks intervals the generator flagged as overloaded.",
        [target("A", f'SELECT max("send_lag_p99_ms") FROM "loadgen" WHERE {where(F_RUN, W_EACH)} '
                     'GROUP BY time($__interval), "worker" fill(none)', alias="$tag_worker"),
         target("B", f'SELECT max("overloaded") AS "overloaded" FROM "loadgen" WHERE '
                     f'{where(F_RUN, W_ALL)} GROUP BY time($__interval) fill(none)',
                alias="overloaded")],
        12, 8, unit="ms", defaults={**ts_defaults(), **thresholds((None, "green"), (10, "red")),
                                    "custom": {**ts_defaults()["custom"],
                                               "thresholdsStyle": {"mode": "line+area"}}},
        overrides=[{"matcher": {"id": "byName", "options": "overloaded"},
                    "properties": [{"id": "custom.drawStyle", "value": "bars"},
                                   {"id": "custom.axisPlacement", "value": "right"},
                                   {"id": "unit", "value": "bool_yes_no"},
                                   {"id": "max", "value": 1},
                                   {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}]))
    panels.append(panel(
        L, "timeseries", "CPU per worker",
        "Load generator CPU % per worker process. Keep it under ~50 %: past that the event loop "
        "queues and inflates measured latency.",
        [target("A", f'SELECT max("cpu_pct") FROM "loadgen" WHERE {where(F_RUN, W_EACH)} '
                     'GROUP BY time($__interval), "worker" fill(none)', alias="$tag_worker")],
        12, 8, unit="percent", defaults={**ts_defaults(), **thresholds((None, "green"), (50, "orange"),
                                                                       (90, "red"))}))
    panels.append(panel(
        L, "table", "Runs",
        "Load runs with reports in the selected range: peak users, sessions started and late "
        "starts per run_id.",
        [target("A", f'SELECT max("users") AS "max users", sum("arrivals_started") AS "sessions started", '
                     f'sum("late_starts") AS "late starts" FROM "loadgen" WHERE {where(W_ALL)} '
                     'GROUP BY "run_id"', fmt="table")],
        24, 6, interval=None))
    variables = [
        query_var("run_id", "run", 'SHOW TAG VALUES FROM "loadgen" WITH KEY = "run_id"',
                  multi=False, include_all=False),
        query_var("target", "target",
                  "SHOW TAG VALUES FROM \"latency\" WITH KEY = \"target\" WHERE \"kind\" = 'load'"),
        query_var("scenario", "scenario",
                  "SHOW TAG VALUES FROM \"loadgen\" WITH KEY = \"scenario\""),
    ]
    annotations = [alert_annotation(), {
        "name": "Generator overloaded",
        "datasource": DS,
        "enable": True,
        "iconColor": "orange",
        "query": f'SELECT "overloaded", "worker" FROM "loadgen" WHERE {where(F_RUN)} AND "overloaded" > 0',
        "target": {"refId": "Anno", "rawQuery": True, "resultFormat": "table",
                   "query": f'SELECT "overloaded", "worker" FROM "loadgen" WHERE {where(F_RUN)} '
                            'AND "overloaded" > 0'},
        "textColumn": "worker",
        "tagsColumn": "worker",
    }]
    return dashboard(
        "voicepulse-load-run", "VoicePulse / Load test run",
        "A live view of one load test (voicepulse load): pick the run_id, set the range to the run.",
        panels, variables, annotations, time_from="now-30m")


# -- 3. model comparison --------------------------------------------------------------------------


def comparison() -> dict:
    L = Layout()
    flt = (F_KIND, F_TARGET, F_MODEL, F_AGENT)
    panels = [row(L, "Side by side over the selected range")]

    def bars(title: str, desc: str, q: str, unit: str, w: int = 8, fields: list[str] | None = None,
             ref_targets: list[dict] | None = None) -> dict:
        return panel(
            L, "barchart", title, desc, ref_targets or [target("A", q, fmt="table")], w, 8, unit=unit,
            interval=None,
            options={"xField": "target", "orientation": "horizontal", "showValue": "always",
                     "groupWidth": 0.7, "barWidth": 0.9, "legend": {"showLegend": True,
                                                                  "displayMode": "list",
                                                                  "placement": "bottom"},
                     "tooltip": {"mode": "multi"}},
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
            defaults={"decimals": 2})

    panels.append(bars(
        "TTFA p50 / p95", "Voice-to-voice latency per target, exact percentiles of every turn in "
        "the range (percentile() over raw `turn` points).",
        'SELECT percentile("ttfa_ms", 50) AS "p50", percentile("ttfa_ms", 95) AS "p95" FROM "turn" '
        f'WHERE {where(*flt)} GROUP BY "target"', "ms"))
    panels.append(bars(
        "Turn p95", "Time from end of speech to response complete, p95 of every turn in the range.",
        f'SELECT percentile("turn_ms", 95) AS "turn p95" FROM "turn" WHERE {where(*flt)} '
        'GROUP BY "target"', "ms"))
    panels.append(bars(
        "Real-time factor (median)", "Reply audio seconds / delivery time, median per turn. Below 1 "
        "a listener hears stalls.",
        f'SELECT median("rtf") AS "rtf" FROM "turn" WHERE {where(*flt)} GROUP BY "target"', "x"))
    panels.append(bars(
        "Stalls per turn", "Playback underruns of a simulated player (100 ms jitter buffer), mean "
        "count per turn, and stalled milliseconds per turn.",
        f'SELECT mean("stalls") AS "stalls/turn", mean("stall_ms") AS "stall ms/turn" FROM "turn" '
        f'WHERE {where(*flt)} GROUP BY "target"', "short"))
    panels.append(bars(
        "Error rate", "Share of sessions that failed, per target.",
        f'SELECT 100 * (1 - mean("ok")) AS "error %" FROM "session" WHERE {where(*flt)} '
        'GROUP BY "target"', "percent"))
    panels.append(bars(
        "Cost per audio minute", "USD per minute of reply audio: sum of priced session cost / sum "
        "of reply audio seconds x 60. Empty for a model with no price.",
        f'SELECT 60 * sum("cost_usd") / sum("audio_s") AS "USD/min" FROM "session" WHERE '
        f'{where(*flt)} GROUP BY "target"', "currencyUSD"))
    panels.append(row(L, "Over time"))
    for metric, label in (("ttfa_ms", "TTFA p95 over time"), ("turn_ms", "Turn p95 over time")):
        panels.append(panel(
            L, "timeseries", label,
            f"Stored per-interval p95 of `{metric}` from `latency`, one line per target (max() per "
            "bucket when zoomed out, never an average).",
            [target("A", f'SELECT max("p95") FROM "latency" WHERE '
                         f"{where(F_KIND, F_TARGET, F_MODEL, F_AGENT, metric_is(metric))} "
                         'GROUP BY time($__interval), "target" fill(none)', alias="$tag_target")],
            12, 8, unit="ms", defaults=ts_defaults()))
    variables = [
        custom_var("kind", "kind", ["probe", "load"], "probe", include_all=True),
        query_var("provider", "providers",
                  'SHOW TAG VALUES FROM "turn" WITH KEY = "provider"'),
        query_var("target", "targets", 'SHOW TAG VALUES FROM "turn" WITH KEY = "target" '
                                       'WHERE "provider" =~ /^$provider$/'),
        query_var("model", "models",
                  'SHOW TAG VALUES FROM "turn" WITH KEY = "model" WHERE "target" =~ /^$target$/'),
        query_var("agent", "agent (probe location)", 'SHOW TAG VALUES FROM "turn" WITH KEY = "agent"'),
    ]
    return dashboard(
        "voicepulse-comparison", "VoicePulse / Model comparison",
        "Targets side by side: latency, delivery, stalls, errors and cost over the selected range.",
        panels, variables, [alert_annotation()], time_from="now-24h")


# -- Grafana-managed alert rules -----------------------------------------------------------------

#: The example config's SLOs (deploy/voicepulse.yaml: availability 99.5 %, 95 % of turns with
#: TTFA under 800 ms) and threshold rules; the burn-rate pairs are scheduler.config's own tiers.
AVAILABILITY_OBJECTIVE = 99.5
LATENCY_OBJECTIVE = 95.0
LATENCY_BOUND_MS = 800
#: Grafana's own part of each burn tier of scheduler.config.DEFAULT_TIERS: the rule's short name
#: (in its uid) and how long the condition must hold before it fires.
GRAFANA_TIERS = {"page-1h": ("fast", "2m"), "page-6h": ("slow", "5m"), "ticket-3d": ("ticket", "30m")}
BURN_WINDOWS = tuple(  # (name, factor, long window s, short window s, severity, for)
    (GRAFANA_TIERS[t.name][0], t.factor, int(t.long_s), int(t.short_s), t.severity,
     GRAFANA_TIERS[t.name][1]) for t in DEFAULT_TIERS)

Q_ERROR_RATIO = ("SELECT 1 - mean(\"ok\") FROM \"session\" WHERE \"kind\" = 'probe' AND $timeFilter "
                 'GROUP BY "target"')
# Share of turns slower than the bound, in one query: ceil((x - bound) / 1e9) is 1 above the
# bound and 0 at or below it (for any latency under 11 days), so its mean is the bad fraction.
Q_SLOW_RATIO = (f'SELECT mean("slow") FROM (SELECT ceil(("ttfa_ms" - {LATENCY_BOUND_MS}) / 1000000000) '
                "AS \"slow\" FROM \"turn\" WHERE \"kind\" = 'probe' AND $timeFilter GROUP BY \"target\") "
                'GROUP BY "target"')
Q_TTFA_P95 = ("SELECT percentile(\"ttfa_ms\", 95) FROM \"turn\" WHERE \"kind\" = 'probe' AND "
              '$timeFilter GROUP BY "target"')
Q_ERROR_PCT = ("SELECT 100 * (1 - mean(\"ok\")) FROM \"session\" WHERE \"kind\" = 'probe' AND "
               '$timeFilter GROUP BY "target"')


def _query(ref: str, q: str, seconds: int) -> dict:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": seconds, "to": 0},
        "datasourceUid": DS["uid"],
        "model": {"refId": ref, "datasource": dict(DS), "query": q, "rawQuery": True,
                  "resultFormat": "time_series", "intervalMs": 10000, "maxDataPoints": 43200},
    }


def _expr(ref: str, model: dict) -> dict:
    return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
            "model": {"refId": ref, "datasource": {"type": "__expr__", "uid": "__expr__"}, **model}}


def _reduce(ref: str, of: str) -> dict:
    return _expr(ref, {"type": "reduce", "expression": of, "reducer": "last",
                       "settings": {"mode": "dropNN"}})


def _rule(uid: str, title: str, data: list[dict], condition: str, severity: str, for_: str,
          summary: str, description: str) -> dict:
    return {
        "uid": uid,
        "title": title,
        "condition": condition,
        "data": data,
        "noDataState": "OK",  # no probe data is the probe service's own alert (last probe panel)
        "execErrState": "Error",
        "for": for_,
        "isPaused": False,
        "labels": {"severity": severity, "source": "voicepulse"},
        "annotations": {"summary": summary, "description": description,
                        "__dashboardUid__": "voicepulse-availability"},
    }


def alert_rules() -> dict:
    rules = []
    for slo, q, objective, what in (
        ("availability", Q_ERROR_RATIO, AVAILABILITY_OBJECTIVE, "failed probe sessions"),
        ("ttfa", Q_SLOW_RATIO, LATENCY_OBJECTIVE, f"turns with TTFA over {LATENCY_BOUND_MS} ms"),
    ):
        budget = round(1 - objective / 100, 6)
        for name, factor, long_s, short_s, severity, for_ in BURN_WINDOWS:
            limit = round(factor * budget, 6)
            rules.append(_rule(
                f"vp-{slo}-burn-{name}", f"VoicePulse {slo} SLO burn {factor:g}x ({name})",
                [_query("A", q, long_s), _query("B", q, short_s), _reduce("C", "A"),
                 _reduce("D", "B"),
                 _expr("E", {"type": "math", "expression": f"$C > {limit} && $D > {limit}"})],
                "E", severity, for_,
                f"{{{{ $labels.target }}}}: {slo} error budget burning at {factor:g}x",
                f"The share of {what} exceeds {factor:g} x the budget ({limit}) over both "
                f"{long_s // 60} min and {short_s // 60} min (objective {objective} %)."))
    rules.append(_rule(
        "vp-ttfa-p95-threshold", "VoicePulse TTFA p95 over 900 ms",
        [_query("A", Q_TTFA_P95, 600), _reduce("B", "A"),
         _expr("C", {"type": "threshold", "expression": "B",
                     "conditions": [{"evaluator": {"type": "gt", "params": [900]}}]})],
        "C", "warning", "2m", "{{ $labels.target }}: TTFA p95 over the last 10 min is above 900 ms",
        "Exact p95 of every probe turn's ttfa_ms in the last 10 minutes (percentile() over raw "
        "turn points)."))
    rules.append(_rule(
        "vp-error-rate-threshold", "VoicePulse probe error rate over 5 %",
        [_query("A", Q_ERROR_PCT, 600), _reduce("B", "A"),
         _expr("C", {"type": "threshold", "expression": "B",
                     "conditions": [{"evaluator": {"type": "gt", "params": [5]}}]})],
        "C", "warning", "2m", "{{ $labels.target }}: more than 5 % of probe sessions failed",
        "Share of failed probe sessions in the last 10 minutes."))
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": "voicepulse-slo",
                                         "folder": "VoicePulse", "interval": "1m",
                                         "rules": rules}]}


RULES_HEADER = """\
# Grafana-managed alert rules mirroring voicepulse serve's default SLOs and threshold rules, for
# teams that alert from Grafana. GENERATED by dashboards/generate.py: edit that, then rerun it.
#
# Availability SLO 99.5 % and TTFA SLO (95 % of turns under 800 ms), each with the SRE workbook's
# multiwindow multi-burn-rate pairs: 14.4x over 1 h and 5 min, 6x over 6 h and 30 min (page),
# 1x over 3 d and 6 h (ticket). Threshold rules: TTFA p95 > 900 ms and error rate > 5 % over
# 10 min. Regression rules (Mann-Whitney U against a baseline) have no Grafana equivalent: they
# stay in voicepulse serve. Change objectives here and in voicepulse.yaml together.
#
# Rule queries are not env-interpolated by Grafana, so $timeFilter reaches the datasource intact.
"""


def render_rules() -> str:
    import yaml

    return RULES_HEADER + yaml.safe_dump(alert_rules(), sort_keys=False, width=100)


DASHBOARDS = {
    "availability.json": availability,
    "load-run.json": load_run,
    "comparison.json": comparison,
}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2) + "\n" for name, fn in DASHBOARDS.items()}


RULES_FILE = "provisioning/alerting/voicepulse-rules.yaml"


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote dashboards/{name}")
    (HERE / RULES_FILE).write_text(render_rules(), encoding="utf-8")
    print(f"wrote dashboards/{RULES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
