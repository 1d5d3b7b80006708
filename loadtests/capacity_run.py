"""Driving the capacity search with real steps: each step is its own bounded Locust run at one
constant level (successive bounded runs, not one run with a changing shape), so every step's
thresholds are judged on exactly that step's sessions, from its own merged HDR histograms, with
no session of the previous level in its window. The decisions are capacity.py's.

A step's plan is the search's plan with the level, the hold and a results file swapped in; every
step keeps the search's run id, so stored points show the staircase as one run.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable

import orjson

from loadtests import capacity as cap
from loadtests.plan import Plan
from loadtests.summary import LoadSummary

#: Open-model slots per expected concurrent session in a step (a normal run's headroom is 1.5):
#: a target slowing down under load must not starve the generator of slots, which would read
#: as late starts (the generator's fault) instead of as the target's latency.
STEP_HEADROOM = 3.0
#: Closed model: a failed session's slot waits this long before the next one (a caller
#: retrying after a refusal), so refusals do not become a tight connect loop on the generator.
CLOSED_RETRY_S = 1.0


def step_plan(plan: Plan, cfg: cap.SearchConfig, level: float, hold_s: float,
              results_jsonl: str) -> Plan:
    p = copy.deepcopy(plan)
    lc = p.load
    lc.stages, lc.shape, lc.shape_params = None, None, {}
    if cfg.integer:
        lc.users, lc.rate = int(level), None
        lc.closed_retry_s = CLOSED_RETRY_S
    else:
        lc.rate, lc.users = float(level), None
        lc.headroom = max(lc.headroom, STEP_HEADROOM)
    lc.duration_s = hold_s
    lc.abort_on_fail = False  # a bound judged on a step's first seconds is not the step's
    p.results_jsonl = results_jsonl
    p.summary_json = None
    return p


def step_from_summary(s: LoadSummary, level: float, hold_s: float, cost_usd: float) -> cap.Step:
    c = s.counters
    sessions, ok = c.get("sessions", 0), c.get("sessions_ok", 0)
    metric = next((n for n in ("ttfa_audible_ms", "ttfa_ms") if s.metric(n)), "ttfa_ms")
    m = s.metric(metric)
    started = c.get("arrivals_started", 0)
    late = c.get("late_starts", 0)
    late_rate = late / started if started and s.load_model == "open" else None
    reasons = [r for h in s.health for r in h.reasons]
    over, health = cap.generator_health(
        s.overloaded, reasons, late if s.load_model == "open" else 0, started,
        s.achieved_rate if s.load_model == "open" else None,
        level if s.load_model == "open" else None)
    sess = s.metric("session_ms")
    return cap.Step(
        level=level, hold_s=hold_s, sessions=sessions, turns=c.get("turns", 0),
        error_rate=(sessions - ok) / sessions if sessions else None,
        errors=dict(c.get("errors") or {}), ttfa_metric=metric,
        ttfa_p50=m.p50 if m else None, ttfa_p95=m.p95 if m else None,
        ttfa_p99=m.p99 if m else None, late_starts=late, late_rate=late_rate,
        achieved_rate=s.achieved_rate, session_s=sess.mean / 1000.0 if sess else None,
        cost_usd=cost_usd,
        verdicts=[{"expr": t["expr"], "ok": t["ok"], "actual": t["actual"]}
                  for t in s.thresholds],
        overloaded=over, health=health, run_id=s.run_id)


def results_cost(path: str) -> float:
    """The USD cost of every session in a step's results file (turn costs; unpriced: 0)."""
    total = 0.0
    try:
        with open(path, "rb") as f:
            for line in f:
                r = orjson.loads(line)
                total += sum(t.get("cost_usd") or 0.0 for t in r.get("turns") or ())
    except FileNotFoundError:
        pass
    return total


def search(plan: Plan, cfg: cap.SearchConfig,
           run_step: Callable[[Plan], LoadSummary | None],
           on_step: Callable[[cap.Step], None] | None = None) -> tuple[cap.CapacityResult,
                                                                      list[dict]]:
    """Run the search; `run_step(plan)` runs one bounded load run and returns its summary (None
    when it ended without one). Returns the result and every step's full summary."""
    cfg.validate()
    sc = plan.scenario
    tps = sc.turns if sc.script is None else max(1, _script_turns(sc.script))
    est_s = plan.load.session_estimate_s(sc)
    steps: list[cap.Step] = []
    summaries: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="voicepulse-capacity-") as tmp:
        while True:
            d = cap.next_step(cfg, steps, turns_per_session=tps, session_s=est_s)
            if d.level is None:
                return cap.result(cfg, steps, d), summaries
            measured = [s.session_s for s in steps if s.session_s]
            hold = cap.hold_for(cfg, d.level, tps, measured[-1] if measured else est_s)
            path = os.path.join(tmp, f"step-{len(steps)}.jsonl")
            summary = run_step(step_plan(plan, cfg, d.level, hold, path))
            if summary is None:
                stop = cap.Decision(None, cap.NO_SUMMARY,
                                    f"the step at {d.level:g} {cfg.unit} ended without a summary")
                return cap.result(cfg, steps, stop), summaries
            step = step_from_summary(summary, d.level, hold, results_cost(path))
            steps.append(step)
            summaries.append(summary.to_dict())
            if on_step is not None:
                on_step(step)


def _script_turns(script) -> int:
    """Replies a scripted session waits for (its turns), repeats counted once."""
    from probes.script import Repeat, WaitReply

    def walk(steps) -> int:
        n = 0
        for st in steps:
            if isinstance(st, WaitReply):
                n += 1
            elif isinstance(st, Repeat):
                n += (st.times or 1) * walk(st.steps)
        return n

    return walk(script.steps)
