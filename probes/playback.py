"""What a listener would have heard: the simulated player and delivery statistics of a reply.

Pure functions over the arrival marks the receiver collected, so they are unit-tested with
plain numbers and cost nothing on the hot path (they run once per turn).
"""

from __future__ import annotations

import math


def stalls(
    arrivals_ns: list[int], durations_s: list[float], jitter_buffer_ms: float
) -> tuple[int, float]:
    """(count, total ms) of underruns of a player that starts `jitter_buffer_ms` after the first
    chunk arrives, plays in real time, and resumes the moment the missing chunk arrives.

    Chunk k is needed at start + (audio before k) + (stall so far); it stalls if it arrives later.
    """
    if not arrivals_ns:
        return 0, 0.0
    play_ns = arrivals_ns[0] + int(jitter_buffer_ms * 1e6)  # wall time of audio position 0
    have_s = 0.0  # audio received before chunk k
    count = 0
    total_ns = 0
    for t, d in zip(arrivals_ns, durations_s, strict=True):
        need = play_ns + int(have_s * 1e9)
        if t > need:
            count += 1
            total_ns += t - need
            play_ns += t - need
        have_s += d
    return count, total_ns / 1e6


def rtf(arrivals_ns: list[int], durations_s: list[float]) -> float | None:
    """Delivery speed relative to real time: audio after the first chunk / time to deliver it.

    Measured from the first chunk's arrival, so a steady stream at speed s gives exactly s
    whatever the chunk count (audio_s / (last - first) would overstate it by n/(n-1)).
    """
    if len(arrivals_ns) < 2:
        return None
    span = arrivals_ns[-1] - arrivals_ns[0]
    if span <= 0:
        return None
    return (sum(durations_s) - durations_s[0]) / (span / 1e9)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of a small list; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(math.ceil(p / 100.0 * len(s)) - 1, 0)
    return s[min(k, len(s) - 1)]


def gaps_ms(arrivals_ns: list[int]) -> list[float]:
    return [(b - a) / 1e6 for a, b in zip(arrivals_ns, arrivals_ns[1:], strict=False)]
