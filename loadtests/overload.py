"""Is the load generator itself the bottleneck? The verdict on one worker's window of data.

A p99 over a few dozen turns is the worst turn, and one hiccup of a shared machine (another
process taking the core for 14 ms, once) then marked a light run OVERLOADED. The verdict is
therefore taken from counts, with the sample count beside them, over the window (one 10 s
interval of one worker):

- **send lag** per chunk: a turn whose *median* chunk lag passed the bound was late for most of
  its chunks (one hiccup cannot do that); the window is overloaded when more than
  `SHARE` of at least `MIN_TURNS` turns were. The turns whose own send lag p99 passed the bound
  are counted too and reported (they are what a hiccup produces), but do not decide alone.
- **loop lag**: more than `SHARE` of at least `MIN_LOOP_SAMPLES` wake-ups of the 50 ms probe
  late by more than the bound (a sustained second of lag per 10 s, not one spike);
- **CPU** of a report over `overload_cpu_pct`, as before.

The worker counts the slow turns against `load.overload_lag_ms` (loadtests/worker.py,
`Counters.slow_turns`); the rest is counted from the window's send-lag and loop-lag histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.metrics import Delta

#: share of a window's turns (most chunks late) or wake-ups (late) that marks it overloaded
SHARE = 0.10
#: fewer turns than this in a window cannot carry a send-lag verdict
MIN_TURNS = 5
#: fewer loop probes than this (1 s of them) cannot carry a loop-lag verdict
MIN_LOOP_SAMPLES = 20


@dataclass(slots=True)
class WindowLag:
    """What a window holds for the verdict: counts, never a lone percentile."""

    turns: int = 0  # turns with a send lag (they streamed audio)
    slow_turns: int = 0  # turns whose median chunk lag passed the bound
    lag_turns: int = 0  # turns whose own send lag p99 passed the bound
    loop_samples: int = 0
    loop_late: int = 0

    @classmethod
    def of(cls, d: Delta, bound_ms: float) -> WindowLag:
        send = d.hist.get("send_lag_ms")  # one value per turn: its own chunk-lag p99
        loop = d.hist.get("loop_lag_ms")  # one per 50 ms probe
        return cls(turns=send.count if send is not None else 0, slow_turns=d.counters.slow_turns,
                   lag_turns=send.count_above(bound_ms) if send is not None else 0,
                   loop_samples=loop.count if loop is not None else 0,
                   loop_late=loop.count_above(bound_ms) if loop is not None else 0)


def reasons(w: WindowLag, bound_ms: float, cpu: float | None = None,
            cpu_bound: float | None = None) -> list[str]:
    """Why this window's generator was overloaded (empty: it was not)."""
    out = []
    if w.turns >= MIN_TURNS and w.slow_turns > SHARE * w.turns:
        out.append(f"send lag over {bound_ms:g} ms for most chunks of {w.slow_turns} of "
                   f"{w.turns} turns ({w.slow_turns / w.turns:.0%})")
    if w.loop_samples >= MIN_LOOP_SAMPLES and w.loop_late > SHARE * w.loop_samples:
        out.append(f"event-loop lag over {bound_ms:g} ms in {w.loop_late} of "
                   f"{w.loop_samples} wake-ups ({w.loop_late / w.loop_samples:.0%})")
    if cpu is not None and cpu_bound is not None and cpu > cpu_bound:
        out.append(f"CPU {cpu:.0f} % > {cpu_bound:g} %")
    return out


def overloaded(d: Delta, bound_ms: float) -> bool:
    """The verdict on a window's merged delta (lag only)."""
    return bool(reasons(WindowLag.of(d, bound_ms), bound_ms))
