"""Notifiers against a real loopback HTTP receiver: the documented payloads, retries, counted
failures, and webhook URLs (secrets) never logged."""

from __future__ import annotations

import logging
import time

import pytest

from scheduler.alerts import AlertEvent
from scheduler.config import NotifierSpec
from scheduler.notifiers import SlackNotifier, WebhookNotifier, build_notifiers
from tests.scheduler.receiver import Receiver

PAYLOAD_KEYS = {"version", "rule", "target", "kind", "severity", "state", "value", "threshold",
                "window", "started_at", "at", "agent", "message", "link"}


def event(state: str = "firing") -> AlertEvent:
    return AlertEvent(rule="sim-fast-ttfa-regression", target="sim-fast", kind="regression",
                      severity="warning", state=state, previous="inactive", value=0.52,
                      threshold=0.15, window="18s vs 14m", message="ttfa median 500 -> 760 ms",
                      started_at=1_800_000_000.0, at=1_800_000_010.0, agent="eu-west-1")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_webhook_payload(receiver, monkeypatch) -> None:
    monkeypatch.setenv("VP_TEST_HOOK", receiver.url("/hook/s3cret-token"))
    n = WebhookNotifier(NotifierSpec("webhook", "VP_TEST_HOOK",
                                     link="https://grafana.example/d/vp?var-target={target}"))
    n(event())
    path, body = receiver.get()
    n.close()
    assert path == "/hook/s3cret-token"
    assert set(body) == PAYLOAD_KEYS
    assert body["rule"] == "sim-fast-ttfa-regression" and body["state"] == "firing"
    assert body["value"] == 0.52 and body["threshold"] == 0.15 and body["window"] == "18s vs 14m"
    assert body["started_at"] == "2027-01-15T08:00:00Z"
    assert body["link"] == "https://grafana.example/d/vp?var-target=sim-fast"
    assert n.stats.sent == 1 and n.stats.failed == 0


def test_slack_payload(receiver, monkeypatch) -> None:
    monkeypatch.setenv("VP_TEST_SLACK", receiver.url("/services/T0/B0/xyz"))
    n = SlackNotifier(NotifierSpec("slack", "VP_TEST_SLACK"))
    n(event("resolved"))
    _, body = receiver.get()
    n.close()
    assert body["text"].startswith(":white_check_mark: [RESOLVED] sim-fast-ttfa-regression")
    att = body["attachments"][0]
    assert att["color"] == "#2eb886" and att["text"] == "ttfa median 500 -> 760 ms"
    assert {f["title"] for f in att["fields"]} == {"value", "threshold", "window", "agent"}


def test_pending_is_not_notified(receiver, monkeypatch) -> None:
    monkeypatch.setenv("VP_TEST_HOOK", receiver.url())
    n = WebhookNotifier(NotifierSpec("webhook", "VP_TEST_HOOK"))
    n(event("pending"))
    n(event("firing"))
    assert receiver.get()[1]["state"] == "firing"
    n.close()
    assert receiver.posts.empty()


def test_retry_then_deliver(monkeypatch) -> None:
    r = Receiver(fail_first=2, status=503)
    try:
        monkeypatch.setenv("VP_TEST_HOOK", r.url())
        n = WebhookNotifier(NotifierSpec("webhook", "VP_TEST_HOOK", retries=3, backoff_s=0.05))
        n(event())
        assert r.get()[1]["state"] == "firing"
        n.close()
        assert r.attempts == 3 and n.stats.retries == 2 and n.stats.sent == 1
    finally:
        r.close()


def test_dead_receiver_is_counted_and_url_never_logged(monkeypatch, caplog) -> None:
    r = Receiver()
    url = r.url("/hook/TOPSECRET")
    r.close()  # nobody listens there any more: connection refused
    monkeypatch.setenv("VP_TEST_HOOK", url)
    caplog.set_level(logging.DEBUG)
    n = build_notifiers([NotifierSpec("webhook", "VP_TEST_HOOK", retries=2, backoff_s=0.01,
                                      timeout_s=1.0)])[0]
    t0 = time.monotonic()
    n(event())  # returns at once: delivery is in the background
    assert time.monotonic() - t0 < 0.1
    n.close(timeout=5)
    assert n.stats.failed == 1 and n.stats.retries == 2 and n.stats.sent == 0
    assert "VP_TEST_HOOK" in caplog.text
    assert "TOPSECRET" not in caplog.text and str(r.port) not in caplog.text
