"""Parses the probe-service sections of voicepulse.yaml: agent, probes, slos, alerts, notifiers,
time_scale, status and service (README.md ("Probe service and alerts") is the reference).

Every error names the file and the key (`voicepulse.yaml: probes[0].cron: ...`), so a bad
schedule or a missing webhook env var stops `serve` before anything starts.
"""

from __future__ import annotations

from probes.spec import Scenario, Target
from scheduler.config import (
    AVAILABILITY,
    LATENCY,
    BurnTier,
    NotifierSpec,
    ProbeJob,
    RegressionRule,
    ServiceConfig,
    Slo,
    StatusPage,
    ThresholdRule,
)
from scheduler.rules import parse_expr
from voicepulse.configkit import Section

SEVERITIES = ("page", "ticket", "critical", "warning", "info")
SERVICE_KEYS = ("agent", "probes", "slos", "alerts", "notifiers", "time_scale", "status",
                "service")


def parse_service(root: Section, targets: dict[str, Target],
                  scenarios: dict[str, Scenario]) -> ServiceConfig | None:
    """The ServiceConfig of a file, or None when it has none of probes, slos or alerts."""
    present = any(root.has(k) for k in ("probes", "slos", "alerts"))
    cfg = ServiceConfig(file=root.file)
    cfg.agent = root.str("agent", "local")
    cfg.time_scale = root.num("time_scale", 1.0, positive=True, max=1000)
    for s in root.sections("probes", []):
        cfg.probes.append(_probe(s, targets, scenarios))
    ids = [p.job_id for p in cfg.probes]
    for i, job_id in enumerate(ids):
        if job_id in ids[:i]:
            raise root.error(f"probes[{i}]", f"duplicate probe of {job_id.split(':', 1)[1]} "
                                             "(same target and scenario)")
    for s in root.sections("slos", []):
        cfg.slos.append(_slo(s, targets))
    for s in root.sections("alerts", []):
        kind = s.str("kind", choices=("threshold", "regression"))
        if kind == "threshold":
            cfg.thresholds.append(_threshold(s, targets))
        else:
            cfg.regressions.append(_regression(s, targets))
    names = [r.name for r in (*cfg.slos, *cfg.thresholds, *cfg.regressions)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise root.error("alerts" if i >= len(cfg.slos) else "slos",
                             f"duplicate rule name {name!r}")
    for s in root.sections("notifiers", []):
        cfg.notifiers.append(_notifier(s))
    st = root.section("status", {})
    cfg.status_host = st.str("host", cfg.status_host)
    cfg.status_port = st.int("port", cfg.status_port, min=0, max=65535)
    cfg.status_page = _status_page(st.section("page", {}))
    st.done()
    sv = root.section("service", {})
    cfg.evaluate_every_s = sv.duration("evaluate_every", cfg.evaluate_every_s)
    cfg.max_workers = sv.int("workers", cfg.max_workers, min=1, max=256)
    cfg.shutdown_timeout_s = sv.duration("shutdown_timeout", cfg.shutdown_timeout_s)
    sv.done()
    return cfg if present else None


def _status_page(s: Section) -> StatusPage:
    """`status.page`: the cards' N runs, `public` (cards only), refresh and bar span."""
    page = StatusPage()
    page.runs = s.int("runs", page.runs, min=1, max=1000)
    page.public = s.bool("public", page.public)
    page.refresh_s = s.duration("refresh", page.refresh_s)
    if page.refresh_s < 1:
        raise s.error("refresh", "expected a duration of at least 1s")
    page.bar_span_s = s.duration("bar_span", page.bar_span_s)
    if page.bar_span_s < 90:
        raise s.error("bar_span", "expected at least 90s (the bar has 90 intervals)")
    page.title = s.str("title", page.title)
    s.done()
    return page


def _known(s: Section, key: str, name: str, known: dict, what: str) -> None:
    if name not in known:
        raise s.error(key, f"no such {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})")


def _probe(s: Section, targets: dict, scenarios: dict) -> ProbeJob:
    target = s.str("target")
    _known(s, "target", target, targets, "target")
    scenario = s.str("scenario", "default")
    if scenario != "default" or scenarios:
        _known(s, "scenario", scenario, scenarios or {"default": None}, "scenario")
    job = ProbeJob(target=target, scenario=scenario)
    if s.has("every") == s.has("cron"):
        raise s.error(None, "expected exactly one of `every` (e.g. 30s) or `cron` "
                            "(e.g. \"*/5 * * * *\")")
    if s.has("every"):
        job.every_s = s.duration("every")
    else:
        job.cron = s.str("cron")
        try:
            from apscheduler.triggers.cron import CronTrigger

            if len(job.cron.split()) != 5:
                raise ValueError("expected 5 fields")
            CronTrigger.from_crontab(job.cron, timezone="UTC")
        except ValueError as exc:
            raise s.error("cron", f"expected a 5-field crontab like \"*/5 * * * *\", got "
                                  f"{job.cron!r} ({exc})") from None
    job.jitter_s = s.duration("jitter", 0.0, positive=False)
    if job.jitter_s < 0:
        raise s.error("jitter", "expected a duration of zero or more")
    s.done()
    return job


def _severity(s: Section, default: str) -> str:
    return s.str("severity", default, choices=SEVERITIES)


def _slo(s: Section, targets: dict) -> Slo:
    name = s.str("name")
    target = s.str("target")
    _known(s, "target", target, targets, "target")
    kind = s.str("kind", choices=(AVAILABILITY, LATENCY))
    objective = s.percent("objective")
    if not 0 < objective < 1:
        raise s.error("objective", "expected a percentage above 0 and below 100 (100 % leaves "
                                   "no error budget to burn)")
    slo = Slo(name=name, target=target, kind=kind, objective=objective,
              period_s=s.duration("period", 30 * 86400.0))
    if kind == LATENCY:
        slo.metric = s.str("metric", "ttfa_ms")
        slo.below_ms = s.num("below_ms", positive=True)
    if s.has("burn_alerts"):
        tiers = []
        for t in s.sections("burn_alerts"):
            tiers.append(BurnTier(t.str("name"), t.duration("long"), t.duration("short"),
                                  t.num("factor", positive=True), _severity(t, "page")))
            t.done()
        slo.tiers = tuple(tiers)
    s.done()
    return slo


def _threshold(s: Section, targets: dict) -> ThresholdRule:
    name = s.str("name")
    target = s.str("target")
    _known(s, "target", target, targets, "target")
    expr = s.str("expr")
    try:
        metric, stat, op, value = parse_expr(expr)
    except ValueError as exc:
        raise s.error("expr", f"{exc}, got {expr!r}") from None
    rule = ThresholdRule(name=name, target=target, metric=metric, stat=stat, op=op, value=value,
                         over_s=s.duration("over", 600.0), for_s=s.duration("for", 0.0,
                                                                             positive=False),
                         severity=_severity(s, "warning"),
                         min_samples=s.int("min_samples", 1, min=1),
                         keep_firing_s=s.duration("keep_firing_for", 0.0, positive=False))
    s.done()
    return rule


def _regression(s: Section, targets: dict) -> RegressionRule:
    name = s.str("name")
    target = s.str("target")
    _known(s, "target", target, targets, "target")
    rule = RegressionRule(
        name=name, target=target,
        metric=s.str("metric", "ttfa_ms"),
        recent_s=s.duration("recent", 1800.0),
        baseline_s=s.duration("baseline", 86400.0),
        baseline_end_ago_s=s.duration("baseline_ends_ago", None),
        min_effect=s.percent("min_effect", 0.15),
        p_max=s.num("p_value", 0.01, positive=True, max=0.5),
        min_samples=s.int("min_samples", 20, min=3),
        for_s=s.duration("for", 0.0, positive=False),
        severity=_severity(s, "warning"),
        keep_firing_s=s.duration("keep_firing_for", 0.0, positive=False),
    )
    if rule.baseline_end_ago_s is not None and rule.baseline_end_ago_s < rule.recent_s:
        raise s.error("baseline_ends_ago", "expected at least the `recent` window, so the "
                                           "baseline does not overlap it")
    s.done()
    return rule


def _notifier(s: Section) -> NotifierSpec:
    kind = s.str("type", choices=("webhook", "slack", "log"))
    spec = NotifierSpec(type=kind)
    if kind in ("webhook", "slack"):
        spec.url_env = s.env_name("url_env", must_exist=True)
    spec.retries = s.int("retries", spec.retries, min=0, max=20)
    spec.timeout_s = s.duration("timeout", spec.timeout_s)
    spec.backoff_s = s.duration("backoff", spec.backoff_s)
    spec.link = s.str("link", "")
    spec.on_resolved = s.bool("send_resolved", True)
    s.done()
    return spec
