"""Notifiers: a generic JSON webhook, a Slack-compatible webhook, and the log.

Webhook URLs are secrets: they are read from the environment at send time and never appear in
a log line, an error message, a status page or a stored point (errors name the env var
instead). Delivery runs on one background thread per notifier with a bounded queue, retries
with backoff, and counts failures, so a dead receiver can never stall or stop the engine.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from scheduler.alerts import AlertEvent
from scheduler.config import NotifierSpec

log = logging.getLogger("voicepulse.notify")

QUEUE_LIMIT = 1000


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_link(template: str, event: AlertEvent) -> str:
    if not template:
        return ""
    try:
        return template.format(rule=event.rule, target=event.target, severity=event.severity,
                               state=event.state, agent=event.agent)
    except (KeyError, IndexError, ValueError):
        return template


def webhook_payload(event: AlertEvent, link_template: str = "") -> dict:
    """The documented generic payload (README.md ("Probe service and alerts"), "Webhook payload")."""
    return {
        "version": 1,
        "rule": event.rule,
        "target": event.target,
        "kind": event.kind,
        "severity": event.severity,
        "state": event.state,
        "value": event.value,
        "threshold": event.threshold,
        "window": event.window,
        "started_at": iso(event.started_at),
        "at": iso(event.at),
        "agent": event.agent,
        "message": event.message,
        "link": render_link(link_template, event),
    }


def slack_payload(event: AlertEvent, link_template: str = "") -> dict:
    """Slack incoming-webhook shape: `text` for notifications plus one attachment."""
    icon = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}.get(event.state, "")
    link = render_link(link_template, event)
    title = f"[{event.state.upper()}] {event.rule} on {event.target} ({event.severity})"
    fields = [
        {"title": "value", "value": f"{event.value}", "short": True},
        {"title": "threshold", "value": f"{event.threshold}", "short": True},
        {"title": "window", "value": event.window, "short": True},
        {"title": "agent", "value": event.agent or "-", "short": True},
    ]
    return {
        "text": f"{icon} {title}".strip(),
        "attachments": [{
            "color": "#2eb886" if event.state == "resolved" else "#d00000",
            "title": title,
            "title_link": link or None,
            "text": event.message,
            "fields": fields,
            "ts": int(event.at),
        }],
    }


@dataclass
class NotifierStats:
    sent: int = 0
    failed: int = 0  # notifications given up after every retry
    retries: int = 0
    dropped: int = 0  # queue full


class Notifier:
    """Base: queue + delivery thread. Subclasses implement `deliver(event) -> None` (raise to
    retry)."""

    def __init__(self, spec: NotifierSpec):
        self.spec = spec
        self.stats = NotifierStats()
        self._q: queue.Queue[AlertEvent | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def name(self) -> str:
        return self.spec.type if not self.spec.url_env else f"{self.spec.type}({self.spec.url_env})"

    def __call__(self, event: AlertEvent) -> None:
        if event.state not in ("firing", "resolved"):
            return
        if event.state == "resolved" and not self.spec.on_resolved:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"notify-{self.spec.type}",
                                            daemon=True)
            self._thread.start()
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self.stats.dropped += 1
            log.error("notifier %s: queue full, notification dropped", self.name)

    def _run(self) -> None:
        while True:
            event = self._q.get()
            if event is None:
                return
            self._send_with_retry(event)

    def _send_with_retry(self, event: AlertEvent) -> None:
        attempts = max(1, self.spec.retries + 1)
        for attempt in range(attempts):
            try:
                self.deliver(event)
                self.stats.sent += 1
                return
            except Exception as exc:  # noqa: BLE001 - every failure is counted and retried
                reason = describe_error(exc)
                if attempt + 1 < attempts and not self._closed.is_set():
                    self.stats.retries += 1
                    log.warning("notifier %s: delivery failed (%s), retrying", self.name, reason)
                    self._closed.wait(self.spec.backoff_s * (2 ** attempt))
                    continue
                self.stats.failed += 1
                log.error("notifier %s: delivery of %s/%s failed after %d attempts: %s",
                          self.name, event.rule, event.target, attempt + 1, reason)
                return

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded by `timeout`), then stop the thread."""
        if self._thread is None:
            return
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._closed.set()

    def deliver(self, event: AlertEvent) -> None:
        raise NotImplementedError


def describe_error(exc: BaseException) -> str:
    """An error's class and status, never the URL (it may carry a token)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return f"{type(reason).__name__}" + (f" ({reason.strerror})" if getattr(reason, "strerror", None) else "")
    return type(exc).__name__


class LogNotifier(Notifier):
    def deliver(self, event: AlertEvent) -> None:
        level = logging.WARNING if event.state == "firing" else logging.INFO
        log.log(level, "ALERT %s %s target=%s severity=%s value=%s threshold=%s window=%s: %s",
                event.state.upper(), event.rule, event.target, event.severity, event.value,
                event.threshold, event.window, event.message)


class WebhookNotifier(Notifier):
    payload = staticmethod(webhook_payload)

    def deliver(self, event: AlertEvent) -> None:
        url = os.environ.get(self.spec.url_env or "", "")
        if not url:
            raise RuntimeError(f"environment variable {self.spec.url_env} is not set")
        body = orjson.dumps(self.payload(event, self.spec.link))
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "voicepulse-alerts/1"})
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout_s) as resp:
                resp.read(1024)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise urllib.error.HTTPError("", exc.code, "", exc.headers, None) from None
        except urllib.error.URLError as exc:
            raise urllib.error.URLError(exc.reason) from None


class SlackNotifier(WebhookNotifier):
    payload = staticmethod(slack_payload)


KINDS = {"webhook": WebhookNotifier, "slack": SlackNotifier, "log": LogNotifier}


def build_notifiers(specs: list[NotifierSpec]) -> list[Notifier]:
    return [KINDS[s.type](s) for s in specs]


def close_all(notifiers: list[Notifier], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for n in notifiers:
        n.close(max(0.1, deadline - time.monotonic()))
