"""The reply's delta schedule, shared by every protocol: delta i is due at slot start + i * period
(plus optional jitter), on an absolute clock, so a late delta never delays the next one."""

from __future__ import annotations

import asyncio
import time


def jitter_of(profile):
    """The profile's delta jitter, or None when it is a fixed zero (the common, cheap case)."""
    j = profile.delta_jitter_ms
    return None if j.dist == "fixed" and j.value == 0 else j


async def until_due(i: int, slot: list[int], jitter, rng) -> int:
    """Sleep until delta i is due; returns its deadline (monotonic ns). `slot` is
    [first_ns, period_ns], a list because a stall fault moves it."""
    deadline = slot[0] + i * slot[1]
    if jitter is not None:
        deadline += int(max(0.0, jitter.sample(rng)) * 1e6)
    wait = deadline - time.monotonic_ns()
    if wait > 0:
        await asyncio.sleep(wait / 1e9)
    return deadline


def audio_sent(truth, lateness, sent_ns: int, deadline: int, chunk_ms: float) -> None:
    """Record an audio delta written at `sent_ns` in the turn's ground truth."""
    if truth.first_audio_ns is None:
        truth.first_audio_ns = sent_ns
    lateness.add((sent_ns - deadline) // 1000)
    truth.deltas += 1
    truth.reply_audio_ms += chunk_ms
