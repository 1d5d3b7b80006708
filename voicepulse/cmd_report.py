"""`voicepulse report`: one self-contained HTML file from the store (embedded or InfluxDB)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from voicepulse.configkit import parse_duration

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
RUN_LOOKBACK_S = 366 * 86400.0  # --run-id without a range: look for the run in the last year


def parse_time(value: str, name: str) -> int:
    """Epoch ns from ISO 8601 (UTC unless an offset is given), epoch seconds, "now" or a
    duration back from now ("30m")."""
    v = value.strip()
    if v == "now":
        return time.time_ns()
    try:
        return int(float(v) * 1e9)
    except ValueError:
        pass
    try:
        return time.time_ns() - int(parse_duration(v) * 1e9)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"expected an ISO time (2026-01-31T14:00), epoch seconds, "
                                 f"'now' or a duration back from now (30m), got {value!r}",
                                 param_hint=name) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp() * 1e9)


@click.command("report", context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Read from the store or InfluxDB this config names (default ./voicepulse.yaml "
                   "if present, else the embedded store voicepulse.db).")
@click.option("--store", type=click.Path(dir_okay=False), help="Embedded store file to read.")
@click.option("--since", default=None, help="How far back: 30m, 1h, 2d ... [default: 1h]")
@click.option("--from", "from_", metavar="T", help="Start: ISO time (UTC unless it has an offset), "
              "epoch seconds, or a duration back from now.")
@click.option("--to", "to", metavar="T", help="End (default now); same forms as --from.")
@click.option("--run-id", help="Only this load run (its sessions, its load-generator points).")
@click.option("--target", "targets", multiple=True, metavar="T",
              help="Only this target (repeatable).")
@click.option("--threshold", "thresholds", multiple=True, metavar="EXPR",
              help="A threshold for the verdict, e.g. ttfa_ms.p95<800 or error_rate<0.01 "
                   "(repeatable; with --run-id the config's load thresholds are added).")
@click.option("--title", help="Report title.")
@click.option("-o", "--output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
def report(config_path, store, since, from_, to, run_id, targets, thresholds, title,
           output) -> None:
    """Write one self-contained HTML report (works offline, loads nothing from the network):
    per-target table, latency percentiles over time, the HDR percentile spectrum, errors by
    class, alerts, and for load runs sessions, arrivals and generator health.

    \b
    Examples:
      voicepulse report --since 2h -o report.html
      voicepulse report --store voicepulse.db --run-id 3f2a9c01b7de -o run.html
      voicepulse report --config voicepulse.yaml --from 2026-01-31T14:00 --to 2026-01-31T15:00
    """
    from reports import build_report
    from reports.verdict import parse_threshold
    from voicepulse.errors import ConfigErrorExit
    from voicepulse.wiring import load_or_default, telemetry_for

    if since and from_:
        raise ConfigErrorExit("--since and --from exclude each other")
    for t in thresholds:
        try:
            parse_threshold(t)
        except ValueError as exc:
            raise ConfigErrorExit(f"--threshold: {exc}") from None
    end_ns = parse_time(to, "--to") if to else time.time_ns() + 1
    if from_:
        start_ns = parse_time(from_, "--from")
    else:
        try:
            back = parse_duration(since) if since else (RUN_LOOKBACK_S if run_id else 3600.0)
        except ValueError:
            raise ConfigErrorExit(f"--since: expected a duration like 30m, 1h or 2d, "
                                  f"got {since!r}") from None
        start_ns = end_ns - int(back * 1e9)
    if start_ns >= end_ns:
        raise ConfigErrorExit("the range is empty: --from must be before --to")
    cfg = load_or_default(config_path)
    all_thresholds = list(thresholds)
    if run_id and getattr(cfg, "load", None) is not None:
        all_thresholds += [t for t in getattr(cfg.load, "thresholds", []) or []
                           if t not in all_thresholds]
    query = telemetry_for(cfg, store).query()
    try:
        out = build_report(query, output, start_ns=start_ns, end_ns=end_ns,
                           targets=list(targets) or None, run_id=run_id, title=title,
                           thresholds=all_thresholds)
        sessions = sum(s.sessions for s in query.summary(start_ns=start_ns, end_ns=end_ns,
                                                         targets=list(targets) or None,
                                                         run_id=run_id))
    finally:
        query.close()
    click.echo(f"wrote {out} ({sessions} sessions)")
    if not sessions:
        click.echo("voicepulse: note: no sessions in this range; the report says so", err=True)
