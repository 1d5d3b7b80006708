"""The status endpoint: /healthz, /status (JSON), /metrics (Prometheus text) and, given a page,
the status page at / with its page.json (scheduler/status_page.py), on loopback.

A stdlib `ThreadingHTTPServer` on its own daemon thread: no dependency, and a slow scraper can
never block the scheduler. It binds 127.0.0.1 by default; binding elsewhere is the operator's
explicit choice in the config (`status.host`).
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

log = logging.getLogger("voicepulse.status")


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in kw.items()) + "}"


def prometheus_text(status: dict) -> str:
    """Render a /status document as Prometheus exposition format (text 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, rows: list[tuple[dict, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            out.append(f"{name}{_labels(**labels) if labels else ''} {float(value):g}")

    agent = status.get("agent", "")
    targets = status.get("targets", {}).values()
    metric("voicepulse_probe_runs_total", "counter", "Probe sessions run.",
           [({"agent": agent, "target": t["target"], "scenario": t["scenario"]}, t["runs"])
            for t in targets])
    metric("voicepulse_probe_ok_total", "counter", "Probe sessions that succeeded.",
           [({"agent": agent, "target": t["target"], "scenario": t["scenario"]}, t["ok"])
            for t in targets])
    metric("voicepulse_probe_skips_total", "counter",
           "Scheduled probes skipped because the previous one was still running.",
           [({"agent": agent, "target": t["target"], "scenario": t["scenario"]}, t["skips"])
            for t in targets])
    metric("voicepulse_probe_last_success", "gauge", "1 if the last probe succeeded.",
           [({"agent": agent, "target": t["target"], "scenario": t["scenario"]},
             1 if t["last"]["outcome"] == "ok" else 0) for t in targets if t.get("last")])
    metric("voicepulse_probe_last_ttfa_ms", "gauge", "TTFA of the last probe's first turn.",
           [({"agent": agent, "target": t["target"], "scenario": t["scenario"]},
             t["last"]["ttfa_ms"]) for t in targets
            if t.get("last") and t["last"].get("ttfa_ms") is not None])
    for key, name, help_ in (
            ("checks_failed", "voicepulse_probe_last_checks_failed",
             "Scenario checks that failed in the last scripted probe."),
            ("wer", "voicepulse_probe_last_wer",
             "Mean word error rate of the last scripted probe's input transcription.")):
        metric(name, "gauge", help_,
               [({"agent": agent, "target": t["target"], "scenario": t["scenario"]},
                 t["last"][key]) for t in targets
                if t.get("last") and t["last"].get(key) is not None])
    metric("voicepulse_probe_last_run_timestamp_seconds", "gauge", "Start of the last probe.",
           [({"agent": agent, "target": t["target"], "scenario": t["scenario"]},
             t["last"]["at"]) for t in targets if t.get("last")])
    rows = []
    for t in targets:
        hour = t.get("last_hour") or {}
        for key in ("ttfa_p50_ms", "ttfa_p95_ms", "success_ratio"):
            if hour.get(key) is not None:
                rows.append(({"agent": agent, "target": t["target"], "stat": key}, hour[key]))
    metric("voicepulse_last_hour", "gauge", "Last-hour success ratio and TTFA percentiles.", rows)
    metric("voicepulse_alert_firing", "gauge", "1 per alert that is firing (0 when pending).",
           [({"rule": a["rule"], "target": a["target"], "severity": a["severity"]},
             1 if a["state"] == "firing" else 0) for a in status.get("alerts", [])])
    eng = status.get("engine", {})
    metric("voicepulse_alert_evaluations_total", "counter", "Alert engine evaluations.",
           [({}, eng.get("evaluations", 0))])
    metric("voicepulse_alert_rule_errors_total", "counter", "Rule evaluations that failed.",
           [({}, eng.get("rule_errors", 0))])
    metric("voicepulse_notifications_sent_total", "counter", "Notifications delivered.",
           [({"notifier": n["name"]}, n["sent"]) for n in status.get("notifiers", [])])
    metric("voicepulse_notifications_failed_total", "counter",
           "Notifications given up after every retry.",
           [({"notifier": n["name"]}, n["failed"]) for n in status.get("notifiers", [])])
    outbox = status.get("outbox") or {}
    metric("voicepulse_outbox", "gauge", "Outbox health counters (pending, delivered, ...).",
           [({"stat": k}, v) for k, v in _flat(outbox).items()])
    metric("voicepulse_write_errors_total", "counter", "Points the service failed to hand over.",
           [({}, status.get("write_errors", 0))])
    return "\n".join(out) + "\n"


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat(v, key + "_"))
        elif isinstance(v, bool):
            flat[key] = float(v)
        elif isinstance(v, int | float):
            flat[key] = float(v)
    return flat


#: The page may fetch only its own page.json; nothing else from anywhere, and never cached.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "script-src 'unsafe-inline'; connect-src 'self'; img-src data:",
}


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class StatusServer:
    """Serves a service's status; `port=0` picks a free port (read `.port` after `start()`)."""

    def __init__(self, status_fn, host: str = "127.0.0.1", port: int = 0, page=None):
        self.status_fn = status_fn
        self.page = page  # a LivePage (html(), document()) or None: no page at /
        self.host, self.port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> StatusServer:
        status_fn, page = self.status_fn, self.page

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/healthz":
                        self._send(200, b"ok\n", "text/plain; charset=utf-8")
                    elif path == "/status":
                        self._send(200, orjson.dumps(status_fn(), option=orjson.OPT_INDENT_2
                                                     | orjson.OPT_NON_STR_KEYS),
                                   "application/json")
                    elif page is not None and path in ("/", "/index.html"):
                        self._send(200, page.html().encode(), "text/html; charset=utf-8",
                                   PAGE_HEADERS)
                    elif page is not None and path == "/page.json":
                        self._send(200, orjson.dumps(page.document(),
                                                     option=orjson.OPT_NON_STR_KEYS),
                                   "application/json", PAGE_HEADERS)
                    elif path == "/metrics":
                        self._send(200, prometheus_text(status_fn()).encode(),
                                   "text/plain; version=0.0.4; charset=utf-8")
                    else:
                        self._send(404, b"not found\n", "text/plain; charset=utf-8")
                except Exception:
                    log.exception("status endpoint %s failed", path)
                    self._send(500, b"internal error\n", "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, ctype: str,
                      headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:  # quiet
                pass

        server_cls = _Server6 if ":" in self.host else ThreadingHTTPServer
        self._httpd = server_cls((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.timeout = 1.0
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.2}, name="status-http", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
