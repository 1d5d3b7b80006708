"""The VoicePulse tab in Locust's web UI (`voicepulse load --web`).

Locust's own statistics table rounds to about two digits and knows nothing of arrivals or the
generator's health. This tab shows what the terminal summary shows, live: it is built from the
same `LoadSummary` the run ends with (`Collector.summary()`: exact merged HDR percentiles, the
arrival counters, the thresholds judged so far, per-worker health), so at the end of the run it
equals `--summary-json`. It lives wherever the merged data does: the local process, or the
master of `--processes` and of remote workers.

It uses the extension points of Locust's bundled UI: `extended_tabs` / `extended_tables` in the
template arguments declare one tab and its columns, and the rows ride on the UI's own
`/stats/requests` poll as `extended_stats` (so they refresh with it, every 2 s while the run
goes). `/voicepulse/summary.json` serves the same summary for scripts.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from loadtests.summary import LoadSummary

TAB = "voicepulse"
#: (row key, column title). Keys have no underscore (the UI camel-cases every key it gets) and
#: none is `name`, the UI's default sort key: the rows keep the summary's order.
COLUMNS = (("section", "section"), ("item", "item"), ("count", "count"), ("mean", "mean ms"),
           ("p50", "p50 ms"), ("p90", "p90 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"),
           ("p999", "p99.9 ms"), ("max", "max ms"), ("detail", "detail"))
ARRIVALS = (("due", "arrivals_due"), ("started", "arrivals_started"), ("late", "late_starts"),
            ("no slot", "no_slot"), ("dropped", "dropped"), ("cut", "cut"))


def _row(section: str, item: str, **cells) -> dict:
    return {"section": section, "item": item, **{k: cells.get(k, "") for k, _t in COLUMNS[2:]}}


def ms(v: float) -> str:
    """A latency as the tab shows it: to the microsecond, the resolution of the histograms."""
    return f"{v:.3f}"


def _num(v: float | None, unit: str) -> str:
    return "n/a" if v is None else f"{v:.1f}{unit}"


def rows(s: LoadSummary, live: dict[str, dict] | None = None) -> list[dict]:
    """The tab's rows for summary `s`; `live` adds each worker's users / in-flight sessions now.

    Latency cells are the summary's own numbers to the microsecond (`ms`): the merged HDR
    figures of `--summary-json`, not Locust's two-digit rounding.
    """
    c, live = s.counters, live or {}
    mode = (f"{s.level:g} sessions/s ({s.arrivals})" if s.load_model == "open"
            else f"{s.level:g} users")
    out = [_row("run", s.run_id, detail=f"{s.target} ({s.model}), scenario {s.scenario}, "
                f"{s.load_model} model {mode}, {s.duration_s:.1f} s, {s.workers} worker(s), "
                f"{s.slots} slots" + ("" if s.complete else ", running"))]
    out += [_row("latency", m.name, count=m.count, mean=ms(m.mean), p50=ms(m.p50),
                 p90=ms(m.p90), p95=ms(m.p95), p99=ms(m.p99), p999=ms(m.p999), max=ms(m.max))
            for m in s.metrics]
    sess, ok = c.get("sessions", 0), c.get("sessions_ok", 0)
    errors = sorted((c.get("errors") or {}).items(), key=lambda kv: -kv[1])
    out.append(_row("sessions", "sessions", count=sess,
                    detail=f"ok {ok}, failed {sess - ok}"
                    + (f" (error rate {(sess - ok) / sess:.2%})" if sess else "")
                    + "".join(f"; {k} {v}" for k, v in errors)))
    ach = "" if s.achieved_rate is None else f"achieved {s.achieved_rate:.2f} sessions/s"
    out += [_row("arrivals", name, count=c.get(key, 0), detail=ach if key == "arrivals_started"
                 else "") for name, key in ARRIVALS]
    for t in s.thresholds:
        verdict = ("no data yet" if t["actual"] is None and not s.complete
                   else "PASS" if t["ok"] else "FAIL")
        act = "" if t["actual"] is None else f" (actual {t['actual']:.4g})"
        out.append(_row("threshold", t["expr"], detail=verdict + act))
    if s.aborted:
        out.append(_row("threshold", s.aborted, detail="ABORTED the run (abort_on_fail)"))
    health = {h.worker: h for h in s.health}
    for worker in sorted(set(health) | set(live)):
        h, now = health.get(worker), live.get(worker, {})
        state = ("OVERLOADED: " + "; ".join(h.reasons)) if h and h.overloaded else "ok"
        figures = [f"users {now['users']}, in flight {now['in_flight']}"] if now else []
        if h is not None:
            figures.append(f"CPU max {_num(h.cpu_pct_max, ' %')}, send lag p99 "
                           f"{_num(h.send_lag_p99_ms, ' ms')}, loop lag p99 "
                           f"{_num(h.loop_lag_p99_ms, ' ms')}")
        out.append(_row("generator", worker, detail=f"{state}; " + ", ".join(figures)))
    if s.overloaded:
        out.append(_row("generator", "all", detail=f"WARNING: {s.overload_message}"))
    return out


def register(web_ui, collector: Callable[[], object | None]) -> None:
    """Add the tab to Locust's web UI; `collector()` is the run's Collector (None: no data)."""
    from flask import Response, request

    web_ui.template_args["extended_tabs"] = [{"title": "VoicePulse", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}]

    def current() -> tuple[LoadSummary, dict[str, dict]] | None:
        col = collector()
        if col is None:
            return None
        live = {w.name: {"users": w.users, "in_flight": w.in_flight}
                for w in col.workers.values()}
        return col.summary(), live

    @web_ui.app.after_request
    def _extend_stats(response):
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        data = response.get_json()
        # Locust memoizes this report for about 2 s, state included. A page rendered just
        # after the run started ("spawning") whose first poll gets the cached "ready" switches
        # back to the start form, where its UI never polls the state again: stamp it live.
        data["state"] = web_ui.environment.runner.state
        now = current()
        if now is not None:
            data["extended_stats"] = [{"key": TAB, "data": rows(*now)}]
        response.set_data(orjson.dumps(data))
        return response

    @web_ui.app.after_request
    def _reload_until_started(response):
        # `load --web` always autostarts. A master's page opened before its workers connect
        # shows Locust's start form (state "ready"), and Locust's UI polls nothing in that state,
        # so the page would never notice the run begin: reload it until the run has started.
        runner = web_ui.environment.runner
        if (request.path == "/" and response.status_code == 200 and runner is not None
                and runner.state == "ready"):
            html = response.get_data(as_text=True)
            response.set_data(html.replace("<head>", '<head><meta http-equiv="refresh" '
                                           'content="1">', 1))
        return response

    @web_ui.app.route("/voicepulse/summary.json")
    @web_ui.auth_required_if_enabled
    def _summary_json():
        now = current()
        body = {} if now is None else {**now[0].to_dict(), "live": now[1]}
        return Response(orjson.dumps(body), mimetype="application/json")
