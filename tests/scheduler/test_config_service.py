"""The service sections of voicepulse.yaml: the issue's example works as written; every bad
value names the file and the key."""

from __future__ import annotations

import pytest
import yaml

from voicepulse.config import parse_config
from voicepulse.configkit import ConfigError

EXAMPLE = """
targets:
  sim-fast:
    url: ws://127.0.0.1:8765/v1/realtime
    model: sim-fast
agent: eu-west-1
probes:
  - target: sim-fast
    scenario: default
    every: 30s                  # or cron: "*/5 * * * *"
    jitter: 2s
slos:
  - name: sim-fast-availability
    target: sim-fast
    kind: availability          # a session succeeded
    objective: 99.5             # percent
    period: 30d
  - name: sim-fast-ttfa
    target: sim-fast
    kind: latency               # share of turns with ttfa_ms under the bound
    metric: ttfa_ms
    below_ms: 800
    objective: 95
    period: 30d
alerts:
  - name: sim-fast-ttfa-regression
    kind: regression
    target: sim-fast
    metric: ttfa_ms
    recent: 30m
    baseline: 24h
    min_effect: 15%
  - name: sim-fast-ttfa-p95
    kind: threshold
    target: sim-fast
    expr: ttfa_ms.p95 > 900
    over: 10m
    for: 2m
notifiers:
  - type: webhook
    url_env: ALERT_WEBHOOK_URL
  - type: slack
    url_env: SLACK_WEBHOOK_URL
time_scale: 1.0                 # < 1 shrinks every window and schedule, for demos and tests
"""


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/slack")


def parse(text: str):
    return parse_config(yaml.safe_load(text), "voicepulse.yaml")


def test_issue_example_as_written(env) -> None:
    svc = parse(EXAMPLE).service
    assert svc.agent == "eu-west-1" and svc.time_scale == 1.0
    (job,) = svc.probes
    assert (job.target, job.scenario, job.every_s, job.jitter_s, job.cron) == \
        ("sim-fast", "default", 30.0, 2.0, None)
    avail, lat = svc.slos
    assert avail.kind == "availability" and avail.objective == pytest.approx(0.995)
    assert avail.period_s == 30 * 86400
    assert lat.below_ms == 800 and lat.objective == pytest.approx(0.95)
    (reg,) = svc.regressions
    assert (reg.recent_s, reg.baseline_s, reg.min_effect) == (1800, 86400, pytest.approx(0.15))
    (thr,) = svc.thresholds
    assert (thr.metric, thr.stat, thr.op, thr.value, thr.over_s, thr.for_s) == \
        ("ttfa_ms", "p95", ">", 900, 600, 120)
    assert [n.type for n in svc.notifiers] == ["webhook", "slack"]
    assert svc.notifiers[0].url_env == "ALERT_WEBHOOK_URL"
    # the URL itself (a secret) is never kept in the config objects
    assert "127.0.0.1:9" not in repr(svc)


def test_no_service_sections() -> None:
    cfg = parse("targets: {a: {url: 'ws://127.0.0.1:1/x', model: m}}")
    assert cfg.service is None


@pytest.mark.parametrize(("edit", "key", "words"), [
    (("every: 30s", 'cron: "*/5 * * *"'), "probes[0].cron", "5-field crontab"),
    (("every: 30s", 'cron: "99 * * * *"'), "probes[0].cron", "crontab"),
    (("every: 30s", "every: soon"), "probes[0].every", "duration"),
    (("jitter: 2s", "jiter: 2s"), "probes[0].jiter", "unknown key"),
    (("  - target: sim-fast\n    scenario", "  - target: nope\n    scenario"),
     "probes[0].target", "no such target"),
    (("objective: 99.5", "objective: 100"), "slos[0].objective", "error budget"),
    (("expr: ttfa_ms.p95 > 900", "expr: ttfa_ms.p95 >> 900"), "alerts[1].expr", "metric.stat"),
    (("min_effect: 15%", "min_effect: lots"), "alerts[0].min_effect", "percentage"),
    (("kind: threshold", "kind: magic"), "alerts[1].kind", "threshold | regression"),
    (("time_scale: 1.0", "time_scale: -1"), "time_scale", "above zero"),
    (("type: slack", "type: pager"), "notifiers[1].type", "webhook | slack | log"),
])
def test_bad_values_name_file_and_key(env, edit, key, words) -> None:
    old, new = edit
    assert old in EXAMPLE
    with pytest.raises(ConfigError) as exc:
        parse(EXAMPLE.replace(old, new, 1))
    assert exc.value.file == "voicepulse.yaml" and exc.value.key == key, str(exc.value)
    assert words in str(exc.value) and str(exc.value).startswith(f"voicepulse.yaml: {key}: ")


def test_missing_webhook_env_var(env, monkeypatch) -> None:
    monkeypatch.delenv("ALERT_WEBHOOK_URL")
    with pytest.raises(ConfigError) as exc:
        parse(EXAMPLE)
    assert exc.value.key == "notifiers[0].url_env"
    assert "ALERT_WEBHOOK_URL is not set" in str(exc.value)


def test_status_and_service_keys(env) -> None:
    svc = parse(EXAMPLE + "status: {host: '::1', port: 0}\nservice: {evaluate_every: 5s, "
                          "workers: 2, shutdown_timeout: 3s}\n").service
    assert (svc.status_host, svc.status_port) == ("::1", 0)
    assert (svc.evaluate_every_s, svc.max_workers, svc.shutdown_timeout_s) == (5, 2, 3)
