"""One self-contained HTML file: inline CSS, plotly.js inlined once, figures as inline JSON.

Nothing in the page refers to another file or host, so it opens offline, from an e-mail
attachment or an artefact store, and leaks no request anywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import jinja2
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .capacity import render_capacity
from .collect import ReportData
from .figures import PLOTS, colours
from .verdict import Verdict

SECRET_KEY = re.compile(r"key|token|secret|passw|auth|credential|cookie", re.I)


def utc(time_ns: int | None, with_date: bool = True) -> str:
    if time_ns is None:
        return "-"
    d = datetime.fromtimestamp(time_ns / 1e9, UTC)
    return d.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S")


def safe_value(key: str, value: str) -> str:
    """A run parameter fit to print: secrets hidden, URLs without credentials or query."""
    if SECRET_KEY.search(key):
        return "(hidden)"
    if "://" in value:
        try:
            u = urlsplit(value)
            host = u.hostname or ""
            if u.port:
                host += f":{u.port}"
            return urlunsplit((u.scheme, host, u.path, "", ""))
        except ValueError:
            return "(hidden)"
    return value


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.2f} %"


def fmt_rtf(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def fmt_cost(v: float | None) -> str:
    return "-" if v is None else f"${v:.4f}"


def raw(v) -> str:
    """The exact value behind a cell (data-value), for tests and for copy-paste."""
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


#: Per-target table: (header, TargetSummary attribute, formatter)
COLUMNS = (
    ("sessions", "sessions", str),
    ("success", "success_ratio", fmt_ratio),
    ("TTFA p50 ms", "ttfa_p50", fmt_ms),
    ("TTFA p95 ms", "ttfa_p95", fmt_ms),
    ("TTFA p99 ms", "ttfa_p99", fmt_ms),
    ("TTFA max ms", "ttfa_max", fmt_ms),
    ("turn p95 ms", "turn_p95", fmt_ms),
    ("connect p95 ms", "connect_p95", fmt_ms),
    ("RTF", "rtf_mean", fmt_rtf),
    ("stalls", "stalls", str),
    ("cost / audio min", "cost_per_audio_min", fmt_cost),
)


#: Audible-TTFA column (reports.collect.AudibleSummary): (header, data-key, attribute), after
#: the TTFA columns. Shown only when some target in the report has `ttfa_audible_ms` values.
#: One column: the widest table (scenario columns too) has no room for a second at 1,400 px.
AUDIBLE_COLUMNS = (
    ("audible TTFA p95 ms", "ttfa_audible_p95", "p95"),
)
AUDIBLE_AFTER = "ttfa_max"  # the COLUMNS key they follow


def audible_cells(a) -> list[dict]:
    """One target's audible-TTFA cells; `a` is its AudibleSummary, or None (no such values)."""
    return [{"key": k, "raw": raw(None if a is None else getattr(a, attr)),
             "text": fmt_ms(None if a is None else getattr(a, attr)), "bad": False}
            for _h, k, attr in AUDIBLE_COLUMNS]


def fmt_wer(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.1f} %"


#: Scripted-scenario columns (telemetry.query.ScenarioSummary): (header, data-key). Shown only
#: when some target in the report has scenario data, so plain probe reports stay as they were.
SCENARIO_COLUMNS = (
    ("barge-in p95 ms", "barge_in_p95"),
    ("tool p95 ms", "tool_p95"),
    ("WER mean", "wer_mean"),
    ("checks passed", "checks"),
)


def scenario_cells(s) -> list[dict]:
    """One target's scenario cells; `s` is its ScenarioSummary, or None (no scenario data)."""
    if s is None:
        return [{"key": k, "raw": "", "text": "-", "bad": False, "title": ""}
                for _h, k in SCENARIO_COLUMNS]
    cells = [{"key": k, "raw": raw(v), "text": f(v), "bad": False, "title": ""}
             for k, v, f in (("barge_in_p95", s.barge_in_p95, fmt_ms),
                             ("tool_p95", s.tool_p95, fmt_ms), ("wer_mean", s.wer_mean, fmt_wer))]
    total = s.checks_total
    cells.append({"key": "checks", "raw": f"{s.checks_passed}/{total}" if total else "",
                  "text": f"{s.checks_passed}/{total}" if total else "-",
                  "bad": s.checks_passed < total,
                  "title": ", ".join(f"{n} {r.ok}/{r.total}" for n, r in s.checks.items())})
    return cells


def figure_json(fig) -> str:
    """Plotly JSON safe inside a <script> element."""
    return pio.to_json(fig, validate=False, engine="json").replace("</", "<\\/")


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="voicepulse report">
<title>{{ title }}</title>
<style>
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --bg:#f6f7f9; --pass:#1a7f37;
        --warn:#9a6700; --fail:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1400px; margin:0 auto; padding:24px 28px 48px; }
header h1 { font-size:24px; margin:0 0 4px; }
.sub { color:var(--muted); margin:0 0 16px; }
.verdict { display:flex; gap:12px; align-items:flex-start; padding:12px 16px; border-radius:8px;
           background:#fff; border:1px solid var(--line); border-left:6px solid var(--muted); }
.verdict.pass { border-left-color:var(--pass); } .verdict.warn { border-left-color:var(--warn); }
.verdict.fail { border-left-color:var(--fail); }
.verdict .badge { font-weight:700; font-size:16px; }
.pass .badge { color:var(--pass); } .warn .badge { color:var(--warn); }
.fail .badge { color:var(--fail); }
.verdict ul { margin:6px 0 0; padding-left:18px; }
section, .facts { background:#fff; border:1px solid var(--line); border-radius:8px;
                  padding:14px 18px; margin:16px 0; }
h2 { font-size:17px; margin:0 0 6px; }
p.note { color:var(--muted); margin:0 0 8px; max-width:900px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dt { color:var(--muted); } dd { margin:0; min-width:0; overflow-wrap:anywhere; }
/* a table wider than its card scrolls inside the card; the page itself never scrolls sideways */
.table-wrap { overflow-x:auto; max-width:100%; }
table { border-collapse:collapse; width:100%; font-size:13px; font-variant-numeric:tabular-nums; }
th, td { padding:6px 6px; border-bottom:1px solid var(--line); text-align:right;
         white-space:nowrap; }
th { font-weight:600; color:var(--muted); font-size:12px; white-space:normal;
     vertical-align:bottom; }
th:first-child, td:first-child, td.text, th.text { text-align:left; }
td.text, td:first-child { white-space:normal; min-width:8em; }
td.errors { text-align:left; white-space:normal; min-width:9em; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; }
.bad { color:var(--fail); font-weight:600; }
.ok { color:var(--pass); }
.plot { width:100%; }
.empty { color:var(--muted); font-style:italic; }
footer { color:var(--muted); font-size:12px; margin-top:24px; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12px; }
@media (max-width:600px) { main { padding:14px 10px 32px; } section, .facts { padding:12px; } }
</style>
<script>{{ plotlyjs }}</script>
</head>
<body>
<main>
<header>
  <h1>{{ title }}</h1>
  <p class="sub">{{ measured }}</p>
  <div class="verdict {{ verdict.status }}" id="verdict" data-status="{{ verdict.status }}">
    <div>
      <div class="badge">{{ verdict.headline }}</div>
      {% if verdict.reasons %}<ul>{% for r in verdict.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
    </div>
  </div>
</header>

<div class="facts" id="facts">
<dl>
  <dt>range</dt><dd>{{ range_text }}</dd>
  <dt>data</dt><dd>{{ data_text }}</dd>
  <dt>targets</dt><dd>{% for t in target_facts %}<span class="swatch" style="background:{{ t.colour }}"></span>{{ t.name }} ({{ t.provider or "?" }}, model {{ t.models or "?" }}){% if not loop.last %}; {% endif %}{% endfor %}</dd>
  {% if scenarios %}<dt>scenarios</dt><dd>{{ scenarios }}</dd>{% endif %}
  {% if kinds %}<dt>kind</dt><dd>{{ kinds }}</dd>{% endif %}
  {% if run_id %}<dt>run id</dt><dd><code>{{ run_id }}</code></dd>{% endif %}
  {% for k, v in params %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}
  {% if checks %}<dt>thresholds</dt><dd>{% for c in checks %}<span class="{{ 'ok' if c.passed else ('bad' if c.passed is false else '') }}">{{ c.target }}: {{ c.text }} {{ 'passed' if c.passed else ('failed' if c.passed is false else 'not judged') }}{% if c.value is not none %} ({{ '%.4g' % c.value }}){% endif %}</span>{% if not loop.last %}<br>{% endif %}{% endfor %}</dd>{% endif %}
  <dt>generated</dt><dd>{{ generated }}</dd>
</dl>
</div>

<section id="summary">
<h2>Per target</h2>
<p class="note">Sessions and percentiles over the whole range, from each turn's own values (exact,
nearest rank). Latencies are from the intended end of the user's speech. RTF is reply audio
seconds per second of delivery (above 1 is faster than real time); stalls are underruns of a
simulated player with a 100 ms jitter buffer.{% if audible %} Audible TTFA is until the first
reply audio that crosses the audible gate (-45 dBFS RMS in a 10 ms window): the same as TTFA on GPT-Live,
whose output never stops, and later than TTFA where a reply starts with silence.{% endif %}{% if scenario_headers %} Scripted scenarios:
barge-in is the user speaking over a reply until the server stops it, tool is end of speech
until the function call's arguments are complete, WER is the word error rate of the server's
input transcription (mean over turns), and checks are the scenario's checks passed / run.{% endif %}</p>
{% if rows %}
<div class="table-wrap"><table id="summary-table">
<thead><tr><th class="text">target</th><th class="text">model</th>{% for h in headers %}<th>{{ h }}</th>{% endfor %}{% for h in scenario_headers %}<th class="scenario">{{ h }}</th>{% endfor %}<th class="text">errors by class</th></tr></thead>
<tbody>
{% for r in rows %}<tr data-target="{{ r.target }}">
<td data-key="target"><span class="swatch" style="background:{{ r.colour }}"></span>{{ r.target }}</td>
<td class="text" data-key="model">{{ r.model }}</td>
{% for c in r.cells %}<td data-key="{{ c.key }}" data-value="{{ c.raw }}"{% if c.bad %} class="bad"{% endif %}>{{ c.text }}</td>{% endfor %}
{% for c in r.scenario_cells %}<td data-key="{{ c.key }}" data-value="{{ c.raw }}"{% if c.title %} title="{{ c.title }}"{% endif %}{% if c.bad %} class="bad"{% endif %}>{{ c.text }}</td>{% endfor %}
<td class="errors" data-key="errors" data-value="{{ r.errors_raw }}">{{ r.errors_text }}</td>
</tr>
{% endfor %}</tbody>
</table></div>
{% else %}<p class="empty">No sessions in this range.</p>{% endif %}
</section>
{{ capacity }}

{% for p in plots %}
<section id="{{ p.id }}">
<h2>{{ p.heading }}</h2>
<p class="note">{{ p.note }}</p>
{% if p.json %}<div class="plot" id="plot-{{ p.id }}" data-plot="{{ p.id }}"></div>
<script type="application/json" id="fig-{{ p.id }}">{{ p.json }}</script>
{% else %}<p class="empty">{{ p.empty }}</p>{% endif %}
</section>
{% endfor %}

<section id="alerts">
<h2>Alerts</h2>
{% if alerts %}
<div class="table-wrap"><table id="alerts-table">
<thead><tr><th class="text">time</th><th class="text">rule</th><th class="text">target</th><th class="text">severity</th><th class="text">state</th><th>value</th><th>threshold</th><th class="text">message</th></tr></thead>
<tbody>{% for a in alerts %}<tr><td class="text">{{ a.time }}</td><td class="text">{{ a.rule }}</td><td class="text">{{ a.target }}</td><td class="text">{{ a.severity }}</td><td class="text {{ 'bad' if a.state == 'firing' else '' }}">{{ a.state }}</td><td>{{ a.value }}</td><td>{{ a.threshold }}</td><td class="errors">{{ a.message }}</td></tr>{% endfor %}</tbody>
</table></div>
{% else %}<p class="empty">No alert changed state in this range.</p>{% endif %}
</section>

<footer>VoicePulse report. Percentiles are never averaged: time buckets and whole-range curves
merge HDR histograms (3 significant digits, microseconds); the table uses raw per-turn values.
This file is self-contained and loads nothing from the network.</footer>
</main>
<script>
(function () {
  var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud"]};
  document.querySelectorAll("div.plot[data-plot]").forEach(function (div) {
    var spec = JSON.parse(document.getElementById("fig-" + div.dataset.plot).textContent);
    Plotly.newPlot(div, spec.data, spec.layout, config);
  });
})();
</script>
</body>
</html>
"""


def render_html(data: ReportData, verdict: Verdict, generated_ns: int) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    tmpl = env.from_string(TEMPLATE)
    col = colours(data.targets)
    rows = []
    show_scenario = bool(data.scenario)
    show_audible = bool(data.audible)
    for s in data.summary:
        cells = []
        for _h, key, f in COLUMNS:
            v = getattr(s, key)
            cells.append({"key": key, "raw": raw(v), "text": f(v),
                          "bad": key == "success_ratio" and v is not None and v < 1.0})
            if key == AUDIBLE_AFTER and show_audible:
                cells += audible_cells(data.audible.get(s.target))
        rows.append({
            "target": s.target, "model": s.model, "colour": col.get(s.target, "#333"),
            "cells": cells,
            "scenario_cells": scenario_cells(data.scenario.get(s.target)) if show_scenario else [],
            "errors_text": ", ".join(f"{k} {v}" for k, v in s.errors.items()) or "-",
            "errors_raw": ";".join(f"{k}={v}" for k, v in s.errors.items()),
        })
    plots = []
    for pid, heading, build, note in PLOTS:
        if pid in ("load", "health") and not data.is_load:
            continue
        fig = build(data)
        plots.append({
            "id": pid, "heading": heading, "note": note,
            "json": jinja2.utils.markupsafe.Markup(figure_json(fig)) if fig is not None else "",
            "empty": "No data for this plot in this range." if pid not in ("load", "health")
            else "The load generator recorded no such figures for this run.",
        })
    n = data.sessions
    kinds = " and ".join(data.kinds) or "probe"
    measured = (f"{n} {kinds} session{'s' if n != 1 else ''} against "
                f"{len(data.targets)} target{'s' if len(data.targets) != 1 else ''}"
                if n else "No sessions were measured in this range")
    if data.run_id:
        measured += f", load run {data.run_id}"
    span = ""
    if data.first_ns is not None and data.last_ns is not None:
        secs = (data.last_ns - data.first_ns) / 1e9
        span = f"first session {utc(data.first_ns)}, last {utc(data.last_ns)} ({secs:.0f} s)"
    params = [(k, safe_value(k, v)) for k, v in data.params.items()]  # caller's order
    return tmpl.render(
        title=data.title,
        measured=measured,
        verdict=verdict,
        range_text=f"{utc(data.start_ns)} to {utc(data.end_ns)}",
        data_text=span or "none",
        target_facts=[{"name": t, "colour": col[t], "provider": data.providers.get(t, ""),
                       "models": ", ".join(data.models.get(t, []))} for t in data.targets],
        scenarios=", ".join(data.scenarios),
        kinds=", ".join(data.kinds),
        run_id=data.run_id or "",
        params=params,
        checks=verdict.checks,
        generated=utc(generated_ns),
        headers=[h for key, h in _headers(show_audible)],
        audible=show_audible,
        scenario_headers=[h for h, _k in SCENARIO_COLUMNS] if show_scenario else [],
        rows=rows,
        plots=plots,
        capacity=render_capacity(data.capacity, figure_json),
        alerts=[{"time": utc(a.time_ns), "rule": a.rule, "target": a.target or "-",
                 "severity": a.severity, "state": a.state,
                 "value": "-" if a.value is None else f"{a.value:.4g}",
                 "threshold": "-" if a.threshold is None else f"{a.threshold:.4g}",
                 "message": a.message} for a in data.alerts],
        plotlyjs=jinja2.utils.markupsafe.Markup(get_plotlyjs().replace("</script", "<\\/script")),
    )


def _headers(show_audible: bool) -> list[tuple[str, str]]:
    """(key, header) of the per-target table's value columns, in order."""
    out = []
    for h, key, _f in COLUMNS:
        out.append((key, h))
        if key == AUDIBLE_AFTER and show_audible:
            out += [(k, ah) for ah, k, _a in AUDIBLE_COLUMNS]
    return out


__all__ = ["render_html", "utc", "safe_value", "COLUMNS", "SCENARIO_COLUMNS", "AUDIBLE_COLUMNS"]
