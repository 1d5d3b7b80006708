"""`voicepulse serve` (the probe service) and `voicepulse alerts check`.

Registered on the main group by voicepulse/cli.py. Config errors print one line and exit 2
before anything starts; SIGTERM/SIGINT stop gracefully (exit 0); SIGHUP reloads the config and
keeps the old one running when the new one is bad.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time

import click

from voicepulse import config as cfgmod
from voicepulse.configkit import ConfigError, parse_duration
from voicepulse.errors import ConfigErrorExit
from voicepulse.wiring import load_or_default, telemetry_for

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
log = logging.getLogger("voicepulse.serve")


ConfigExit = ConfigErrorExit


def _load(config_path: str | None):
    """The service needs a real config (probes, rules): no built-in defaults here."""
    return load_or_default(config_path, defaults=False)


def open_source(tel):
    """The alert source over a destination: its first InfluxDB sink (InfluxQL) or the embedded
    store, where the service's recorder writes."""
    from scheduler.source import TelemetrySource

    return TelemetrySource(tel.query())


@click.command("serve", context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="voicepulse.yaml with probes, slos, alerts and notifiers (default "
                   "./voicepulse.yaml).")
@click.option("--duration", default=None,
              help="Stop by itself after this long (e.g. 90s, 10m); default: run until "
                   "SIGTERM/SIGINT.")
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="Embedded store file (default from the config).")
@click.option("--status-port", type=click.IntRange(0, 65535), default=None,
              help="Override status.port (0 picks a free port, printed at start).")
@click.option("-v", "--verbose", is_flag=True, help="Log every probe and evaluation.")
def serve(config_path, duration, store, status_port, verbose) -> None:
    """Run the probe service: scheduled probes of every configured target, results into the
    store, SLO burn-rate, threshold and regression alerts to the notifiers, and a status
    endpoint on 127.0.0.1: the status page (/), /healthz, /status and /metrics.

    \b
    Signals: SIGTERM/SIGINT stop (running probes finish or are aborted at the shutdown
    timeout, the outbox is flushed, exit 0); SIGHUP reloads the config (a bad new config is
    reported and the old one keeps running).
    """
    from scheduler.service import ProbeService
    from scheduler.status_http import StatusServer
    from scheduler.status_page import LivePage

    seconds = None
    if duration:
        try:
            seconds = parse_duration(duration)
        except ValueError:
            raise ConfigExit(f"--duration: expected a duration like 90s or 10m, got "
                             f"{duration!r}") from None
    cfg = _load(config_path)
    if cfg.service is None or not cfg.service.probes:
        raise ConfigExit(f"{cfg.file}: probes: nothing to run (add a `probes:` list)")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every run (INFO) and every skip (WARNING); the service counts and logs
    # skips itself, so keep only its errors.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # -v is for our own loggers: at DEBUG, websockets logs every handshake header (the API key
    # in `Authorization`) and urllib3 every request URL (query strings); keep them at INFO.
    for noisy in ("websockets", "urllib3", "influxdb_client"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    try:
        cfgmod.require_env(cfg, [cfg.targets[t] for t in {j.target for j in cfg.service.probes}])
    except ConfigError as exc:
        raise ConfigExit(str(exc)) from None
    svc_cfg = cfg.service
    if status_port is not None:
        svc_cfg.status_port = status_port
    tel = telemetry_for(cfg, store)
    source = open_source(tel)
    recorder = tel.recorder()
    # the schedule ledger (scheduler/ledger.py) lives with the outbox: the service's local state
    ledger = os.path.join(cfg.outbox, "schedule-" + re.sub(r"[^A-Za-z0-9_.-]", "_",
                                                             svc_cfg.agent) + ".json")
    service = ProbeService(svc_cfg, cfg.targets, cfg.scenarios, recorder, source, ledger=ledger)
    try:
        status = StatusServer(service.status, svc_cfg.status_host, svc_cfg.status_port,
                              page=LivePage(service, source.query)).start()
    except OSError as exc:
        recorder.close(timeout=2.0)
        raise ConfigExit(f"{cfg.file}: status.port: cannot listen on {svc_cfg.status_host}:"
                         f"{svc_cfg.status_port} ({exc.strerror})") from None

    stop, reload_ = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: reload_.set())

    service.start()
    click.echo(f"serving: {len(svc_cfg.probes)} probes, agent {svc_cfg.agent}, page "
               f"{status.url}/, status {status.url}/status", err=True)
    deadline = time.monotonic() + seconds if seconds else None
    path = cfg.file
    while not stop.is_set():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        stop.wait(0.2 if left is None else min(0.2, left))
        if reload_.is_set():
            reload_.clear()
            _reload(service, path)
    log.info("stopping (bound %.0fs)", svc_cfg.shutdown_timeout_s)
    clean = service.stop(svc_cfg.shutdown_timeout_s)
    status.stop()
    if not clean:
        # a probe stuck past its abort (e.g. inside a blocking connect) must not hold the exit:
        # the outbox is flushed and closed already, so leave without joining the pool threads.
        log.warning("stopped; a probe did not end within the bound and was abandoned")
        logging.shutdown()
        os._exit(0)
    log.info("stopped")
    sys.exit(0)


def _reload(service, path: str) -> None:
    try:
        cfg = cfgmod.load_config(path)
        if cfg.service is None or not cfg.service.probes:
            raise ConfigError(path, "probes", "nothing to run (add a `probes:` list)")
    except ConfigError as exc:
        log.error("reload failed, keeping the running config: %s", exc)
        return
    cfg.service.status_host = service.cfg.status_host  # the endpoint stays where it is
    cfg.service.status_port = service.cfg.status_port
    service.reload(cfg.service, cfg.targets, cfg.scenarios)


# -- alerts ------------------------------------------------------------------------------------
@click.group("alerts", context_settings=CONTEXT)
def alerts() -> None:
    """Evaluate the alert rules of a config."""


@alerts.command("check", context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="voicepulse.yaml (default ./voicepulse.yaml).")
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="Read this embedded store instead of the config's store or InfluxDB.")
def alerts_check(config_path, store) -> None:
    """Evaluate every SLO, threshold and regression rule once against the store and print a
    table. Exit status: 0 nothing firing, 1 at least one alert firing, 2 a config error, 3 a
    rule could not be evaluated (e.g. the store is unreachable) and none fired.

    A rule's `for` duration is not waited for here: a condition that holds counts as firing."""
    from scheduler.alerts import check_once

    cfg = _load(config_path)
    if cfg.service is None:
        raise ConfigExit(f"{cfg.file}: slos/alerts: no rules to check")
    rows = check_once(cfg.service, open_source(telemetry_for(cfg, store)))
    click.echo(render_check(rows))
    if any(r.state == "firing" for r in rows):
        sys.exit(1)
    sys.exit(3 if any(r.state == "error" for r in rows) else 0)


def render_check(rows) -> str:
    head = ("RULE", "TARGET", "SEVERITY", "STATE", "VALUE", "THRESHOLD", "WINDOW", "DETAIL")
    body = [(r.rule, r.target, r.severity, r.state.upper() if r.state == "firing" else r.state,
             "-" if r.value is None else f"{r.value:g}",
             "-" if r.threshold is None else f"{r.threshold:g}", r.window or "-",
             (r.message or "")[:90]) for r in rows]
    if not body:
        return "no rules configured"
    widths = [max(len(str(x[i])) for x in (head, *body)) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  "
             + row[-1] for row in (head, *body)]
    firing = sum(1 for r in rows if r.state == "firing")
    lines.append(f"{len(rows)} rules, {firing} firing")
    return "\n".join(lines)
