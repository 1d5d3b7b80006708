"""The probe service's configuration as plain data: schedules, SLOs, alert rules, notifiers.

Built by voicepulse/config_service.py from the YAML file (scheduler cannot import voicepulse) or
by hand in tests and in `voicepulse demo`. Durations are seconds *as written*; `time_scale`
shrinks them all at use time (`ServiceConfig.scaled`), so a config reads like production and a
test runs a 30 d SLO in a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AVAILABILITY = "availability"
LATENCY = "latency"


@dataclass(slots=True)
class ProbeJob:
    """One scheduled probe: a target played with a scenario on an interval or a cron schedule."""

    target: str
    scenario: str = "default"
    every_s: float | None = None  # interval schedule; exactly one of every_s / cron is set
    cron: str | None = None  # 5-field crontab, e.g. "*/5 * * * *"
    jitter_s: float = 0.0  # non-negative: APScheduler only delays

    @property
    def job_id(self) -> str:
        return f"probe:{self.target}:{self.scenario}"


@dataclass(slots=True)
class BurnTier:
    """One multiwindow burn-rate alert: both windows must burn faster than `factor`."""

    name: str  # e.g. "page-1h"
    long_s: float
    short_s: float
    factor: float
    severity: str  # page | ticket


#: The SRE workbook's recommendation for a 30 d SLO (chapter 5, "multiwindow, multi-burn-rate").
DEFAULT_TIERS = (
    BurnTier("page-1h", 3600.0, 300.0, 14.4, "page"),
    BurnTier("page-6h", 6 * 3600.0, 1800.0, 6.0, "page"),
    BurnTier("ticket-3d", 3 * 86400.0, 6 * 3600.0, 1.0, "ticket"),
)


@dataclass(slots=True)
class Slo:
    """Availability (a session succeeded) or latency (a turn's metric under `below_ms`)."""

    name: str
    target: str
    kind: str  # availability | latency
    objective: float  # fraction, e.g. 0.995
    period_s: float = 30 * 86400.0
    metric: str = "ttfa_ms"
    below_ms: float | None = None
    tiers: tuple[BurnTier, ...] = DEFAULT_TIERS

    @property
    def budget(self) -> float:
        """The error budget as a ratio of bad events (1 - objective)."""
        return 1.0 - self.objective


@dataclass(slots=True)
class ThresholdRule:
    """`expr: ttfa_ms.p95 > 900` over a window, true for `for_s` before it fires."""

    name: str
    target: str
    metric: str  # a turn metric (ttfa_ms ...) or "error_rate" (failed sessions / sessions)
    stat: str  # p50 | p90 | p95 | p99 | mean | max | min | count | value (for error_rate)
    op: str  # > >= < <=
    value: float
    over_s: float = 600.0
    for_s: float = 0.0
    severity: str = "warning"
    min_samples: int = 1
    keep_firing_s: float = 0.0  # once firing, resolve only after being clear this long


@dataclass(slots=True)
class RegressionRule:
    """A recent window against a baseline: Mann-Whitney U p < p_max AND an effect >= min_effect."""

    name: str
    target: str
    metric: str = "ttfa_ms"
    recent_s: float = 1800.0
    baseline_s: float = 86400.0
    #: how far back the baseline ends; None = where the recent window starts (so the two touch).
    #: "same hour last week" is baseline_s = recent_s, baseline_end_ago_s = 7 d.
    baseline_end_ago_s: float | None = None
    min_effect: float = 0.15  # fraction: median or p95 grew by at least this much
    p_max: float = 0.01
    min_samples: int = 20  # in each window
    for_s: float = 0.0
    severity: str = "warning"
    keep_firing_s: float = 0.0  # once firing, resolve only after being clear this long


@dataclass(slots=True)
class NotifierSpec:
    """Where notifications go. The URL itself is never stored here: only its env var's name."""

    type: str  # webhook | slack | log
    url_env: str | None = None
    retries: int = 3
    timeout_s: float = 5.0
    backoff_s: float = 0.5
    link: str = ""  # template; {rule} {target} {severity} {state} are filled in
    on_resolved: bool = True


@dataclass(slots=True)
class StatusPage:
    """The status page at `/` (scheduler/status_page.py): cards over the last `runs` runs."""

    runs: int = 6  # N of "x / N runs" and of the last-runs percentiles
    public: bool = False  # cards only: no endpoints, schedule or service health
    refresh_s: float = 10.0  # how often the open page fetches page.json
    bar_span_s: float = 86400.0  # the time the 90-interval uptime bar covers
    title: str = "VoicePulse status"


@dataclass(slots=True)
class ServiceConfig:
    agent: str = "local"
    probes: list[ProbeJob] = field(default_factory=list)
    slos: list[Slo] = field(default_factory=list)
    thresholds: list[ThresholdRule] = field(default_factory=list)
    regressions: list[RegressionRule] = field(default_factory=list)
    notifiers: list[NotifierSpec] = field(default_factory=list)
    time_scale: float = 1.0
    evaluate_every_s: float = 30.0
    status_host: str = "127.0.0.1"
    status_port: int = 9108  # 0 picks a free port
    status_page: StatusPage = field(default_factory=StatusPage)
    max_workers: int = 8  # probes running at once across all targets
    probe_timeout_s: float | None = None  # None: the scenario's own session timeout
    shutdown_timeout_s: float = 10.0
    file: str = ""  # the config file it came from, for messages

    def scaled(self, seconds: float) -> float:
        """A window or schedule length after `time_scale`."""
        return seconds * self.time_scale
