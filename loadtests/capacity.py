"""The capacity search as pure data: given the steps run so far, which level comes next, and
what the search found. No Locust, no clock: `capacity_run.py` drives real steps through it, and
unit tests feed it plain `Step`s.

The search steps the level up by `factor` from `start` until a step fails a bound (the first bad
level), then bisects between the highest good level below it and the lowest bad one until they
are within `precision` of each other. The breaking point is the highest level that held every
bound. Stops without a finding:

- a step whose generator was overloaded (loop/send lag, CPU, late starts, a short achieved rate):
  its figures measure the generator, so the search says so and reports the last good level as a
  floor, not a finding;
- the start level itself failing (there is no good level to bisect from);
- a budget guard (`max_level`, `max_sessions` over the whole search, `max_cost_usd`) that the
  next step would pass: checked before the step runs, from the sessions and cost per session
  measured so far.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: A step's generator is overloaded when more than this share of its sessions started late
#: (and at least LATE_MIN of them: one start 50 ms late on a busy machine is not a verdict).
LATE_RATE_LIMIT = 0.05
LATE_MIN = 3
#: ... or when it achieved less than this share of the arrival rate it was asked for.
ACHIEVED_MIN = 0.9

FOUND, OVERLOADED, START_FAILED, BUDGET, MAX_LEVEL, NO_SUMMARY = (
    "found", "generator_overloaded", "start_failed", "budget", "max_level", "no_summary")


@dataclass(slots=True)
class SearchConfig:
    start: float
    integer: bool = False  # closed model: levels are whole users
    factor: float = 2.0
    precision: float = 0.10
    hold_s: float = 60.0
    min_turns: int = 30
    max_level: float | None = None
    max_sessions: int | None = None  # sessions over the whole search
    max_cost_usd: float | None = None
    unit: str = "sessions/s"  # for messages: sessions/s or users

    def validate(self) -> None:
        if not self.start > 0:
            raise ValueError(f"the start level must be above zero, got {self.start:g}")
        if not self.factor > 1:
            raise ValueError(f"--step-factor must be above 1, got {self.factor:g}")
        if not 0 < self.precision < 1:
            raise ValueError(f"--precision must be between 0 and 1 (0.1 = 10 %), "
                             f"got {self.precision:g}")
        if self.max_level is not None and self.max_level < self.start:
            raise ValueError(f"--max-level {self.max_level:g} is below the start level "
                             f"{self.start:g}")


@dataclass(slots=True)
class Step:
    """One held level and what it measured (plain data from its load summary)."""

    level: float
    hold_s: float = 0.0
    sessions: int = 0
    turns: int = 0
    error_rate: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    ttfa_metric: str = "ttfa_ms"
    ttfa_p50: float | None = None
    ttfa_p95: float | None = None
    ttfa_p99: float | None = None
    late_starts: int = 0
    late_rate: float | None = None
    achieved_rate: float | None = None
    session_s: float | None = None  # mean session length
    cost_usd: float = 0.0
    verdicts: list[dict] = field(default_factory=list)  # {"expr", "ok", "actual"}
    overloaded: bool = False
    health: str = "ok"  # "ok" or why the generator was overloaded
    run_id: str = ""

    @property
    def passed(self) -> bool:
        return not self.overloaded and all(v["ok"] for v in self.verdicts)

    @property
    def failed_bound(self) -> dict | None:
        """The first bound this step broke (in the order given), or None."""
        return next((v for v in self.verdicts if not v["ok"]), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def generator_health(overloaded: bool, reasons: list[str], late: int, started: int,
                     achieved: float | None, asked: float | None) -> tuple[bool, str]:
    """Whether a step's generator kept up, and why not: the run's own verdict (send lag,
    event-loop lag, CPU), more than LATE_RATE_LIMIT (and LATE_MIN) late starts, or an open model
    that achieved under ACHIEVED_MIN of the asked rate."""
    why = list(reasons) if overloaded else []
    if started and late >= LATE_MIN and late / started > LATE_RATE_LIMIT:
        why.append(f"{late} of {started} starts late ({late / started:.1%} > "
                   f"{LATE_RATE_LIMIT:.0%})")
    if asked and achieved is not None and achieved < ACHIEVED_MIN * asked:
        why.append(f"achieved {achieved:.2f}/s of {asked:g}/s asked")
    return (bool(why), "; ".join(why) if why else "ok")


def hold_for(cfg: SearchConfig, level: float, turns_per_session: int, session_s: float) -> float:
    """The step's hold: `hold_s`, longer when that would give fewer than `min_turns` turns."""
    tps = max(turns_per_session, 1)
    if cfg.integer:  # closed: `level` sessions back to back, each `session_s` long
        turns_per_s = level * tps / max(session_s, 0.1)
    else:
        turns_per_s = level * tps
    return max(cfg.hold_s, math.ceil(cfg.min_turns / turns_per_s)) if turns_per_s > 0 \
        else cfg.hold_s


def expected_sessions(cfg: SearchConfig, level: float, hold_s: float, session_s: float) -> float:
    """Sessions a step at `level` held `hold_s` will start (closed: back to back)."""
    if cfg.integer:
        return level * max(hold_s / max(session_s, 0.1), 1.0)
    return level * hold_s


def _round(cfg: SearchConfig, level: float) -> float:
    if cfg.integer:
        return float(max(1, round(level)))
    return float(f"{level:.3g}")  # 3 significant figures: 13.3/s, not 13.333333/s


@dataclass(slots=True)
class Decision:
    level: float | None  # None: stop
    stop: str = ""  # FOUND, OVERLOADED, ... when level is None
    message: str = ""


def bracket(steps: list[Step]) -> tuple[Step | None, Step | None]:
    """(highest good step below the lowest bad one, lowest bad step); None for either side the
    search has not seen."""
    bad = [s for s in steps if not s.passed and not s.overloaded]
    lo_bad = min(bad, key=lambda s: s.level) if bad else None
    good = [s for s in steps if s.passed and (lo_bad is None or s.level < lo_bad.level)]
    return (max(good, key=lambda s: s.level) if good else None), lo_bad


def next_step(cfg: SearchConfig, steps: list[Step], *, turns_per_session: int = 1,
              session_s: float = 2.0) -> Decision:
    """The next level to hold, or why the search stops (module docstring)."""
    if not steps:
        return _guarded(cfg, steps, cfg.start, turns_per_session, session_s)
    last = steps[-1]
    good, bad = bracket(steps)
    if last.overloaded:
        floor = f"{good.level:g} {cfg.unit}" if good else "none"
        return Decision(None, OVERLOADED,
                        f"generator overloaded at {last.level:g} {cfg.unit} ({last.health}): "
                        f"the result is a floor, not a finding (last good level: {floor}); "
                        "spread the load with --processes N or more worker machines")
    if bad is not None and good is None:
        b = bad.failed_bound or {}
        return Decision(None, START_FAILED,
                        f"the start level {bad.level:g} {cfg.unit} already broke "
                        f"{b.get('expr', 'a bound')}: start lower")
    if bad is None:
        nxt = _round(cfg, good.level * cfg.factor)
        if cfg.max_level is not None and nxt > cfg.max_level:
            if good.level >= cfg.max_level:
                return Decision(None, MAX_LEVEL,
                                f"every bound held up to --max-level {cfg.max_level:g} "
                                f"{cfg.unit}: the limit is above it (a floor)")
            nxt = _round(cfg, cfg.max_level)
        return _guarded(cfg, steps, nxt, turns_per_session, session_s)
    if (bad.level - good.level) / good.level <= cfg.precision:
        return Decision(None, FOUND, _found(cfg, good, bad))
    mid = _round(cfg, (good.level + bad.level) / 2)
    if mid <= good.level or mid >= bad.level:  # whole users: nothing left between them
        return Decision(None, FOUND, _found(cfg, good, bad))
    return _guarded(cfg, steps, mid, turns_per_session, session_s)


def _found(cfg: SearchConfig, good: Step, bad: Step) -> str:
    return (f"found: {good.level:g} {cfg.unit} held every bound, {bad.level:g} did not "
            f"(within {cfg.precision:.0%})")


def _guarded(cfg: SearchConfig, steps: list[Step], level: float, tps: int,
             session_s: float) -> Decision:
    """`level` next, unless a budget guard says the step would pass it."""
    measured = [s.session_s for s in steps if s.session_s]
    sess_s = measured[-1] if measured else session_s
    hold = hold_for(cfg, level, tps, sess_s)
    want = expected_sessions(cfg, level, hold, sess_s)
    done = sum(s.sessions for s in steps)
    if cfg.max_sessions is not None and done + want > cfg.max_sessions:
        return Decision(None, BUDGET,
                        f"budget: a step at {level:g} {cfg.unit} would start ~{want:.0f} sessions"
                        f", {done} already started, over --max-sessions {cfg.max_sessions}")
    if cfg.max_cost_usd is not None:
        spent = sum(s.cost_usd for s in steps)
        per = spent / done if done else 0.0
        if spent >= cfg.max_cost_usd or spent + per * want > cfg.max_cost_usd:
            return Decision(None, BUDGET,
                            f"budget: spent ${spent:.4f}; a step at {level:g} {cfg.unit} would "
                            f"cost ~${per * want:.4f} more, over --max-cost "
                            f"${cfg.max_cost_usd:g}")
    return Decision(level)


@dataclass(slots=True)
class CapacityResult:
    stop: str
    message: str
    unit: str
    breaking_point: float | None  # the last level that held every bound (None: none did)
    first_bad: float | None
    broken_bound: dict | None  # {"expr", "ok", "actual"} at first_bad
    errors_at_break: dict[str, int]
    floor: float | None  # the highest good level: a floor when the search found no break
    steps: list[Step]
    cost_usd: float = 0.0
    sessions: int = 0

    @property
    def found(self) -> bool:
        return self.stop == FOUND

    def to_dict(self) -> dict:
        return {"stop": self.stop, "message": self.message, "unit": self.unit,
                "found": self.found, "breaking_point": self.breaking_point,
                "first_bad": self.first_bad, "broken_bound": self.broken_bound,
                "errors_at_break": self.errors_at_break, "floor": self.floor,
                "cost_usd": self.cost_usd, "sessions": self.sessions,
                "steps": [s.to_dict() for s in self.steps]}


def result(cfg: SearchConfig, steps: list[Step], decision: Decision) -> CapacityResult:
    """What the search found, once `next_step` said stop."""
    good, bad = bracket(steps)
    found = decision.stop == FOUND
    return CapacityResult(
        stop=decision.stop, message=decision.message, unit=cfg.unit,
        breaking_point=good.level if found and good else None,
        first_bad=bad.level if bad else None,
        broken_bound=bad.failed_bound if bad else None,
        errors_at_break=dict(sorted(bad.errors.items(), key=lambda kv: -kv[1])) if bad else {},
        floor=good.level if good else None, steps=list(steps),
        cost_usd=sum(s.cost_usd for s in steps), sessions=sum(s.sessions for s in steps))


def _broke(b: dict | None) -> str:
    if b is None:
        return "FAIL"
    act = "no data" if b["actual"] is None else f"{b['actual']:.4g}"
    return f"FAIL {b['expr']} ({act})"


def table(res: CapacityResult) -> str:
    """Every step, in the order run, then the finding in words."""
    lines = [f"{'level':>8} {'hold s':>7} {'turns':>6} {'TTFA p50':>9} {'p95':>7} {'p99':>7} "
             f"{'errors':>7} {'late':>5}  {'generator':<10} verdict"]

    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    for s in res.steps:
        er = "-" if s.error_rate is None else f"{s.error_rate:.1%}"
        verdict = "PASS" if s.passed else "OVERLOADED" if s.overloaded else _broke(s.failed_bound)
        gen = "ok" if s.health == "ok" else "OVERLOADED"
        lines.append(f"{s.level:>8g} {s.hold_s:>7.0f} {s.turns:>6} {ms(s.ttfa_p50):>9} "
                     f"{ms(s.ttfa_p95):>7} {ms(s.ttfa_p99):>7} {er:>7} {s.late_starts:>5}  "
                     f"{gen:<10} {verdict}")
        if s.health != "ok":
            lines.append(f"{'':>8}   generator: {s.health}")
    lines.append("")
    u = res.unit
    if res.found:
        lines.append(f"breaking point: {res.breaking_point:g} {u} (the last level that held "
                     "every bound)")
    elif res.floor is not None:
        lines.append(f"no breaking point found; floor: {res.floor:g} {u} held every bound")
    else:
        lines.append("no breaking point found and no level held every bound")
    if res.broken_bound:
        b = res.broken_bound
        act = "no data" if b["actual"] is None else f"{b['actual']:.4g}"
        lines.append(f"first bound broken: {b['expr']} at {res.first_bad:g} {u}: {act}")
    if res.errors_at_break:
        lines.append("errors at the break: " + ", ".join(f"{k} {v}" for k, v in
                                                         res.errors_at_break.items()))
    lines.append(f"stopped: {res.message}")
    lines.append(f"{len(res.steps)} steps, {res.sessions} sessions, cost ${res.cost_usd:.4f}")
    return "\n".join(lines)
