"""Prometheus text rendering of a /status document (pure), and the endpoint's routes."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from scheduler.status_http import StatusServer, prometheus_text

DOC = {
    "agent": "eu-west-1",
    "targets": {"probe:a:default": {
        "target": 'a"b', "scenario": "default", "runs": 7, "ok": 6, "skips": 2,
        "last": {"at": 1.5e9, "outcome": "http_503", "ttfa_ms": None},
        "last_hour": {"success_ratio": 0.857, "ttfa_p50_ms": 400.0, "ttfa_p95_ms": None}}},
    "alerts": [{"rule": "r1", "target": "a", "severity": "page", "state": "firing"},
               {"rule": "r2", "target": "a", "severity": "warning", "state": "pending"}],
    "engine": {"evaluations": 3, "rule_errors": 0},
    "notifiers": [{"name": "webhook(HOOK)", "sent": 1, "failed": 2}],
    "outbox": {"pending": 5, "delivered": 10, "dropped": 0},
    "write_errors": 0,
}


def test_prometheus_text() -> None:
    text = prometheus_text(DOC)
    lines = text.splitlines()
    assert 'voicepulse_probe_runs_total{agent="eu-west-1",target="a\\"b",scenario="default"} 7' \
        in lines
    assert 'voicepulse_probe_last_success{agent="eu-west-1",target="a\\"b",' \
           'scenario="default"} 0' in lines
    assert not any(line.startswith("voicepulse_probe_last_ttfa_ms{") for line in lines)
    assert 'voicepulse_alert_firing{rule="r1",target="a",severity="page"} 1' in lines
    assert 'voicepulse_alert_firing{rule="r2",target="a",severity="warning"} 0' in lines
    assert 'voicepulse_notifications_failed_total{notifier="webhook(HOOK)"} 2' in lines
    assert 'voicepulse_outbox{stat="pending"} 5' in lines
    for line in lines:  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_routes(host) -> None:
    srv = StatusServer(lambda: DOC, host, 0).start()
    try:
        with urllib.request.urlopen(srv.url + "/healthz", timeout=5) as r:
            assert r.read() == b"ok\n"
        with urllib.request.urlopen(srv.url + "/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(srv.url + "/nope", timeout=5)
        assert exc.value.code == 404
    finally:
        srv.stop()
