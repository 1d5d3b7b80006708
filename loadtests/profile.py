"""Load levels over time: stages, the named shapes (ramp, step, spike, soak) and their exact
integral, so arrival times can be placed where the cumulative expected count crosses each value.

A level is sessions/s in the open model and concurrent sessions in the closed model. Stages follow
k6's meaning: each ramps linearly from the previous level to its `target` over `duration_s`; a
zero-length stage is a jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from telemetry.stats import parse_duration_s  # "30s", "250ms", "5m": one parser for windows too

SHAPES = ("ramp", "step", "spike", "soak")


@dataclass(frozen=True, slots=True)
class Stage:
    duration_s: float
    target: float


def parse_stages(text: str) -> list[Stage]:
    """`"10s:5,30s:5,0s:20,10s:20"` (duration:target, comma separated) -> stages."""
    stages = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        dur, sep, target = part.partition(":")
        if not sep:
            raise ValueError(f"stage {part!r}: expected DURATION:TARGET like 30s:10")
        try:
            d, v = parse_duration_s(dur), float(target)
        except ValueError:
            raise ValueError(f"stage {part!r}: expected DURATION:TARGET like 30s:10") from None
        if d < 0 or v < 0 or not math.isfinite(d) or not math.isfinite(v):
            raise ValueError(f"stage {part!r}: duration and target must be >= 0")
        stages.append(Stage(d, v))
    if not stages or sum(s.duration_s for s in stages) <= 0:
        raise ValueError(f"stages {text!r}: need at least one stage with a duration above zero")
    return stages


def parse_shape(text: str) -> tuple[str, dict[str, str]]:
    """`"spike:at=20s,length=5s,base=0.2"` -> ("spike", {"at": "20s", ...})."""
    name, _, rest = str(text).partition(":")
    name = name.strip()
    if name not in SHAPES:
        raise ValueError(f"shape {name!r}: expected one of {', '.join(SHAPES)}")
    params = {}
    for kv in filter(None, (p.strip() for p in rest.split(","))):
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"shape parameter {kv!r}: expected NAME=VALUE")
        params[k.strip()] = v.strip()
    return name, params


_SHAPE_PARAMS = {
    "ramp": ("ramp_up", "ramp_down", "start"),
    "step": ("steps", "start"),
    "spike": ("at", "length", "base"),
    "soak": ("ramp_up",),
}


def shape_stages(name: str, level: float, duration_s: float, params: dict | None = None) -> list[Stage]:
    """Stages of a named shape peaking at `level` and lasting `duration_s`.

    ramp:  start -> level over ramp_up (default half the run), hold, -> 0 over ramp_down (0)
    step:  `steps` equal steps (default 4) up to level, each duration/steps long
    spike: base*level (base default 0.25), jump to level at `at` (40 %) for `length` (20 %)
    soak:  level for the whole run, after an optional ramp_up (default 0)
    Durations may be seconds or "10s"; `base` and `start` are fractions of level.
    """
    p = dict(params or {})
    unknown = set(p) - set(_SHAPE_PARAMS[name])
    if unknown:
        raise ValueError(f"shape {name}: unknown parameter {sorted(unknown)[0]!r} "
                         f"(known: {', '.join(_SHAPE_PARAMS[name])})")
    D = float(duration_s)

    def dur(key: str, default: float) -> float:
        v = parse_duration_s(p[key]) if key in p else default
        if v < 0 or v > D:
            raise ValueError(f"shape {name}: {key} must be between 0 and the duration ({D:g}s)")
        return v

    def frac(key: str, default: float) -> float:
        v = float(p[key]) if key in p else default
        if not 0 <= v <= 1:
            raise ValueError(f"shape {name}: {key} must be a fraction from 0 to 1")
        return v

    if name == "ramp":
        up, down = dur("ramp_up", D / 2), dur("ramp_down", 0.0)
        if up + down > D:
            raise ValueError("shape ramp: ramp_up + ramp_down exceed the duration")
        st = [Stage(0.0, frac("start", 0.0) * level), Stage(up, level),
              Stage(D - up - down, level)]
        if down:
            st.append(Stage(down, 0.0))
        return st
    if name == "step":
        n = int(p.get("steps", 4))
        if n < 1:
            raise ValueError("shape step: steps must be >= 1")
        first = frac("start", 1.0 / n) * level
        st = []
        for i in range(n):
            lv = first + (level - first) * (i / (n - 1) if n > 1 else 1.0)
            st += [Stage(0.0, lv), Stage(D / n, lv)]
        return st
    if name == "spike":
        base = frac("base", 0.25) * level
        at, length = dur("at", 0.4 * D), dur("length", 0.2 * D)
        if at + length > D:
            raise ValueError("shape spike: at + length exceed the duration")
        return [Stage(0.0, base), Stage(at, base), Stage(0.0, level), Stage(length, level),
                Stage(0.0, base), Stage(D - at - length, base)]
    if name == "soak":
        up = dur("ramp_up", 0.0)
        return ([Stage(up, level)] if up else [Stage(0.0, level)]) + [Stage(D - up, level)]
    raise ValueError(f"unknown shape {name!r}")


class Profile:
    """A piecewise-linear level over [0, duration): level(t), its integral and the inverse."""

    def __init__(self, stages: list[Stage], start_level: float = 0.0):
        self.segments: list[tuple[float, float, float, float, float]] = []  # t0,t1,l0,l1,cum0
        t, lv, cum = 0.0, float(start_level), 0.0
        for s in stages:
            if s.duration_s <= 0:
                lv = float(s.target)
                continue
            t1, l1 = t + s.duration_s, float(s.target)
            self.segments.append((t, t1, lv, l1, cum))
            cum += (lv + l1) / 2 * s.duration_s
            t, lv = t1, l1
        self.duration_s = t
        self.total = cum
        self.peak = max([max(a[2], a[3]) for a in self.segments], default=0.0)

    @classmethod
    def constant(cls, level: float, duration_s: float) -> Profile:
        return cls([Stage(0.0, level), Stage(duration_s, level)])

    def level(self, t: float) -> float:
        for t0, t1, l0, l1, _ in self.segments:
            if t0 <= t < t1:
                return l0 + (l1 - l0) * (t - t0) / (t1 - t0)
        return 0.0

    def cumulative(self, t: float) -> float:
        """Expected arrivals in [0, t) (integral of the level)."""
        for t0, t1, l0, l1, c0 in self.segments:
            if t < t1:
                if t <= t0:
                    return c0
                x = t - t0
                slope = (l1 - l0) / (t1 - t0)
                return c0 + l0 * x + slope * x * x / 2
        return self.total

    def time_at(self, cum: float) -> float | None:
        """The time where cumulative() reaches `cum`, or None past the end."""
        if cum < 0 or cum >= self.total:
            return None
        for t0, t1, l0, l1, c0 in self.segments:
            c1 = c0 + (l0 + l1) / 2 * (t1 - t0)
            if cum < c1:
                need = cum - c0
                slope = (l1 - l0) / (t1 - t0)
                if abs(slope) < 1e-12:
                    return t0 + need / l0
                # l0*x + slope*x^2/2 = need  ->  stable root of the quadratic
                disc = max(l0 * l0 + 2 * slope * need, 0.0)
                return t0 + 2 * need / (l0 + math.sqrt(disc))
        return None
