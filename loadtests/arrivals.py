"""Intended arrival times of the open model, split exactly across workers.

Global arrival j is due where the profile's cumulative count reaches j + 0.5 (constant process)
or at the points of a Poisson process with that intensity. Worker i of n takes every n-th
constant arrival (j = i, i+n, ...) so the union over workers is exactly the global stream; for
Poisson each worker runs an independent process at 1/n of the intensity, whose superposition is
the global Poisson process.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from loadtests.profile import Profile

PROCESSES = ("constant", "poisson")


def arrival_times(profile: Profile, process: str = "constant", *, index: int = 0,
                  count: int = 1, seed: int | None = None) -> Iterator[float]:
    """Seconds from the start of the run at which this worker's sessions are due."""
    if process not in PROCESSES:
        raise ValueError(f"arrival process {process!r}: expected constant or poisson")
    if not 0 <= index < count:
        raise ValueError("worker index out of range")
    if process == "constant":
        j = index
        while True:
            t = profile.time_at(j + 0.5)
            if t is None:
                return
            yield t
            j += count
    rng = random.Random(None if seed is None else (seed * 1_000_003 + index))
    cum = 0.0
    while True:
        cum += rng.expovariate(1.0) * count
        t = profile.time_at(cum)
        if t is None:
            return
        yield t
