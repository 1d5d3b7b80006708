"""A Locust process's side of a run: the open model's arrival dispatcher, the session slots'
hand-off queue, the measurement delta shipped with every report, and the generator's own health
(event-loop lag, CPU).

Runs under gevent (Locust monkey-patches before this is imported). Arrivals are due at intended
times whatever the target's speed; a slot that takes one late records the lag, an arrival that
finds no idle slot is counted (`no_slot`) and waits, and one still waiting after
`max_start_lag_s` is dropped and counted. Nothing is silently lost.
"""

from __future__ import annotations

import gc
import random
import time
from time import perf_counter_ns

import gevent
import gevent.event
import gevent.queue
import orjson
import psutil

from loadtests.arrivals import arrival_times
from loadtests.metrics import Delta
from loadtests.plan import Plan
from probes.results import SessionResult
from probes.session import prepare, run_session

LOOP_PROBE_S = 0.05  # event-loop lag sample period
MAX_SHIPPED_RESULTS = 20_000
#: gen1 collections between full ones during a run. Measured (benchmarks/engine_load.py, 300
#: sessions): sessions leave no cycle, young collections find 0 objects, 1-3 run per second at
#: a few ms CPU per second in all; a full one scans every live session's objects (tens of ms
#: at 1,000 sessions, the pause every session sees). At ~0.2 gen1 collections/s this is one
#: full collection per ~14 h: none in a run; the end of the run (stop) collects instead.
GC_FULL_EVERY = 10_000  # per report; beyond this results are counted, not shipped


def apply_gc_policy() -> None:
    """The worker's cyclic-GC policy, applied once before the first session.

    Everything alive now (modules, Locust, the slots) lives for the whole run: move it out of
    the collector's reach (gc.freeze), so a collection scans only the sessions' objects.
    Sessions leave no reference cycle (tests/probes/test_no_cycles.py), so full collections
    reclaim nothing of theirs, but each one pauses every session for tens of ms at hundreds of
    sessions (benchmarks/capacity.py): run them GC_FULL_EVERY gen1 collections apart, i.e.
    not during a run; young collections stay as they are (cheap, and a safety net for cycles
    made elsewhere)."""
    gc.collect()
    gc.freeze()
    g0, g1, _ = gc.get_threshold()
    gc.set_threshold(g0, g1, GC_FULL_EVERY)


class WorkerState:
    def __init__(self, plan: Plan, name: str):
        self.plan = plan
        self.name = name
        self.delta = Delta()
        self.results: list[bytes] = []
        self.results_skipped = 0
        self.in_flight = 0
        self.idle = 0
        self.users = 0
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.started = gevent.event.Event()
        self.t0_ns: int | None = None
        self.arrivals_done = False
        self.final_sent = False
        self.on_final = None  # callable(payload) set by the locustfile
        self.run_session = run_session  # per-session callers swap in their own (locust_plugin)
        self.encode_reports = True  # False when the master shares this process
        self._greenlets: list[gevent.Greenlet] = []
        self._proc = psutil.Process()
        self._rng = random.Random(plan.load.seed)
        self._gc_start = 0
        self._cpu_mark = (time.monotonic(), self._cpu_s())

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, index: int, count: int) -> None:
        """Begin this worker's share (index of count) of the arrivals, now."""
        if self.started.is_set():
            return
        try:  # render the scenario's audio now, not inside the first (timed) sessions
            prepare(self.plan.target, self.plan.scenario)
        except Exception:  # noqa: BLE001 - a bad spec shows up as the sessions' outcome
            pass
        apply_gc_policy()
        gc.callbacks.append(self._gc_timer)
        self.t0_ns = perf_counter_ns()
        lc = self.plan.load
        if lc.model == "open":
            times = arrival_times(lc.profile(), lc.arrivals, index=index, count=count,
                                  seed=lc.seed)
            self._greenlets.append(gevent.spawn(self._dispatch, times))
        else:
            self._greenlets.append(gevent.spawn(self._closed_deadline))
        self._greenlets.append(gevent.spawn(self._loop_monitor))
        self.started.set()

    def stop(self) -> None:
        for g in self._greenlets:
            g.kill(block=False)
        if self._gc_timer in gc.callbacks:
            gc.callbacks.remove(self._gc_timer)
        gc.collect()  # the full collection the run did without: nothing is timed any more

    def _gc_timer(self, phase: str, info: dict) -> None:
        """Cyclic-GC pauses stop every greenlet: record them as generator health."""
        if phase == "start":
            self._gc_start = perf_counter_ns()
        elif self._gc_start:
            self.delta.record("gc_pause_ms", (perf_counter_ns() - self._gc_start) / 1e6)
            self._gc_start = 0

    def _dispatch(self, times) -> None:
        t0 = self.t0_ns
        c = self.delta.counters
        try:
            for t in times:
                due = t0 + int(t * 1e9)
                wait = (due - perf_counter_ns()) / 1e9
                if wait > 0:
                    gevent.sleep(wait)
                c = self.delta.counters
                c.arrivals_due += 1
                if self.idle - self.queue.qsize() <= 0:
                    c.no_slot += 1
                self.queue.put(due)
        finally:
            self.arrivals_done = True
            self.check_final()

    def _closed_deadline(self) -> None:
        gevent.sleep(self.plan.load.profile().duration_s)
        self.arrivals_done = True
        self.check_final()

    def _loop_monitor(self) -> None:
        while True:
            t = perf_counter_ns()
            gevent.sleep(LOOP_PROBE_S)
            lag_ms = (perf_counter_ns() - t) / 1e6 - LOOP_PROBE_S * 1000
            self.delta.record("loop_lag_ms", max(lag_ms, 0.0))

    # -- slots -------------------------------------------------------------------------------
    def take(self, timeout: float) -> int | None:
        """The intended start (perf_counter_ns) of the next session for this slot, or None."""
        if self.plan.load.model == "closed":
            if not self.started.wait(timeout):
                return None
            if self.arrivals_done:
                gevent.sleep(timeout)
                return None
            self.delta.counters.arrivals_due += 1
            now = perf_counter_ns()
            stagger = int(self.plan.load.closed_stagger_s * 1e9)
            if now - self.t0_ns < stagger:  # first sessions: spread, not a thundering herd
                return max(now, self.t0_ns + int(self._rng.random() * stagger))
            return now
        max_lag = int(self.plan.load.max_start_lag_s * 1e9)
        while True:
            self.idle += 1
            try:
                due = self.queue.get(timeout=timeout)
            except gevent.queue.Empty:
                return None
            finally:
                self.idle -= 1
            if perf_counter_ns() - due > max_lag:
                self.delta.counters.dropped += 1
                self.check_final()
                continue
            return due

    def run_one(self, intended_ns: int) -> SessionResult | None:
        lc = self.plan.load
        c = self.delta.counters
        c.arrivals_started += 1
        self.delta.note_start(time.time_ns())
        self.in_flight += 1
        lag_ms = (perf_counter_ns() - intended_ns) / 1e6
        r = None
        try:
            r = self.run_session(self.plan.target, self.plan.scenario, kind="load", agent="",
                            run_id=self.plan.run_id, intended_start_ns=intended_ns)
        except gevent.GreenletExit:
            self.delta.counters.cut += 1
            raise
        finally:
            self.in_flight -= 1
        start_lag = getattr(r, "start_lag_ms", None)
        start_lag = lag_ms if start_lag is None else start_lag
        d = self.delta
        d.record("start_lag_ms", start_lag)
        if lc.model == "open" and start_lag > lc.late_ms:
            d.counters.late_starts += 1
        d.add_result(r)
        for t in r.turns:  # most of the turn's chunks late (loadtests/overload.py)
            if t.send_lag_p50_ms is not None and t.send_lag_p50_ms > lc.overload_lag_ms:
                d.counters.slow_turns += 1
        if (self.plan.record and lc.turn_points) or self.plan.results_jsonl:
            if len(self.results) < MAX_SHIPPED_RESULTS:
                self.results.append(orjson.dumps(r))  # bytes: cheap, and not tracked by gc
            else:
                self.results_skipped += 1
        self.check_final()
        return r

    # -- reports -------------------------------------------------------------------------------
    def _cpu_s(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def cpu_pct(self) -> float | None:
        now, cpu = time.monotonic(), self._cpu_s()
        t0, c0 = self._cpu_mark
        self._cpu_mark = (now, cpu)
        return 100.0 * (cpu - c0) / (now - t0) if now - t0 > 0.2 else None

    def report(self, final: bool = False, encode: bool = True) -> dict:
        """Everything since the last report, as plain data (the Delta itself with encode=False,
        for the master in the same process); starts a new delta."""
        d, self.delta = self.delta, Delta()
        results, self.results = self.results, []
        return {"delta": d.encode() if encode else d, "users": self.users, "in_flight": self.in_flight,
                "cpu_pct": self.cpu_pct(), "results": results,
                "results_skipped": self.results_skipped, "final": final}

    def check_final(self) -> None:
        if (self.arrivals_done and not self.final_sent and self.in_flight == 0
                and self.queue.qsize() == 0 and self.on_final is not None):
            self.final_sent = True
            self.on_final(self.report(final=True, encode=self.encode_reports))
