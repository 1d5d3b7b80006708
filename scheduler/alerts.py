"""The alert engine: evaluates every rule against the store and keeps one state per rule+target.

States: inactive -> pending (condition true, `for` not yet elapsed) -> firing -> resolved ->
inactive. A rule with no `for` goes straight to firing. Every change becomes an `AlertEvent`,
handed to the listeners (the service writes it as an `alert` point) and, for firing and
resolved, to the notifiers. A rule that cannot be evaluated (no data, a store error) keeps its
state: an outage of the store must not resolve a real alert, nor raise a false one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from scheduler.config import RegressionRule, ServiceConfig, Slo, ThresholdRule
from scheduler.rules import (
    Verdict,
    evaluate_burn,
    evaluate_regression,
    evaluate_threshold,
    human,
)
from scheduler.source import AlertSource
from scheduler.triggers import job_interval_s

log = logging.getLogger("voicepulse.alerts")

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.I)
_QUERY = re.compile(r"\?[^\s'\")]*")


def scrub(text: str) -> str:
    """An error text safe to log and show: no credentials in URLs, no query strings (tokens
    travel there)."""
    return _QUERY.sub("?...", _USERINFO.sub(r"\1", text))


@dataclass(slots=True)
class Rule:
    """One evaluable rule (an SLO yields one per burn tier)."""

    name: str
    target: str
    kind: str  # burn | threshold | regression
    severity: str
    for_s: float
    evaluate: Callable[[AlertSource, float], Verdict]
    keep_firing_s: float = 0.0  # a firing alert resolves only after being clear this long


@dataclass(slots=True)
class AlertState:
    rule: str
    target: str
    kind: str
    severity: str
    state: str = INACTIVE
    since: float = 0.0  # when the current state began (epoch s)
    started_at: float | None = None  # when the condition first held (pending or firing)
    value: float | None = None
    threshold: float | None = None
    window: str = ""
    message: str = ""
    last_eval: float = 0.0
    error: str = ""
    clear_since: float | None = None  # firing, but the condition has been false since

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.target)


@dataclass(slots=True)
class AlertEvent:
    """One state change, as written to the store and sent to notifiers."""

    rule: str
    target: str
    kind: str
    severity: str
    state: str  # pending | firing | resolved
    previous: str
    value: float | None
    threshold: float | None
    window: str
    message: str
    started_at: float | None
    at: float
    agent: str = ""


def window_floors(cfg: ServiceConfig) -> dict[str, float]:
    """Per target, the shortest window worth judging: two probe intervals plus the time a probe
    takes to land (one more interval, as a bound). A session is stored under its start time but
    written when it ends, so a window shorter than that would only ever hold the fast failures,
    never the slower successes. Matters only when `time_scale` shrinks windows (with the
    defaults, 5 m against a 30 s schedule, the floor never applies)."""
    floors: dict[str, float] = {}
    for job in cfg.probes:
        gap = 3 * job_interval_s(job, cfg.time_scale)
        floors[job.target] = min(floors.get(job.target, gap), gap)
    return floors


def build_rules(cfg: ServiceConfig) -> list[Rule]:
    """Expand the config into evaluable rules; `time_scale` shrinks every window and `for`."""
    scale = cfg.time_scale
    floors = window_floors(cfg)
    rules: list[Rule] = []
    for slo in cfg.slos:
        for tier in slo.tiers:
            rules.append(Rule(f"{slo.name}:{tier.name}", slo.target, "burn", tier.severity, 0.0,
                              _burn(slo, tier, scale, floors.get(slo.target, 0.0))))
    for t in cfg.thresholds:
        rules.append(Rule(t.name, t.target, "threshold", t.severity, t.for_s * scale,
                          _threshold(t, scale, floors.get(t.target, 0.0)),
                          t.keep_firing_s * scale))
    for r in cfg.regressions:
        rules.append(Rule(r.name, r.target, "regression", r.severity, r.for_s * scale,
                          _regression(r, scale), r.keep_firing_s * scale))
    return rules


def _burn(slo: Slo, tier, scale: float, floor_s: float):
    return lambda source, now: evaluate_burn(slo, tier, source, now, scale, floor_s)


def _threshold(rule: ThresholdRule, scale: float, floor_s: float):
    return lambda source, now: evaluate_threshold(rule, source, now, scale, floor_s)


def _regression(rule: RegressionRule, scale: float):
    return lambda source, now: evaluate_regression(rule, source, now, scale)


@dataclass
class EngineStats:
    evaluations: int = 0
    rule_errors: int = 0
    events: int = 0
    listener_errors: int = 0
    last_eval_at: float = 0.0
    last_eval_ms: float = 0.0


class AlertEngine:
    """Evaluate with `evaluate()` (thread-safe); read with `states()` and `firing()`."""

    def __init__(self, rules: Iterable[Rule], source: AlertSource, *, agent: str = "",
                 listeners: Iterable[Callable[[AlertEvent], None]] = (),
                 clock: Callable[[], float] = time.time):
        self.source = source
        self.agent = agent
        self.listeners = list(listeners)
        self.clock = clock
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._states: dict[tuple[str, str], AlertState] = {}
        self.set_rules(rules)

    @classmethod
    def from_config(cls, cfg: ServiceConfig, source: AlertSource, **kwargs) -> AlertEngine:
        return cls(build_rules(cfg), source, agent=cfg.agent, **kwargs)

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rule set (config reload). States of rules that remain are kept."""
        with self._lock:
            self._rules = list(rules)
            keep = {(r.name, r.target) for r in self._rules}
            self._states = {k: s for k, s in self._states.items() if k in keep}
            for r in self._rules:
                self._states.setdefault((r.name, r.target),
                                        AlertState(r.name, r.target, r.kind, r.severity))

    def restore(self, saved: dict[str, dict]) -> list[dict]:
        """Take back pending/firing states a previous process left (scheduler/ledger.py), so an
        alert that was firing when the service was killed or restarted still resolves (one
        `resolved` event when the condition is found false) instead of staying firing in the
        store forever. Only for rules still configured; returns the states taken back."""
        taken: list[dict] = []
        with self._lock:
            for doc in saved.values():
                s = self._states.get((doc.get("rule"), doc.get("target")))
                if s is None or s.state != INACTIVE or doc.get("state") not in (PENDING, FIRING):
                    continue
                s.state, s.since = doc["state"], float(doc.get("since") or 0.0)
                s.started_at = doc.get("started_at")
                s.value, s.threshold = doc.get("value"), doc.get("threshold")
                s.window, s.message = doc.get("window") or "", doc.get("message") or ""
                taken.append(doc)
        return taken

    def states(self) -> list[AlertState]:
        with self._lock:
            return [AlertState(**{f: getattr(s, f) for f in s.__slots__})
                    for s in self._states.values()]

    def firing(self) -> list[AlertState]:
        return [s for s in self.states() if s.state == FIRING]

    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """Evaluate every rule once; returns (and dispatches) the state changes."""
        t0 = time.perf_counter()
        now = self.clock() if now is None else now
        events: list[AlertEvent] = []
        with self._lock:
            for rule in self._rules:
                state = self._states[(rule.name, rule.target)]
                try:
                    verdict = rule.evaluate(self.source, now)
                    state.error = ""
                except Exception as exc:  # a store error keeps the state as it is
                    self.stats.rule_errors += 1
                    state.error = scrub(f"{type(exc).__name__}: {exc}")[:200]
                    log.warning("alert rule %s/%s: evaluation failed: %s", rule.name,
                                rule.target, state.error)
                    continue
                state.last_eval = now
                event = self._step(rule, state, verdict, now)
                if event:
                    events.append(event)
            self.stats.evaluations += 1
            self.stats.events += len(events)
            self.stats.last_eval_at = now
            self.stats.last_eval_ms = (time.perf_counter() - t0) * 1000
        for event in events:
            self._dispatch(event)
        return events

    def _step(self, rule: Rule, s: AlertState, v: Verdict, now: float) -> AlertEvent | None:
        if v.value is not None:
            s.value, s.threshold, s.window = v.value, v.threshold, v.window
        s.message = v.message
        if v.breach is None:
            return None
        previous = s.state
        if v.breach:
            s.clear_since = None
        elif s.state == FIRING and rule.keep_firing_s > 0:
            s.clear_since = now if s.clear_since is None else s.clear_since
            if now - s.clear_since < rule.keep_firing_s:
                return None  # hysteresis: a noisy condition must not flap
        if v.breach:
            if s.state in (INACTIVE, RESOLVED):
                s.started_at = now
                new = FIRING if rule.for_s <= 0 else PENDING
            elif s.state == PENDING and now - (s.started_at or now) >= rule.for_s:
                new = FIRING
            else:
                return None
        else:
            if s.state in (PENDING, FIRING):
                new = RESOLVED
            elif s.state == RESOLVED:
                s.state, s.since = INACTIVE, now  # quiet transition, no event
                return None
            else:
                return None
        s.state, s.since, s.clear_since = new, now, None
        s.threshold = v.threshold
        s.window = v.window
        if v.value is not None:
            s.value = v.value
        return AlertEvent(rule=s.rule, target=s.target, kind=s.kind, severity=s.severity,
                          state=new, previous=previous, value=s.value, threshold=s.threshold,
                          window=s.window, message=v.message, started_at=s.started_at, at=now,
                          agent=self.agent)

    def _dispatch(self, event: AlertEvent) -> None:
        log.info("alert %s %s/%s: %s", event.state, event.rule, event.target, event.message)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener (store, notifier) must never stop the engine
                self.stats.listener_errors += 1
                log.exception("alert listener failed")


@dataclass
class CheckRow:
    rule: str
    target: str
    severity: str
    state: str
    value: float | None
    threshold: float | None
    window: str
    message: str = field(default="")


def check_once(cfg: ServiceConfig, source: AlertSource, now: float | None = None) -> list[CheckRow]:
    """Evaluate every rule once with no history: a true condition counts as firing right away
    (the `for` duration cannot be known without the service's memory). For `alerts check`."""
    rules = build_rules(cfg)
    for r in rules:
        r.for_s = 0.0
    engine = AlertEngine(rules, source, agent=cfg.agent)
    engine.evaluate(now)
    return [CheckRow(s.rule, s.target, s.severity,
                     s.state if s.state != INACTIVE or not s.error else "error",
                     s.value, s.threshold, s.window, s.error or s.message)
            for s in engine.states()]


__all__ = ["AlertEngine", "AlertEvent", "AlertState", "Rule", "build_rules", "check_once",
           "human", "INACTIVE", "PENDING", "FIRING", "RESOLVED"]
