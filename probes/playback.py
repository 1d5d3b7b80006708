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


def rank(n: int, p: float) -> int:
    """The nearest rank of percentile p (0..100) among n sorted values: ceil(p/100 * n), kept
    within 1..n. The house's one percentile rule (telemetry/stats.py and the HDR readers in
    telemetry/hdr.py call this; `probes` imports nothing of ours, so it lives here).

    Example: 7 values, p90: 6.3 -> rank 7, the maximum (rounding would pick the 6th);
    20 values, p95: exactly 19 -> the 19th. p*n/100 is rounded to 9 decimals before the
    ceiling so float noise (0.07 * 100 = 7.000000000000001) cannot add a rank.
    """
    return min(max(math.ceil(round(p * n / 100.0, 9)), 1), n)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100, `rank`) of a small list; None when empty. The one
    implementation for raw values: telemetry.stats.percentile is this function."""
    if not values:
        return None
    s = sorted(values)
    return s[rank(len(s), p) - 1]


def gaps_ms(arrivals_ns: list[int]) -> list[float]:
    return [(b - a) / 1e6 for a, b in zip(arrivals_ns, arrivals_ns[1:], strict=False)]
