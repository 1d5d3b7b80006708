"""The probe service: scheduled probes on APScheduler, results into telemetry, alerts from the
store.

One `BackgroundScheduler` runs every probe job (interval or cron, with jitter, `max_instances=1`,
`coalesce`, misfire grace about the interval) on a bounded thread pool, plus one job that
evaluates the alert rules. A probe that finds the previous probe of the same target still
running is skipped and the skip is counted and stored (a `schedule` point), never stacked.

Scripted scenarios go through the same engine call. A long call (a `repeat` until the
provider's session limit) can run for an hour, so it runs beside its target's other probes
instead of holding their turn, and shutdown aborts it at once instead of waiting for it.

    svc = ProbeService(cfg, targets, scenarios, recorder, source)
    svc.start(); ...; svc.status(); svc.stop(timeout=10)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from probes.results import SessionResult
from probes.spec import Scenario, Target
from scheduler.alerts import AlertEngine, AlertEvent, build_rules
from scheduler.config import ProbeJob, ServiceConfig
from scheduler.ledger import Ledger, as_datetime
from scheduler.memory import COLLECT_EVERY_S, Collector, tune_malloc
from scheduler.notifiers import Notifier, build_notifiers, close_all
from scheduler.points import alert_point, schedule_point
from scheduler.source import AlertSource, MemorySource
from scheduler.triggers import job_interval_s, make_trigger
from telemetry.stats import percentile

log = logging.getLogger("voicepulse.service")

EVAL_JOB = "alerts:evaluate"
GC_JOB = "memory:collect"
ABORTED = ("stopped",)  # probes.session's outcome when its `stop` event cut it short
LATENESS_KEEP = 20000
MAX_COALESCED = 10000  # `missed` points written for one late wake-up, at most


def default_runner(target: Target, scenario: Scenario, **kwargs) -> SessionResult:
    from probes.session import run_session

    return run_session(target, scenario, **kwargs)


def is_long_call(scenario: Scenario | None) -> bool:
    """A scripted scenario that talks until the session limit (its repeat's `max`, up to an
    hour): its runs are far longer than any probe interval or shutdown bound."""
    script = getattr(scenario, "script", None)
    return script is not None and script.longest_s() > 0


def scenario_summary(result: SessionResult) -> dict:
    """What a scripted session's last run showed, for /status: failed checks by name, WER and
    the scenario timings. Names and numbers only: notes and transcripts stay in the store."""
    failed = sorted({f"{t.index}:{name}" for t in result.turns
                     for name, passed in t.checks.items() if not passed})
    checks = sum(len(t.checks) for t in result.turns)
    wers = [t.wer for t in result.turns if t.wer is not None]

    def first(metric: str) -> float | None:
        vals = [getattr(t, metric) for t in result.turns if getattr(t, metric) is not None]
        return round(vals[0], 3) if vals else None

    return {"turns": len(result.turns), "checks": checks,
            "checks_failed": len(failed) if checks else None, "failed_checks": failed,
            "wer": round(sum(wers) / len(wers), 4) if wers else None,
            "tool_ms": first("tool_ms"), "tool_result_ms": first("tool_result_ms"),
            "barge_in_ms": first("barge_in_ms"),
            "ended_by": result.ended_by or None,
            "expiry_s": None if result.expiry_s is None else round(result.expiry_s, 3)}


@dataclass
class TargetState:
    """What the service knows of one probe job, for /status and /metrics."""

    target: str
    scenario: str
    runs: int = 0
    ok: int = 0
    skips: int = 0
    missed: int = 0
    aborted: int = 0
    running: int = 0
    max_running: int = 0
    running_since: float | None = None  # start of the run in progress (a long call's hour)
    last: dict | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    lateness_ms: deque = field(default_factory=lambda: deque(maxlen=LATENESS_KEEP))
    dispatch_ms: deque = field(default_factory=lambda: deque(maxlen=LATENESS_KEEP))


class ProbeService:
    def __init__(self, cfg: ServiceConfig, targets: dict[str, Target],
                 scenarios: dict[str, Scenario], recorder=None, source: AlertSource | None = None,
                 *, runner: Callable[..., SessionResult] | None = None,
                 notifiers: list[Notifier] | None = None,
                 extra_listeners: list[Callable[[AlertEvent], None]] | None = None,
                 ledger: str | None = None):
        self.cfg = cfg
        self.targets = dict(targets)
        self.scenarios = dict(scenarios)
        self.recorder = recorder
        self.memory = MemorySource() if source is None else None
        self.source: AlertSource = source if source is not None else self.memory
        self.runner = runner or default_runner
        self.notifiers = notifiers if notifiers is not None else build_notifiers(cfg.notifiers)
        self._extra_listeners = list(extra_listeners or [])
        self.engine = AlertEngine.from_config(cfg, self.source, listeners=self._listeners())
        self.write_errors = 0
        self.started_at: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._aborts: dict[str, threading.Event] = {}  # job id -> the running probe's stop
        self._target_locks: dict[str, threading.Lock] = {}
        self._jobs: dict[str, ProbeJob] = {}
        self._state: dict[str, TargetState] = {}
        self._pairs: dict[str, dict] = {}
        self._running = 0
        self._idle = threading.Condition(self._lock)
        self.scheduler: BackgroundScheduler | None = None
        self.malloc: dict | None = None
        self.collector = Collector()
        # scheduler/ledger.py: gaps left by a killed process are explained at the next start
        self.ledger = Ledger(ledger) if ledger else None
        self._next_fire: dict[str, tuple[float, float]] = {}  # job id -> (interval, next fire)
        self._last_fire: dict[str, float] = {}  # job id -> its latest fire time on this grid

    # -- lifecycle -----------------------------------------------------------------------------
    def _listeners(self) -> list[Callable[[AlertEvent], None]]:
        return [self._write_alert, *self.notifiers, *self._extra_listeners]

    def start(self) -> ProbeService:
        if self.cfg.regressions:
            # importing scipy.stats takes ~0.3 s of CPU with the GIL held: do it before the
            # first probe, not in the middle of the schedule (it showed as 400 ms lateness)
            import scipy.stats  # noqa: F401
        # RSS otherwise grew ~9 MB/min while the Python heap stayed flat: see memory.py
        self.malloc = tune_malloc()  # before the first probe thread
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=self.cfg.max_workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES
                                    | EVENT_JOB_MISSED)
        self._recover()
        self._add_jobs()
        self.scheduler.add_job(self.collector, IntervalTrigger(seconds=COLLECT_EVERY_S), id=GC_JOB,
                               name=GC_JOB, misfire_grace_time=int(COLLECT_EVERY_S),
                               max_instances=1, coalesce=True, replace_existing=True)
        self.started_at = time.time()
        self.scheduler.start()
        log.info("probe service started: %d probe jobs, %d alert rules, agent %s",
                 len(self._jobs), len(self.engine._rules), self.cfg.agent)
        return self

    def _recover(self) -> None:
        """The previous process's unexplained gaps as `schedule` points, and its grid."""
        if self.ledger is None:
            return
        records, self._next_fire = self.ledger.recover(time.time())
        taken = self.engine.restore(self.ledger.saved_alerts())
        for doc in taken:  # pending/firing here too, until resolved
            self.ledger.alert(doc["rule"], doc["target"], {k: v for k, v in doc.items()
                                                            if k not in ("rule", "target")})
        if taken:
            log.info("%d alert state(s) taken back from the previous process", len(taken))
        if records:
            log.warning("the previous service process did not stop cleanly: %d schedule gap "
                        "record(s) written (killed, down)", len(records))
        self._write([schedule_point(target, scenario, self.cfg.agent, event, at, count=count)
                     for target, scenario, event, at, count in records])

    def _add_jobs(self, keep: dict[str, tuple[ProbeJob, object]] | None = None) -> None:
        """Add the config's probe jobs. A job whose schedule is unchanged keeps its fire times:
        across a reload (`keep`: job id -> (old job, its next run time)) and across a restart
        (the ledger's grid), so neither leaves a silent partial interval."""
        scale = self.cfg.time_scale
        for job in self.cfg.probes:
            interval = job_interval_s(job, scale)
            self._jobs[job.job_id] = job
            self._state.setdefault(job.job_id, TargetState(job.target, job.scenario))
            extra = {}
            old = (keep or {}).get(job.job_id)
            grid = self._next_fire.pop(job.job_id, None)
            if old is not None and old[1] is not None and (
                    old[0].every_s, old[0].cron, old[0].jitter_s) == (
                    job.every_s, job.cron, job.jitter_s):
                extra["next_run_time"] = old[1]
            elif grid is not None and not job.cron and abs(grid[0] - interval) < 1e-6:
                extra["next_run_time"] = as_datetime(grid[1])
            if "next_run_time" not in extra or old is None:
                self._last_fire.pop(job.job_id, None)  # a new grid (or a restart's first fire)
            if self.ledger is not None:
                self.ledger.track(job.job_id, job.target, job.scenario,
                                  None if job.cron else interval)
            self.scheduler.add_job(
                self._probe, make_trigger(job, scale), args=(job.job_id,), id=job.job_id,
                name=job.job_id, misfire_grace_time=max(1, int(round(interval))),
                max_instances=1, coalesce=True, replace_existing=True, **extra,
            )
        if self.engine._rules:
            every = max(0.2, self.cfg.evaluate_every_s * scale)
            self.scheduler.add_job(self.evaluate, IntervalTrigger(seconds=every), id=EVAL_JOB,
                                   name=EVAL_JOB, misfire_grace_time=max(1, int(every)),
                                   max_instances=1, coalesce=True, replace_existing=True)

    def reload(self, cfg: ServiceConfig, targets: dict[str, Target],
               scenarios: dict[str, Scenario]) -> None:
        """Swap in a new (already validated) config; alert states of kept rules survive."""
        old_notifiers = self.notifiers
        with self._lock:
            self.cfg, self.targets, self.scenarios = cfg, dict(targets), dict(scenarios)
        self.notifiers = build_notifiers(cfg.notifiers)
        self.engine.listeners = self._listeners()
        self.engine.agent = cfg.agent
        self.engine.set_rules(build_rules(cfg))
        if self.scheduler is not None:
            keep: dict[str, tuple[ProbeJob, object]] = {}
            for job_id in list(self._jobs):
                if (old := self.scheduler.get_job(job_id)) is not None:
                    keep[job_id] = (self._jobs[job_id], old.next_run_time)
                    self.scheduler.remove_job(job_id)
            if self.scheduler.get_job(EVAL_JOB):
                self.scheduler.remove_job(EVAL_JOB)
            self._jobs.clear()
            self._add_jobs(keep)
        close_all(old_notifiers, timeout=2.0)
        log.info("config reloaded: %d probe jobs, %d alert rules", len(self._jobs),
                 len(self.engine._rules))

    def stop(self, timeout: float | None = None, *, close_recorder: bool = True) -> bool:
        """Stop scheduling, let running probes finish (aborting them at `timeout`), flush.

        Returns True when every probe ended within the bound."""
        timeout = self.cfg.shutdown_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        grace = deadline - min(2.0, timeout / 2)
        self._abort(long_calls_only=True)  # they would not end within any bound: no waiting
        clean = self._wait_idle(grace)
        if not clean:
            log.warning("stopping: aborting %d running probe(s)", self._running)
            self._abort()
            clean = self._wait_idle(deadline)
        self._abort()
        close_all(self.notifiers, timeout=max(0.5, min(3.0, deadline - time.monotonic())))
        if self.ledger is not None:
            self.ledger.stopped()  # probes abandoned past the bound stay `running` (killed)
        if self.recorder is not None and close_recorder:
            self.recorder.close(timeout=max(1.0, deadline - time.monotonic()))
        return clean

    def _abort(self, long_calls_only: bool = False) -> None:
        """Stop running probes (each has its own stop event); without `long_calls_only`, also
        every probe that starts from now on."""
        with self._lock:
            if not long_calls_only:
                self._stop.set()
            events = [ev for job_id, ev in self._aborts.items() if not long_calls_only
                      or is_long_call(self.scenarios.get(self._jobs[job_id].scenario)
                                      if job_id in self._jobs else None)]
        for ev in events:
            ev.set()

    def _lock_key(self, job: ProbeJob) -> str:
        """Probes of one target take turns, so one probe's traffic never skews another's
        numbers; a long call would hold that turn for up to an hour, so it takes its own."""
        return job.job_id if is_long_call(self.scenarios.get(job.scenario)) else job.target

    def _wait_idle(self, deadline: float) -> bool:
        with self._idle:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- probes --------------------------------------------------------------------------------
    def _on_event(self, event: JobEvent) -> None:
        job = self._jobs.get(event.job_id)
        if job is None:
            return
        times = [t.timestamp() for t in getattr(event, "scheduled_run_times", None)
                 or [event.scheduled_run_time]]
        if self.ledger is not None:
            self.ledger.fired(event.job_id, times[-1])
        self._coalesced(job, times)
        if event.code == EVENT_JOB_SUBMITTED:
            scheduled = times[-1]
            st = self._state.get(event.job_id)
            if st is not None:  # the scheduler thread's own lag (before the pool picks it up)
                st.dispatch_ms.append((time.time() - scheduled) * 1000)
            self._pair(event.job_id, scheduled=scheduled)
            return
        kind = "skip" if event.code == EVENT_JOB_MAX_INSTANCES else "missed"
        for at in times:
            self._count_skip(job, kind, at)

    def _coalesced(self, job: ProbeJob, times: list[float]) -> None:
        """Fire times APScheduler dropped without an event: woken late (a paused or starved
        process, a suspended machine) it finds several due and, with `coalesce`, submits only
        the last. Each grid point between the previous fire and this one is stored `missed`."""
        with self._lock:
            prev = self._last_fire.get(job.job_id)
            self._last_fire[job.job_id] = max(times[-1], prev or times[-1])
        if prev is None or not job.every_s:
            return
        every = job_interval_s(job, self.cfg.time_scale)
        at, n = prev + every, 0
        while at < times[0] - every / 2 and n < MAX_COALESCED:
            self._count_skip(job, "missed", at)
            at, n = at + every, n + 1

    def _count_skip(self, job: ProbeJob, kind: str, at: float | None = None) -> None:
        with self._lock:
            st = self._state[job.job_id]
            if kind == "skip":
                st.skips += 1
            else:
                st.missed += 1
        log.info("probe %s %s: the previous run is still going", job.job_id, kind)
        self._write([schedule_point(job.target, job.scenario, self.cfg.agent, kind,
                                    time.time() if at is None else at)])

    def _pair(self, job_id: str, *, scheduled: float | None = None,
              started: float | None = None) -> None:
        """Match a run's scheduled time (from the scheduler thread) with its start time (from
        the pool thread), whichever arrives first; lateness excludes jitter, because the
        scheduled time APScheduler reports already includes it."""
        with self._lock:
            slot = self._pairs.setdefault(job_id, {})
            if scheduled is not None:
                slot["scheduled"] = scheduled
            if started is not None:
                slot["started"] = started
            if "scheduled" not in slot or "started" not in slot:
                return
            del self._pairs[job_id]
            lateness = (slot["started"] - slot["scheduled"]) * 1000
            st = self._state.get(job_id)
            if st is not None:
                st.lateness_ms.append(lateness)
        job = self._jobs.get(job_id)
        if job:
            self._write([schedule_point(job.target, job.scenario, self.cfg.agent, "run",
                                        slot["scheduled"], lateness_ms=lateness)])

    def _probe(self, job_id: str) -> None:
        started = time.time()
        self._pair(job_id, started=started)
        job = self._jobs.get(job_id)
        if job is None:
            return
        if self._stop.is_set():  # fired as the shutdown began: say so, never a silent hole
            self._write([schedule_point(job.target, job.scenario, self.cfg.agent, "shutdown",
                                        started)])
            return
        with self._lock:
            lock = self._target_locks.setdefault(self._lock_key(job), threading.Lock())
        if not lock.acquire(blocking=False):  # another scenario of this target is running
            self._count_skip(job, "skip")
            return
        abort = threading.Event()
        with self._lock:
            self._running += 1
            st = self._state[job_id]
            st.running += 1
            st.max_running = max(st.max_running, st.running)
            st.running_since = started
            self._aborts[job_id] = abort
            target, scenario = self.targets[job.target], self.scenarios[job.scenario]
        if self._stop.is_set():  # stop() began between the check above and now
            abort.set()
        if self.ledger is not None:
            self.ledger.started(job_id, started)
        try:
            result = self.runner(target, scenario, kind="probe", agent=self.cfg.agent,
                                 stop=abort)
            if abort.is_set() and result.outcome in ABORTED:
                # our own shutdown cut it short: not a measurement of the target, so it must
                # not count against availability; stored as a `schedule` event instead
                with self._lock:
                    self._state[job_id].aborted += 1
                self._write([schedule_point(job.target, job.scenario, self.cfg.agent,
                                            "aborted", result.started_at or started)])
            else:
                self._record(job, result)
        except Exception:  # the engine never raises for target failures; anything else is ours
            log.exception("probe %s crashed", job_id)
        finally:
            if self.ledger is not None:
                self.ledger.finished(job_id, started)
            lock.release()
            with self._idle:
                st.running -= 1
                st.running_since = None
                self._aborts.pop(job_id, None)
                self._running -= 1
                self._idle.notify_all()

    def _record(self, job: ProbeJob, result: SessionResult) -> None:
        if not result.agent:
            result.agent = self.cfg.agent
        ttfa = [t.ttfa_ms for t in result.turns if t.ttfa_ms is not None]
        with self._lock:
            st = self._state[job.job_id]
            st.runs += 1
            st.ok += int(result.ok)
            st.outcomes[result.outcome] = st.outcomes.get(result.outcome, 0) + 1
            st.last = {"at": result.started_at, "outcome": result.outcome,
                       "error": result.error[:200], "duration_s": round(result.duration_s, 3),
                       "ttfa_ms": ttfa[0] if ttfa else None}
            if result.scenario and self._is_scripted(job):
                st.last.update(scenario_summary(result))
        if self.memory is not None:
            self.memory.record(result)
        if self.recorder is not None:
            try:
                self.recorder.record(result)
            except Exception:
                self.write_errors += 1
                log.exception("recording a probe result failed")

    def _is_scripted(self, job: ProbeJob) -> bool:
        return getattr(self.scenarios.get(job.scenario), "script", None) is not None

    def _write(self, points: list) -> None:
        if self.recorder is None or not hasattr(self.recorder, "write"):
            return
        try:
            self.recorder.write(points)
        except Exception:
            self.write_errors += 1
            log.exception("writing service points failed")

    def _write_alert(self, event: AlertEvent) -> None:
        self._write([alert_point(event)])
        if self.ledger is not None:
            self.ledger.alert(event.rule, event.target, None if event.state not in (
                "pending", "firing") else {
                "state": event.state, "since": event.at, "started_at": event.started_at,
                "value": event.value, "threshold": event.threshold, "window": event.window,
                "message": event.message})

    # -- alerts --------------------------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """One evaluation of every rule (also the scheduled job). Flushes the recorder first,
        so rules read what the probes just wrote."""
        if self.recorder is not None and hasattr(self.recorder, "flush"):
            try:
                self.recorder.flush(timeout=1.0)  # bounded: a down InfluxDB must not stall
            except Exception:
                log.exception("flush before evaluation failed")
        return self.engine.evaluate(now)

    # -- read side -----------------------------------------------------------------------------
    def lateness_ms(self, target: str | None = None) -> list[float]:
        with self._lock:
            return [v for st in self._state.values() if target in (None, st.target)
                    for v in st.lateness_ms]

    def target_states(self) -> dict[str, TargetState]:
        with self._lock:
            return dict(self._state)

    def status(self) -> dict:
        """The /status document (see README.md ("Probe service and alerts"))."""
        now = time.time()
        targets = {}
        for job_id, st in self.target_states().items():
            entry: dict = {
                "target": st.target, "scenario": st.scenario, "runs": st.runs, "ok": st.ok,
                "skips": st.skips, "missed": st.missed, "aborted": st.aborted,
                "running": st.running, "running_since": st.running_since,
                "last": st.last, "next_run": None, "outcomes": dict(st.outcomes),
            }
            lat = list(st.lateness_ms)
            if lat:
                entry["lateness_ms"] = {"p50": round(percentile(lat, 50), 3),
                                        "p99": round(percentile(lat, 99), 3),
                                        "max": round(max(lat), 3)}
            job = self.scheduler.get_job(job_id) if self.scheduler and self.scheduler.running \
                else None
            if job is not None and job.next_run_time is not None:
                entry["next_run"] = job.next_run_time.timestamp()
            try:
                c = self.source.session_counts(st.target, now - 3600, now)
                vals = self.source.turn_values(st.target, "ttfa_ms", now - 3600, now)
                entry["last_hour"] = {
                    "sessions": c.total,
                    "success_ratio": round(c.ok / c.total, 5) if c.total else None,
                    # nearest rank (telemetry.stats), to the µs every stored value has
                    **{f"ttfa_p{q}_ms": round(percentile(vals, q), 3) if vals else None
                       for q in (50, 95, 99)},
                }
            except Exception as exc:
                entry["last_hour"] = {"error": type(exc).__name__}
            targets[job_id] = entry
        alerts = [{"rule": s.rule, "target": s.target, "severity": s.severity, "state": s.state,
                   "since": s.since, "value": s.value, "threshold": s.threshold,
                   "window": s.window, "message": s.message}
                  for s in self.engine.states() if s.state in ("pending", "firing")]
        return {
            "agent": self.cfg.agent,
            "started_at": self.started_at,
            "now": now,
            "time_scale": self.cfg.time_scale,
            "targets": targets,
            "alerts": alerts,
            "engine": {"evaluations": self.engine.stats.evaluations,
                       "rule_errors": self.engine.stats.rule_errors,
                       "last_eval_at": self.engine.stats.last_eval_at,
                       "last_eval_ms": round(self.engine.stats.last_eval_ms, 2)},
            "notifiers": [{"name": n.name, "sent": n.stats.sent, "failed": n.stats.failed,
                           "retries": n.stats.retries, "dropped": n.stats.dropped}
                          for n in self.notifiers],
            "outbox": self.outbox_health(),
            "write_errors": self.write_errors,
            "memory": {**(self.malloc or {}), **self.collector.stats()},
        }

    def outbox_health(self) -> dict | None:
        rec = self.recorder
        for name in ("health", "stats"):
            fn = getattr(rec, name, None)
            if callable(fn):
                try:
                    h = fn()
                except Exception as exc:
                    return {"error": type(exc).__name__}
                if hasattr(h, "__dataclass_fields__"):
                    from dataclasses import asdict

                    return asdict(h)
                return h if isinstance(h, dict) else {"value": str(h)}
        return None
