"""The report's "capacity" section for a `voicepulse load --find-capacity` search: the finding in
words, every step in a table, TTFA p50/p95/p99 against level (where the curve bends is the knee)
and error rate against level.

Built from the search's own result (plain data: `CapacityResult.to_dict()`), not from the
store: a step's percentiles are its exactly merged HDR histograms, which stored 10 s `latency`
points cannot reproduce for a step window that does not fall on their boundaries.
"""

from __future__ import annotations

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup

from .figures import DASH, FONT

SECTION = r"""
<section id="capacity" data-stop="{{ stop }}"{% if bp is not none %} data-breaking-point="{{ bp }}"{% endif %}>
<h2>Capacity</h2>
<p class="note">Each level was held on its own (a separate bounded run) and judged by the bounds
{{ bounds }} on that step's sessions alone. The breaking point is the last level that held every
bound. A step whose load generator fell behind measures the generator, not the target: the search
stops there and the result is a floor.</p>
<p id="capacity-finding" class="{{ 'ok' if found else 'bad' }}">{{ finding }}</p>
<div class="table-wrap"><table id="capacity-table">
<thead><tr><th>level ({{ unit }})</th><th>hold s</th><th>sessions</th><th>turns</th><th>TTFA p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>error rate</th><th class="text">errors by class</th><th>late starts</th><th class="text">generator</th><th class="text">verdict</th></tr></thead>
<tbody>{% for s in steps %}<tr data-level="{{ s.level }}" data-passed="{{ 'true' if s.passed else 'false' }}">
<td>{{ '%g' % s.level }}</td><td>{{ '%.0f' % s.hold_s }}</td><td>{{ s.sessions }}</td><td>{{ s.turns }}</td><td>{{ ms(s.ttfa_p50) }}</td><td>{{ ms(s.ttfa_p95) }}</td><td>{{ ms(s.ttfa_p99) }}</td><td>{{ pct(s.error_rate) }}</td><td class="errors">{{ errs(s.errors) }}</td><td>{{ s.late_starts }}</td><td class="text{{ '' if s.health == 'ok' else ' bad' }}">{{ s.health }}</td><td class="text{{ '' if s.passed else ' bad' }}">{{ verdict(s) }}</td></tr>
{% endfor %}</tbody>
</table></div>
{% for p in plots %}<div class="plot" id="plot-{{ p.id }}" data-plot="{{ p.id }}"></div>
<script type="application/json" id="fig-{{ p.id }}">{{ p.json }}</script>
{% endfor %}
</section>
"""


def _ms(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _pct(v) -> str:
    return "-" if v is None else f"{100.0 * v:.2f} %"


def _errs(e: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items(), key=lambda kv: -kv[1])) or "-"


def _verdict(s: dict) -> str:
    if s.get("passed"):
        return "held"
    bad = next((v for v in s.get("verdicts") or () if not v["ok"]), None)
    if bad is None:
        return "generator overloaded"
    act = "no data" if bad["actual"] is None else f"{bad['actual']:.4g}"
    return f"broke {bad['expr']} ({act})"


def finding(res: dict) -> str:
    u = res["unit"]
    if res.get("found"):
        text = f"Breaking point: {res['breaking_point']:g} {u}."
    elif res.get("floor") is not None:
        text = f"No breaking point found; {res['floor']:g} {u} held every bound (a floor)."
    else:
        text = "No breaking point found and no level held every bound."
    b = res.get("broken_bound")
    if b:
        act = "no data" if b["actual"] is None else f"{b['actual']:.4g}"
        text += f" First bound broken: {b['expr']} at {res['first_bad']:g} {u} ({act})."
    if res.get("errors_at_break"):
        text += " Errors at the break: " + _errs(res["errors_at_break"]) + "."
    return text + f" Stopped: {res['message']}."


def latency_figure(res: dict) -> go.Figure | None:
    steps = sorted(res["steps"], key=lambda s: s["level"])
    if not any(s.get("ttfa_p50") is not None for s in steps):
        return None
    x = [s["level"] for s in steps]
    fig = go.Figure()
    for key, p in (("ttfa_p50", 50.0), ("ttfa_p95", 95.0), ("ttfa_p99", 99.0)):
        fig.add_trace(go.Scatter(x=x, y=[s.get(key) for s in steps], mode="lines+markers",
                                 name=f"TTFA p{p:g}", line={"dash": DASH[p], "color": "#1f77b4"}))
    _mark(fig, res)
    return _layout(fig, f"TTFA against level ({res['unit']})", "ms")


def error_figure(res: dict) -> go.Figure | None:
    steps = sorted(res["steps"], key=lambda s: s["level"])
    if not steps:
        return None
    fig = go.Figure(go.Scatter(x=[s["level"] for s in steps],
                               y=[100.0 * (s.get("error_rate") or 0.0) for s in steps],
                               mode="lines+markers", name="error rate",
                               line={"color": "#d62728"}))
    _mark(fig, res)
    return _layout(fig, f"Error rate against level ({res['unit']})", "% of sessions")


def _mark(fig: go.Figure, res: dict) -> None:
    if res.get("breaking_point") is not None:
        fig.add_vline(x=res["breaking_point"], line={"color": "#1a7f37", "dash": "dash"},
                      annotation_text="breaking point", annotation_position="top left")
    if res.get("first_bad") is not None:
        fig.add_vline(x=res["first_bad"], line={"color": "#cf222e", "dash": "dot"},
                      annotation_text="first bad", annotation_position="top right")


def _layout(fig: go.Figure, title: str, ytitle: str) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 15}}, height=340,
                      margin={"l": 70, "r": 20, "t": 60, "b": 50}, template="plotly_white",
                      font=FONT, hovermode="x unified")
    fig.update_xaxes(title_text="level")
    fig.update_yaxes(title_text=ytitle, rangemode="tozero")
    return fig


def render_capacity(res: dict | None, figure_json) -> Markup:
    """The section's HTML ("" for a report of anything but a capacity search). `figure_json` is
    html.py's (plotly JSON safe inside <script>)."""
    if not res:
        return Markup("")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    plots = []
    for pid, build in (("capacity-latency", latency_figure), ("capacity-errors", error_figure)):
        fig = build(res)
        if fig is not None:
            plots.append({"id": pid, "json": Markup(figure_json(fig))})
    bp = res.get("breaking_point")
    return Markup(env.from_string(SECTION).render(
        stop=res["stop"], bp=bp, found=bool(res.get("found")), finding=finding(res),
        unit=res["unit"], steps=res["steps"], plots=plots, ms=_ms, pct=_pct, errs=_errs,
        verdict=_verdict, bounds=", ".join(res.get("bounds") or ()) or "given"))
