"""`voicepulse results` (table, JSON or CSV) and `voicepulse status --html FILE`.

Both print the availability cards of `telemetry.availability`, the numbers the status page of
`voicepulse serve` shows: the same function, the same percentile rule, the same window. The
table rounds to 0.1 ms and 0.01 %; JSON and CSV carry the exact values.
"""

from __future__ import annotations

import calendar
import csv
import io
from datetime import datetime
from decimal import Decimal, InvalidOperation

import click
import orjson

from voicepulse.configkit import parse_duration
from voicepulse.errors import ConfigErrorExit
from voicepulse.term import ms, table
from voicepulse.wiring import load_or_default, telemetry_for

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: The CSV's columns, in order (one row per target; exact values, empty for none).
CSV_COLUMNS = ("target", "provider", "model", "window_runs", "window_ok", "success_ratio",
               "window_ttfa_p50_ms", "window_ttfa_p95_ms", "runs", "runs_failed", "runs_errors",
               "runs_ttfa_p50_ms", "runs_ttfa_p95_ms", "last_at", "last_outcome",
               "uptime_24h", "uptime_7d", "uptime_30d", "alerts")


def parse_until(text: str) -> int:
    """Epoch ns of `--until`: ISO 8601 (2026-12-03T13:48:43.123Z, UTC when no zone is given)
    or epoch seconds (1796305723.123); exact to the microsecond."""
    try:
        return int(Decimal(text) * 10**9)
    except InvalidOperation:
        pass
    try:
        d = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigErrorExit(f"--until: expected an ISO 8601 time like 2026-12-03T13:48:43Z "
                              f"or epoch seconds, got {text!r}") from None
    tt = d.utctimetuple() if d.tzinfo is not None else d.timetuple()  # naive: UTC
    return calendar.timegm(tt) * 10**9 + d.microsecond * 1000


def page_options(cfg) -> tuple[int, float]:
    """(N runs, bar span) from the config's `status.page`, else the defaults."""
    from scheduler.config import StatusPage

    page = cfg.service.status_page if cfg.service is not None else StatusPage()
    return page.runs, page.bar_span_s


def cards_document(query, *, end_ns, window_s, runs, bar_span_s, kind, targets=None) -> dict:
    """The JSON of `results --format json`: the cards with the alerts the store has firing."""
    from telemetry.availability import availability, firing_alerts

    avail = availability(query, end_ns=end_ns, window_s=window_s, runs=runs,
                         bar_span_s=bar_span_s, targets=targets, kind=kind)
    alerts = firing_alerts(query, avail.end_ns)
    doc = avail.to_dict()
    for card in doc["targets"]:
        card["alerts"] = [{k: a[k] for k in ("rule", "severity", "since", "value", "threshold")}
                          for a in alerts if a["target"] == card["target"]]
    return doc


def _pct(u: dict) -> str:
    return "-" if u["ratio"] is None else f"{100 * u['ratio']:.2f}%"


def cards_table(doc: dict) -> str:
    n = doc["runs"]
    head = ["target", "provider", "model", "sessions", "success", "ttfa p50", "ttfa p95",
            f"last {n}: p50", "p95", "errors", "last test", "outcome", "uptime 24h", "7d", "30d",
            "error classes (last runs)", "alerts firing"]
    body = []
    for c in doc["targets"]:
        ok, runs = c["window_ok"], c["window_runs"]
        body.append([
            c["target"], c["provider"] or "-", c["model"] or "-", str(runs),
            f"{100 * ok / runs:.1f} %" if runs else "- %",
            ms(c["window_ttfa_p50_ms"], 1), ms(c["window_ttfa_p95_ms"], 1),
            ms(c["runs_ttfa_p50_ms"], 1), ms(c["runs_ttfa_p95_ms"], 1),
            f"{c['runs_failed']}/{c['runs']}",
            (c["last_at"] or "-").replace(".000Z", "Z"), c["last_outcome"] or "-",
            *(_pct(c["uptime"][k]) for k in ("24h", "7d", "30d")),
            ", ".join(f"{k} {v}" for k, v in c["runs_errors"].items()) or "-",
            ", ".join(a["rule"] for a in c["alerts"]) or "-",
        ])
    return table(head, body)


def cards_csv(doc: dict) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def cell(v) -> str:
        return "" if v is None else repr(v) if isinstance(v, float) else str(v)

    for c in doc["targets"]:
        runs = c["window_runs"]
        row = {**c, "success_ratio": c["window_ok"] / runs if runs else None,
               "runs_errors": ";".join(f"{k}={v}" for k, v in c["runs_errors"].items()),
               "alerts": ";".join(a["rule"] for a in c["alerts"]),
               **{f"uptime_{k}": c["uptime"][k]["ratio"] for k in ("24h", "7d", "30d")}}
        w.writerow([cell(row[k]) for k in CSV_COLUMNS])
    return out.getvalue()


def _window(since: str) -> float:
    try:
        return parse_duration(since)
    except ValueError:
        raise ConfigErrorExit(f"--since: expected a duration like 30m, 1h or 2d, got "
                              f"{since!r}") from None


@click.command(context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Read from the store or InfluxDB this config names (and its status.page).")
@click.option("--store", type=click.Path(dir_okay=False), help="Embedded store file to read.")
@click.option("--since", default="1h", show_default=True,
              help="The window of sessions, success and TTFA p50/p95: 30m, 1h, 2d ...")
@click.option("--until", default=None,
              help="The window's end (ISO 8601 or epoch seconds; default now): the page's "
                   "`window.end` gives the page's exact numbers.")
@click.option("--runs", type=click.IntRange(1, 1000), default=None,
              help="N of 'errors x / N runs' and the last-runs percentiles (default "
                   "status.page.runs, else 6).")
@click.option("--kind", type=click.Choice(["probe", "load"]), default=None,
              help="Only probes or only load-test sessions.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="A table for people; JSON or CSV (exact values) for "
                                      "scripts.")
def results(config_path, store, since, until, runs, kind, fmt) -> None:
    """Print the status page's cards per target from the store: sessions, success and TTFA
    p50/p95 over --since; TTFA p50/p95 and errors (x/N, by class) over the last N runs; the
    last run; uptime over 24 h, 7 d and 30 d; alerts firing.

    \b
    The JSON carries the percentile rule (nearest rank) and the window it used.
    Examples:
      voicepulse results --since 24h
      voicepulse results --format json | jq '.targets[] | {target, runs_failed}'
    """
    cfg = load_or_default(config_path)
    window_s = _window(since)
    end_ns = parse_until(until) if until else None
    n, bar_span = page_options(cfg)
    query = telemetry_for(cfg, store).query()
    try:
        doc = cards_document(query, end_ns=end_ns, window_s=window_s, runs=runs or n,
                             bar_span_s=bar_span, kind=kind)
    finally:
        query.close()
    doc["window"]["since"] = since
    if fmt == "json":
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    elif fmt == "csv":
        click.echo(cards_csv(doc), nl=False)
    elif not any(c["window_runs"] for c in doc["targets"]):
        click.echo(f"no sessions in the last {since}")
    else:
        click.echo(cards_table(doc))


@click.command("status", context_settings=CONTEXT)
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False),
              help="Write the status page here: one self-contained file for static hosting.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="The config whose store, probes and status.page to use.")
@click.option("--store", type=click.Path(dir_okay=False), help="Embedded store file to read.")
@click.option("--public", is_flag=True, default=None,
              help="Cards only, whatever status.page.public says.")
def status(html_path, config_path, store, public) -> None:
    """Write the status page of the store's probes as it stands now: the cards `voicepulse
    serve` shows at /, without the live refresh. Alerts are the ones the store last recorded
    firing."""
    import dataclasses
    from pathlib import Path

    from scheduler.config import StatusPage
    from scheduler.status_page import page_document, render_html, static_service
    from telemetry.availability import DAY, availability, firing_alerts

    cfg = load_or_default(config_path)
    page = cfg.service.status_page if cfg.service is not None else StatusPage()
    if public:
        page = dataclasses.replace(page, public=True)
    targets = list(dict.fromkeys(j.target for j in cfg.service.probes)) \
        if cfg.service is not None and cfg.service.probes else None
    query = telemetry_for(cfg, store).query()
    try:
        avail = availability(query, window_s=DAY, runs=page.runs, bar_span_s=page.bar_span_s,
                             targets=targets, kind="probe")
        alerts = firing_alerts(query, avail.end_ns)
    finally:
        query.close()
    service = static_service(cfg.service, cfg.targets) \
        if cfg.service is not None and not page.public else None
    doc = page_document(avail, alerts, page, live=False, service=service)
    Path(html_path).write_text(render_html(doc), encoding="utf-8")
    click.echo(f"wrote {html_path}: {len(avail.cards)} targets, window ending "
               f"{doc['window']['end']}")
