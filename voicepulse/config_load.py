"""Parses the load-test section of voicepulse.yaml (owned by the load-test work).

    load:
      rate: 20               # sessions/s, open model (or users: 50 for the closed model)
      arrivals: poisson      # constant | poisson
      shape: ramp            # ramp | step | spike | soak, or {name: spike, at: 20s, length: 5s}
      stages: "10s:5,30s:5"  # or a list of {duration: 10s, target: 5}; instead of shape
      duration: 60s
      slots: 400             # session slots (default: sized from rate, scenario and headroom)
      thresholds: ["ttfa_ms.p95<800", {expr: "error_rate<0.05", abort_on_fail: true}]
"""

from __future__ import annotations

from loadtests.arrivals import PROCESSES
from loadtests.plan import LoadConfig
from loadtests.profile import SHAPES, Stage, parse_stages, shape_stages
from loadtests.thresholds import parse_threshold
from voicepulse.configkit import Section


def parse_load(root: Section) -> LoadConfig | None:
    if not root.has("load"):
        return None
    s = root.section("load")
    d = LoadConfig()
    lc = LoadConfig(
        rate=s.num("rate", None, positive=True),
        users=s.int("users", None, min=1),
        arrivals=s.str("arrivals", d.arrivals, choices=PROCESSES),
        duration_s=s.duration("duration", d.duration_s),
        slots=s.int("slots", None, min=1),
        headroom=s.num("headroom", d.headroom, min=1.0),
        expected_reply_s=s.num("expected_reply_s", d.expected_reply_s, min=0),
        late_ms=s.num("late_ms", d.late_ms, min=0),
        max_start_lag_s=s.duration("max_start_lag", d.max_start_lag_s),
        drain_s=s.duration("drain", d.drain_s),
        abort_on_fail=s.bool("abort_on_fail", False),
        interval_s=s.duration("interval", d.interval_s),
        overload_lag_ms=s.num("overload_lag_ms", d.overload_lag_ms, positive=True),
        overload_cpu_pct=s.num("overload_cpu_pct", d.overload_cpu_pct, positive=True, max=100),
        turn_points=s.bool("turn_points", True),
        seed=s.int("seed", None),
    )
    if lc.rate is not None and lc.users is not None:
        raise s.error("users", "rate (open model) and users (closed model) exclude each other")
    if s.has("stages"):
        raw = s.raw("stages")
        try:
            if isinstance(raw, str):
                lc.stages = parse_stages(raw)
            elif isinstance(raw, list):
                lc.stages = []
                for st in s.sections("stages"):
                    lc.stages.append(Stage(st.duration("duration", positive=False),
                                           st.num("target", min=0)))
                    st.done()
                if not any(x.duration_s > 0 for x in lc.stages):
                    raise ValueError("need at least one stage with a duration above zero")
            else:
                raise ValueError("expected a string like 10s:5,30s:5 or a list")
        except ValueError as e:
            raise s.error("stages", str(e)) from None
    if s.has("shape"):
        if lc.stages:
            raise s.error("shape", "shape and stages exclude each other")
        raw = s.raw("shape")
        if isinstance(raw, dict):
            sh = s.section("shape")
            lc.shape = sh.str("name", choices=SHAPES)
            lc.shape_params = {k: str(v) for k, v in sh.data.items() if k != "name"}
            sh._seen.update(sh.data)
        else:
            lc.shape = s.str("shape", choices=SHAPES)
        try:
            shape_stages(lc.shape, lc.level, lc.duration_s, lc.shape_params)
        except ValueError as e:
            raise s.error("shape", str(e)) from None
    thresholds = []
    for i, item in enumerate(s.list("thresholds", [])):
        key = f"thresholds[{i}]"
        abort = False
        if isinstance(item, dict):
            t = Section(item, s.file, s.key(key))
            expr, abort = t.str("expr"), t.bool("abort_on_fail", False)
            t.done()
        elif isinstance(item, str):
            expr = item
        else:
            raise s.error(key, f"expected an expression like ttfa_ms.p95<800, got {item!r}")
        try:
            parse_threshold(expr, abort)
        except ValueError as e:
            raise s.error(key, str(e)) from None
        thresholds.append(expr + (" abort_on_fail" if abort and "abort_on_fail" not in expr else ""))
    lc.thresholds = thresholds
    s.done()
    return lc
