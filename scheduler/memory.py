"""Keeping the long-running probe service's memory flat (issue 11).

Two causes, both measured with benchmarks/soak.py (numbers: README.md, "issue 11"):

- hdrh histograms were reference cycles (HdrHistogram <-> its encoder) around a 172 KiB counts
  buffer. The aggregator's histograms live for their 10 s interval, so they died in the oldest
  GC generation, which CPython collects only now and then: ~100 dead histograms (17 MB) were
  waiting at once. `collect` runs that full collection on a fixed beat; since
  telemetry.hdr.acyclic gives the encoder a weak back-reference the histograms are freed at
  once, and the beat is a backstop for other cycles.
- glibc's dynamic mmap threshold: the first freed 172 KiB block raises it, and from then on such
  blocks come from the malloc arenas (one per probe thread, up to 8 x cores of them) whose holes
  are not given back. A fixed threshold keeps blocks >= 128 KiB on mmap, returned when freed.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time

COLLECT_EVERY_S = 30.0  # a full collection took ~20 ms with ~45,000 objects
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, now kept fixed
OWN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune_malloc() -> dict:
    """Fix glibc's mmap threshold (idempotent); what was done, for /status and the soak."""
    if not sys.platform.startswith("linux"):
        return {"mmap_threshold": None, "why": "not Linux"}
    given = [k for k in OWN_SETTINGS if k in os.environ]
    if given:  # the operator tuned malloc: theirs wins (either one turns the dynamic one off)
        return {"mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "why": given[0]}
    try:
        ok = ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    except (OSError, AttributeError):  # musl and others: no glibc, nothing to tune
        return {"mmap_threshold": None, "why": "not glibc"}
    return {"mmap_threshold": MMAP_THRESHOLD if ok else None,
            "why": "fixed" if ok else "mallopt refused"}


class Collector:
    """The periodic full collection, with what it found (for /status and the soak)."""

    def __init__(self) -> None:
        self.runs = 0
        self.collected = 0
        self.last_ms: float | None = None

    def __call__(self) -> None:
        t = time.perf_counter()
        self.collected += gc.collect()
        self.last_ms = round((time.perf_counter() - t) * 1000, 1)
        self.runs += 1

    def stats(self) -> dict:
        return {"gc_every_s": COLLECT_EVERY_S, "gc_runs": self.runs,
                "gc_collected": self.collected, "gc_last_ms": self.last_ms}
