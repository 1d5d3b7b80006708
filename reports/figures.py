"""The report's plots, as plotly figures (rendered offline: plotly.js is inlined once by html.py).

Each function returns a `plotly.graph_objects.Figure`, or None when the range has no data for it
(html.py then says so in words instead of drawing an empty frame).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .collect import SPECTRUM_MAX_X, ReportData

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")
ERROR_PALETTE = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                 "#7f7f7f", "#1f77b4", "#2ca02c")
DASH = {50.0: "solid", 95.0: "dash", 99.0: "dot"}
METRIC_NAMES = {"ttfa_ms": "TTFA", "ttfa_audible_ms": "TTFA audible", "turn_ms": "turn"}
ALERT_COLOURS = {"firing": "#d62728", "pending": "#ff7f0e", "resolved": "#2ca02c"}
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def ts(time_ns: int) -> str:
    """Plotly date string in UTC (plotly's date axes take naive timestamps)."""
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def colours(targets: list[str]) -> dict[str, str]:
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(targets)}


def _pct(p: float) -> str:
    return f"p{p:g}".replace(".", "")


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=height,
        margin={"l": 70, "r": 20, "t": 60, "b": 50},
        template="plotly_white",
        font=FONT,
        legend={"orientation": "v", "yanchor": "top", "y": 1.0, "x": 1.02, "xanchor": "left",
                "font": {"size": 11}},
        hovermode="x unified",
    )
    return fig


def _count_ticks(most: float) -> dict:
    """Whole-number ticks for small counts (plotly would label 0.25 sessions)."""
    return {"dtick": 1, "tick0": 0} if most <= 8 else {"tickformat": ",d"}


def _time_range(fig: go.Figure, data: ReportData) -> None:
    """Every time axis spans the same range (the data's extent), so plots line up."""
    if data.first_ns is None or data.last_ns is None:
        return
    first = min([data.first_ns, *(a.time_ns for a in data.alerts)])
    last = max([data.last_ns, *(a.time_ns for a in data.alerts)])
    pad = int(data.bucket_s * 1e9)
    fig.update_xaxes(range=[ts(first - first % pad), ts(last - last % pad + pad)])


def _alert_lines(fig: go.Figure, data: ReportData, rows: int = 1) -> None:
    """A vertical line at every alert state change, on every time axis of the figure (and the
    shared time range)."""
    _time_range(fig, data)
    for a in data.alerts:
        colour = ALERT_COLOURS.get(a.state, "#7f7f7f")
        for r in range(1, rows + 1):
            fig.add_vline(x=ts(a.time_ns), line={"color": colour, "width": 1, "dash": "dash"},
                          opacity=0.7, row=r if rows > 1 else None, col=1 if rows > 1 else None)


def alerts_trace(data: ReportData, y: float | None = None, showlegend: bool = True):
    """Markers for alert state changes (hover: rule, target, state, value, threshold)."""
    if not data.alerts:
        return None
    text = [
        f"{a.rule} {a.state}" + (f" ({a.target})" if a.target else "")
        + (f"<br>value {a.value:.4g}" if a.value is not None else "")
        + (f" threshold {a.threshold:.4g}" if a.threshold is not None else "")
        + (f"<br>{a.message}" if a.message else "")
        for a in data.alerts
    ]
    return go.Scatter(
        x=[ts(a.time_ns) for a in data.alerts],
        y=[a.rule for a in data.alerts] if y is None else [y] * len(data.alerts),
        mode="markers",
        name="alerts",
        marker={"symbol": "diamond", "size": 12,
                "color": [ALERT_COLOURS.get(a.state, "#7f7f7f") for a in data.alerts],
                "line": {"width": 1, "color": "#333"}},
        text=text,
        hovertemplate="%{text}<extra>alert</extra>",
        showlegend=showlegend,
    )


def latency_over_time(data: ReportData) -> go.Figure | None:
    """TTFA and turn percentiles per time bucket (merged HDR blobs), targets in colour, p50/p95/
    p99 by dash; alert state changes as a timeline row underneath."""
    metrics = [m for m in ("ttfa_ms", "ttfa_audible_ms", "turn_ms") if data.latency.get(m)]
    if not metrics:
        return None
    alerts = alerts_trace(data)
    rows = len(metrics) + (1 if alerts is not None else 0)
    heights = [1.0] * len(metrics) + ([0.35] if alerts is not None else [])
    titles = [f"{METRIC_NAMES[m]} (ms, from the intended end of speech)" for m in metrics]
    if alerts is not None:
        titles.append("alerts")
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=heights, subplot_titles=titles)
    col = colours(data.targets)
    for i, m in enumerate(metrics, start=1):
        series: dict[tuple[str, float], list[tuple[int, float]]] = defaultdict(list)
        for b in data.latency[m]:
            for p, v in b.values.items():
                series[(b.target, p)].append((b.time_ns, v))
        for (target, p), pts in sorted(series.items()):
            fig.add_trace(go.Scatter(
                x=[ts(t) for t, _ in pts], y=[v for _, v in pts], mode="lines+markers",
                name=f"{target} {_pct(p)}", legendgroup=target,
                showlegend=i == 1,
                line={"color": col.get(target, "#333"), "dash": DASH.get(p, "solid"), "width": 2},
                marker={"size": 5},
                hovertemplate=f"{target} {METRIC_NAMES[m]} {_pct(p)} %{{y:.1f}} ms<extra></extra>",
            ), row=i, col=1)
        fig.update_yaxes(title_text="ms", rangemode="tozero", row=i, col=1)
    if alerts is not None:
        fig.add_trace(alerts, row=rows, col=1)
        fig.update_yaxes(type="category", row=rows, col=1)
    _alert_lines(fig, data, rows)
    fig.update_xaxes(title_text="time (UTC)", row=rows, col=1)
    return _layout(fig, f"TTFA and turn latency percentiles over time "
                        f"({data.bucket_s} s buckets)", 280 * len(metrics) + 160 +
                   (90 if alerts is not None else 0))


def percentile_spectrum(data: ReportData) -> go.Figure | None:
    """The HDR percentile spectrum: latency at every percentile from 0 % to 99.99 % on a log
    axis of 1/(1-p), one curve per target and metric, from histograms merged over the range."""
    if not data.spectra:
        return None
    fig = go.Figure()
    col = colours(data.targets)
    for s in data.spectra:
        xs = [1.0 / (1.0 - p / 100.0) for p in s.percentiles]
        fig.add_trace(go.Scatter(
            x=xs, y=s.values_ms, mode="lines", name=f"{s.target} {METRIC_NAMES.get(s.metric, s.metric)}"
            f" (n={s.count})",
            line={"color": col.get(s.target, "#333"), "width": 2,
                  "dash": "solid" if s.metric == "ttfa_ms" else "dash", "shape": "hv"},
            customdata=s.percentiles,
            hovertemplate=(f"{s.target} {METRIC_NAMES.get(s.metric, s.metric)}: "
                           "p%{customdata:.3f} = %{y:.1f} ms<extra></extra>"),
        ))
    ticks = [1, 2, 4, 10, 100, 1000, 10000]
    top = max(min(max(s.count for s in data.spectra), SPECTRUM_MAX_X), 100.0)
    fig.update_xaxes(type="log", tickvals=ticks,
                     ticktext=["0%", "50%", "75%", "90%", "99%", "99.9%", "99.99%"],
                     range=[0, math.log10(top) + 0.05], title_text="percentile (log scale of 1/(1-p))",
                     showgrid=True)
    fig.update_yaxes(title_text="latency (ms)", rangemode="tozero")
    fig = _layout(fig, "Latency by percentile (HDR spectrum, merged over the whole range)", 460)
    fig.update_layout(hovermode="closest")
    return fig


def errors_over_time(data: ReportData) -> go.Figure | None:
    """Failed sessions per bucket by error class (stacked), with each target's success ratio."""
    if not data.outcomes:
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    by_class: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for e in data.errors:
        by_class[e.outcome][e.time_ns] += e.count
    for i, (cls, counts) in enumerate(sorted(by_class.items())):
        times = sorted(counts)
        fig.add_trace(go.Bar(x=[ts(t) for t in times], y=[counts[t] for t in times], name=cls,
                             width=data.bucket_s * 1000 * 0.95, offset=0,  # [start, start+bucket)
                             marker={"color": ERROR_PALETTE[i % len(ERROR_PALETTE)]},
                             hovertemplate=f"{cls}: %{{y}} sessions<extra></extra>"),
                      secondary_y=False)
    col = colours(data.targets)
    per_target: dict[str, list] = defaultdict(list)
    for o in data.outcomes:
        per_target[o.target].append(o)
    for target, buckets in sorted(per_target.items()):
        fig.add_trace(go.Scatter(
            x=[ts(o.time_ns) for o in buckets], y=[100.0 * o.ok / o.total for o in buckets],
            customdata=[[o.ok, o.total] for o in buckets], mode="lines+markers",
            name=f"{target} success %", line={"color": col.get(target, "#333"), "width": 2},
            hovertemplate=(f"{target}: %{{y:.1f}} % (%{{customdata[0]}} of "
                           "%{customdata[1]} sessions)<extra></extra>"),
        ), secondary_y=True)
    _alert_lines(fig, data)
    fig.update_layout(barmode="stack")
    most = max((sum(c.get(t, 0) for c in by_class.values())
                for t in {t for c in by_class.values() for t in c}), default=0)
    fig.update_yaxes(title_text="failed sessions", rangemode="tozero", secondary_y=False,
                     **_count_ticks(most))
    fig.update_yaxes(title_text="success %", range=[0, 105], tickvals=[0, 25, 50, 75, 100],
                     secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="time (UTC)")
    title = "Errors by class over time" + ("" if by_class else " (no failed sessions)")
    return _layout(fig, f"{title} ({data.bucket_s} s buckets)", 400)


def _loadgen_series(data: ReportData) -> dict[str, list[tuple[int, float]]]:
    """Loadgen fields per timestamp: the run-wide row (worker "all", written by the master) when
    there is one; otherwise counts summed over workers, lag and CPU at their worst."""
    acc: dict[str, dict[int, float]] = defaultdict(dict)
    rows = data.loadgen
    if any(r.worker == "all" for r in rows):
        rows = [r for r in rows if r.worker == "all"]
    for r in rows:
        for k, v in r.values.items():
            d = acc[k]
            if k in ("send_lag_p99_ms", "cpu_pct", "loop_lag_p99_ms", "overloaded"):
                d[r.time_ns] = max(d.get(r.time_ns, v), v)
            else:
                d[r.time_ns] = d.get(r.time_ns, 0.0) + v
    return {k: sorted(d.items()) for k, d in acc.items()}


def load_sessions(data: ReportData) -> go.Figure | None:
    """Users and active sessions (left axis) and arrivals due, started and late (right axis),
    as the load generator recorded them."""
    s = _loadgen_series(data)
    if not any(k in s for k in ("users", "active_sessions", "arrivals_due", "arrivals_started",
                                "late_starts")):
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    style = {
        "users": ("#7f7f7f", "dot", False), "active_sessions": ("#1f77b4", "solid", False),
        "arrivals_due": ("#9467bd", "dash", True), "arrivals_started": ("#2ca02c", "solid", True),
        "late_starts": ("#d62728", "solid", True),
    }
    for k, (colour, dash, right) in style.items():
        if k not in s:
            continue
        pts = s[k]
        fig.add_trace(go.Scatter(
            x=[ts(t) for t, _ in pts], y=[v for _, v in pts], mode="lines+markers",
            name=k.replace("_", " "), line={"color": colour, "dash": dash, "width": 2},
            marker={"size": 4}, hovertemplate=f"{k.replace('_', ' ')} %{{y:.0f}}<extra></extra>",
        ), secondary_y=right)
    _alert_lines(fig, data)
    fig.update_yaxes(title_text="sessions / users", rangemode="tozero", secondary_y=False)
    most = max((v for k in ("arrivals_due", "arrivals_started", "late_starts")
                for _, v in s.get(k, [])), default=0)
    fig.update_yaxes(title_text="arrivals per interval", rangemode="tozero", secondary_y=True,
                     showgrid=False, **_count_ticks(most))
    fig.update_xaxes(title_text="time (UTC)")
    return _layout(fig, "Load: sessions and arrivals over time", 380)


def generator_health(data: ReportData) -> go.Figure | None:
    """The load generator's own health: audio send lag p99 (ms) and CPU (%)."""
    s = _loadgen_series(data)
    if "send_lag_p99_ms" not in s and "cpu_pct" not in s:
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if "send_lag_p99_ms" in s:
        pts = s["send_lag_p99_ms"]
        fig.add_trace(go.Scatter(
            x=[ts(t) for t, _ in pts], y=[v for _, v in pts], mode="lines+markers",
            name="send lag p99 (ms)", line={"color": "#ff7f0e", "width": 2},
            hovertemplate="send lag p99 %{y:.1f} ms<extra></extra>"), secondary_y=False)
    if "cpu_pct" in s:
        pts = s["cpu_pct"]
        fig.add_trace(go.Scatter(
            x=[ts(t) for t, _ in pts], y=[v for _, v in pts], mode="lines+markers",
            name="generator CPU (%)", line={"color": "#8c564b", "width": 2, "dash": "dot"},
            hovertemplate="cpu %{y:.0f} %<extra></extra>"), secondary_y=True)
    _alert_lines(fig, data)
    fig.update_yaxes(title_text="send lag p99 (ms)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="CPU %", range=[0, 105], tickvals=[0, 25, 50, 75, 100],
                     secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="time (UTC)")
    return _layout(fig, "Load generator health", 340)


#: (section id, heading, builder, what the plot shows) in report order
PLOTS = (
    ("latency", "Latency over time", latency_over_time,
     "TTFA and turn time per time bucket at p50 (solid), p95 (dashed) and p99 (dotted), one "
     "colour per target. Each bucket's percentiles come from the HDR histograms of its interval "
     "merged together, never from averaged percentiles. Diamonds underneath mark alert state "
     "changes (red firing, green resolved)."),
    ("spectrum", "Latency distribution", percentile_spectrum,
     "Every percentile from 0 % to 99.99 %, on the classic log axis of 1/(1-p) so the tail gets "
     "room: each step right is ten times rarer. Solid lines are TTFA, dashed are turn time; each "
     "curve ends at its maximum, or where its sample count stops telling percentiles apart."),
    ("errors", "Errors", errors_over_time,
     "Failed sessions per time bucket, stacked by error class, and each target's success "
     "ratio (right axis)."),
    ("load", "Load", load_sessions,
     "From the load generator's `loadgen` points: users and active sessions, and arrivals that "
     "were due, that started, and that started late."),
    ("health", "Generator health", generator_health,
     "The load generator watching itself: the p99 lag of audio chunks behind their real-time "
     "schedule, and its CPU. High values mean the generator, not the server, may be slow."),
)
