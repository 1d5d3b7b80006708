"""The master's side: merge every worker's deltas exactly, keep the run total, the open 10 s
interval and a window for sliding thresholds, judge generator health, and produce the only
`latency` and `loadgen` points of the run (plus the `turn`/`session` points of shipped results).

No Locust in here: the locustfile feeds it, and unit tests feed it plain payloads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from loadtests.metrics import Counters, Delta, Window
from loadtests.overload import WindowLag
from loadtests.overload import reasons as overload_reasons
from loadtests.plan import Plan
from loadtests.summary import LoadSummary, WorkerHealth, metric_stats, scenario_stats
from loadtests.thresholds import Threshold, Verdict, evaluate, parse_threshold
from probes.results import SessionResult, TurnResult, Usage
from telemetry.hdr import latency_point
from telemetry.points import LoadgenSample, Point


@dataclass(slots=True)
class WorkerTrack:
    name: str
    interval: Delta = field(default_factory=Delta)
    users: int = 0
    in_flight: int = 0
    cpu_samples: list[float] = field(default_factory=list)
    health: WorkerHealth | None = None


def result_from_dict(d: dict) -> SessionResult:
    d = dict(d)
    turns = []
    for t in d.pop("turns", []):
        t = dict(t)
        t["usage"] = Usage(**(t.get("usage") or {}))
        turns.append(TurnResult(**t))
    return SessionResult(**d, turns=turns)


def _p99(delta: Delta, metric: str) -> float | None:
    h = delta.hist.get(metric)
    if h is None or not h.count:
        return None
    return h.percentiles_ms((99.0,))[99.0]  # clamped to the exact max


def achieved_rate(total: Delta) -> float | None:
    """Started sessions/s as they really started: n starts span n - 1 intervals between the
    first and the last (exactly the intended rate for an on-time constant stream; lower when
    starts slip). None with fewer than two starts."""
    n, span_ns = total.counters.arrivals_started, total.last_start_ns - total.first_start_ns
    return (n - 1) / (span_ns / 1e9) if n >= 2 and span_ns > 0 else None


def overload_message(health) -> str:
    """What the run says of its generator: empty while no worker window was overloaded."""
    over = [h for h in health if h.overloaded]
    if not over:
        return ""
    return ("load generator overloaded (" + "; ".join(f"{h.worker}: {', '.join(h.reasons)}"
                                                    for h in over)
            + "): latencies may be inflated by the generator itself; "
              "spread the load with --processes N (or more worker machines)")


class Collector:
    def __init__(self, plan: Plan, *, clock=time.monotonic, wall=time.time):
        self.plan = plan
        self.clock, self.wall = clock, wall
        lc = plan.load
        self.thresholds: list[Threshold] = [parse_threshold(t, lc.abort_on_fail)
                                            for t in lc.thresholds]
        keep = max([t.window_s or 0 for t in self.thresholds] + [lc.interval_s]) + 5
        self.total = Delta()
        self.interval = Delta()
        self.interval_start = wall()
        self.window = Window(keep)
        self.workers: dict[str, WorkerTrack] = {}
        self.started: set[str] = set()  # workers told to start arrivals
        self.finals: set[str] = set()
        self.results: list[dict] = []  # shipped results not yet written
        self.aborted = ""
        self.t_start: float | None = None  # monotonic time arrivals began
        self.t_end: float | None = None
        self.health: dict[str, WorkerHealth] = {}

    # -- intake ------------------------------------------------------------------------------
    def begin(self, workers: list[str]) -> None:
        self.started = set(workers)
        self.t_start = self.clock()

    def merge(self, worker: str, payload: dict) -> None:
        raw = payload.get("delta") or {}
        d = raw if isinstance(raw, Delta) else Delta.decode(raw)
        now = self.clock()
        self.total.add(d)
        self.interval.add(d)
        self.window.push(now, d)
        w = self.workers.get(worker)
        if w is None:
            w = self.workers[worker] = WorkerTrack(worker)
        w.interval.add(d)
        w.users = int(payload.get("users", w.users))
        w.in_flight = int(payload.get("in_flight", w.in_flight))
        if payload.get("cpu_pct") is not None:
            w.cpu_samples.append(float(payload["cpu_pct"]))
        self.results.extend(orjson.loads(b) if isinstance(b, bytes) else b
                            for b in payload.get("results") or [])
        if payload.get("final"):
            self.finals.add(worker)
            if self.started and self.finals >= self.started:
                self.t_end = now
        if not self.aborted and any(t.abort_on_fail for t in self.thresholds):
            for v in self.verdicts(abort_only=True):
                if not v.ok and v.actual is not None:
                    self.aborted = v.expr
                    break

    @property
    def all_final(self) -> bool:
        return bool(self.started) and self.finals >= self.started

    # -- thresholds -----------------------------------------------------------------------------
    def verdicts(self, abort_only: bool = False) -> list[Verdict]:
        now = self.clock()
        run_s = (self.t_end or now) - (self.t_start or now)
        out = []
        for t in self.thresholds:
            if abort_only and not t.abort_on_fail:
                continue
            if t.window_s:
                end = self.t_end or now
                out.append(evaluate(t, self.window.merged(end, t.window_s), min(t.window_s, run_s)))
            else:
                out.append(evaluate(t, self.total, run_s))
        return out

    # -- points -------------------------------------------------------------------------------
    def flush(self, *, final: bool = False, pause=None) -> list[Point]:
        """`latency` and `loadgen` points for the interval that just ended; judges health.
        `pause()` is called between histograms so a shared event loop can serve sockets."""
        pause = pause or (lambda: None)
        lc, tg, sc = self.plan.load, self.plan.target, self.plan.scenario
        t_ns = int(self.interval_start * 1e9)
        points: list[Point] = []
        for metric, h in sorted(self.interval.hist.items()):
            if h.count:
                points.append(latency_point((tg.name, tg.model, "load", sc.name, "", metric),
                                            h, t_ns))
                pause()
        all_c = Counters()
        users = in_flight = 0
        lag_all: list[float] = []
        cpus: list[float] = []
        for w in self.workers.values():
            c = w.interval.counters
            all_c.add(c)
            users += w.users
            in_flight += w.in_flight
            send99, loop99 = _p99(w.interval, "send_lag_ms"), _p99(w.interval, "loop_lag_ms")
            cpu = max(w.cpu_samples) if w.cpu_samples else None
            hl = self.health.setdefault(w.name, WorkerHealth(w.name))
            win = WindowLag.of(w.interval, lc.overload_lag_ms)
            reasons = overload_reasons(win, lc.overload_lag_ms, cpu, lc.overload_cpu_pct)
            hl.turns += win.turns
            hl.slow_turns += win.slow_turns
            hl.lag_turns += win.lag_turns
            hl.loop_samples += win.loop_samples
            hl.loop_late += win.loop_late
            for attr, v in (("cpu_pct_max", cpu), ("send_lag_p99_ms", send99),
                            ("loop_lag_p99_ms", loop99)):
                if v is not None:
                    old = getattr(hl, attr)
                    setattr(hl, attr, v if old is None else max(old, v))
            if reasons:
                hl.overloaded = True
                for r in reasons:  # the first window of each kind (send, event-loop, CPU)
                    kind = r.split(" ")[0]
                    if not any(x.startswith(kind) for x in hl.reasons):
                        hl.reasons.append(r)
            for v in (send99, loop99):
                if v is not None:
                    lag_all.append(v)
            if cpu is not None:
                cpus.append(cpu)
            points.append(self._loadgen(w.name, w.users, w.in_flight, c, send99, loop99, cpu,
                                        bool(reasons), t_ns))
            w.interval = Delta()
            w.cpu_samples = []
            pause()
        if self.workers:
            points.append(self._loadgen("all", users, in_flight, all_c,
                                        _p99(self.interval, "send_lag_ms"),
                                        _p99(self.interval, "loop_lag_ms"),
                                        max(cpus) if cpus else None,
                                        any(h.overloaded for h in self.health.values()), t_ns))
        self.interval = Delta()
        self.interval_start = self.wall()
        return points

    def _loadgen(self, worker, users, in_flight, c: Counters, send99, loop99, cpu, over, t_ns):
        extra = {"no_slot": c.no_slot, "dropped": c.dropped, "cut": c.cut, "sessions": c.sessions,
                 "errors": c.sessions - c.sessions_ok, "overloaded": int(over)}
        if loop99 is not None:
            extra["loop_lag_p99_ms"] = float(loop99)
        s = LoadgenSample(run_id=self.plan.run_id, scenario=self.plan.scenario.name,
                          worker=worker, users=users, active_sessions=in_flight,
                          arrivals_due=c.arrivals_due, arrivals_started=c.arrivals_started,
                          late_starts=c.late_starts, send_lag_p99_ms=send99, cpu_pct=cpu,
                          extra=extra)
        return s.point(t_ns)

    def status(self, window_s: float = 10.0) -> dict:
        """Live figures for a progress display (voicepulse.progress keys)."""
        now = self.clock()
        c = self.total.counters
        recent = self.window.merged(now, window_s)
        since = now - (self.t_start or now)
        span = min(window_s, since)
        f: dict = {"sessions": c.arrivals_started, "arrivals_due": c.arrivals_due,
                   "arrivals_started": c.arrivals_started, "late_starts": c.late_starts,
                   "errors": c.sessions - c.sessions_ok,
                   "error_rate": (c.sessions - c.sessions_ok) / c.sessions if c.sessions else None,
                   "active_sessions": sum(w.in_flight for w in self.workers.values()),
                   "users": sum(w.users for w in self.workers.values()),
                   "arrivals_per_s": recent.counters.arrivals_started / span if span > 1 else None}
        h = recent.hist.get("ttfa_ms")
        if h is not None and h.count:
            p = h.percentiles_ms((50.0, 95.0))
            f["ttfa_p50_ms"], f["ttfa_p95_ms"] = p[50.0], p[95.0]
        lag = _p99(recent, "send_lag_ms")
        if lag is not None:
            f["send_lag_p99_ms"] = lag
        cpus = [w.cpu_samples[-1] for w in self.workers.values() if w.cpu_samples]
        if cpus:
            f["cpu_pct"] = max(cpus)
        # the verdict so far, word for word the summary's (a lone send-lag p99 is one hiccup)
        f["warning"] = overload_message(self.health.values())
        if self.aborted:
            f["warning"] = f"threshold {self.aborted} failed: aborting"
        return f

    def take_results(self) -> list[dict]:
        out, self.results = self.results, []
        return out

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> LoadSummary:
        lc = self.plan.load
        now = self.clock()
        c = self.total.counters
        dur = (self.t_end or now) - (self.t_start or now)
        prof = lc.profile()
        health = [self.health.get(w, WorkerHealth(w)) for w in sorted(self.workers)]
        over = [h for h in health if h.overloaded]
        checks, wer = scenario_stats(self.total.scenario)
        msg = overload_message(health)
        return LoadSummary(
            run_id=self.plan.run_id, target=self.plan.target.name, model=self.plan.target.model,
            scenario=self.plan.scenario.name, load_model=lc.model, level=prof.peak,
            arrivals=lc.arrivals if lc.model == "open" else "closed", duration_s=dur,
            slots=lc.slot_count(self.plan.scenario), workers=len(self.started or self.workers),
            counters=c.to_dict(), metrics=metric_stats(self.total), health=health,
            thresholds=[v.to_dict() for v in self.verdicts()], overloaded=bool(over),
            overload_message=msg, aborted=self.aborted, complete=self.all_final,
            achieved_rate=achieved_rate(self.total),
            checks=checks, wer=wer)
