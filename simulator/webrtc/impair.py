"""What the WebRTC faults do to one call's outgoing RTP, as plain decisions on a seeded source.

`rtp_loss` drops a fraction `rate` of the packets, one at a time (`burst: 1`) or in runs of
exactly `burst` consecutive packets. A run starts at a packet not already in one with probability
q = rate / (burst * (1 - rate) + rate): a renewal cycle is a geometric number of sent packets
(mean (1 - q) / q) and then `burst` dropped ones, so the long-run dropped fraction is
burst / ((1 - q) / q + burst) = rate, whatever the burst length.

`rtp_jitter` holds every packet it does not drop for a delay drawn uniformly from
[min_ms, max_ms] before it goes to the wire. The holds are independent, so once the spread is
wider than the packet interval (20 ms) packets can overtake each other, as on a real path with
jitter. A receiver's RFC 3550 interarrival jitter is then about E|d1 - d2| for two delays in
arrival order: (max_ms - min_ms) / 3 while the spread is at most the packet interval.

RTCP is never touched (the caller of `decide` only asks about RTP). Stdlib only: this is the
simulator, tested with plain data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MAX_SEQS = 5000


def burst_start_probability(rate: float, burst: int) -> float:
    """q such that runs of `burst` drops started with probability q drop `rate` of packets."""
    if rate <= 0:
        return 0.0
    if rate >= 1:
        return 1.0
    return rate / (burst * (1 - rate) + rate)


@dataclass(slots=True)
class Impairment:
    """One call's RTP dice and counters. `decide()` per outgoing RTP packet: None = dropped,
    else the seconds to hold it (0.0 = send now)."""

    rng: random.Random
    loss_rate: float = 0.0
    burst: int = 1
    min_ms: float = 0.0
    max_ms: float = 0.0
    packets: int = 0  # RTP packets the sender handed over
    dropped: int = 0
    held: int = 0  # packets held for a non-zero delay
    held_ms_sum: float = 0.0
    #: RTP sequence numbers of the dropped packets (the first MAX_SEQS), noted by the sender hook
    dropped_seqs: list[int] = field(default_factory=list)
    _q: float = 0.0
    _left: int = 0  # drops left in the current run

    def __post_init__(self) -> None:
        self._q = burst_start_probability(self.loss_rate, self.burst)

    @property
    def jitter(self) -> bool:
        return self.max_ms > 0

    def decide(self) -> float | None:
        self.packets += 1
        if self._left > 0:
            self._left -= 1
            self.dropped += 1
            return None
        if self._q > 0 and self.rng.random() < self._q:
            self._left = self.burst - 1
            self.dropped += 1
            return None
        if not self.jitter:
            return 0.0
        ms = self.rng.uniform(self.min_ms, self.max_ms)
        if ms > 0:
            self.held += 1
            self.held_ms_sum += ms
        return ms / 1000

    def note_drop(self, seq: int) -> None:
        if len(self.dropped_seqs) < MAX_SEQS:
            self.dropped_seqs.append(seq)

    def record(self) -> dict:
        return {"rtp_packets": self.packets, "rtp_dropped": self.dropped, "rtp_held": self.held,
                "rtp_held_ms_mean": round(self.held_ms_sum / self.held, 3) if self.held else 0.0,
                "rtp_dropped_seqs": list(self.dropped_seqs)}


def from_faults(faults: list, rng: random.Random) -> Impairment | None:
    """The impairment of a call given its picked faults (rtp_loss / rtp_jitter), or None.
    Each fault's own seeded source (if it has one) seeds the call's dice, so a seeded fault
    falls the same way for the same sequence of calls."""
    loss = next((f for f in faults if f.kind == "rtp_loss"), None)
    jit = next((f for f in faults if f.kind == "rtp_jitter"), None)
    if loss is None and jit is None:
        return None
    src = next((f.rng for f in (loss, jit) if f is not None and f.rng is not None), None) or rng
    imp = Impairment(random.Random(src.getrandbits(64)))
    if loss is not None:
        imp.loss_rate, imp.burst = float(loss.params["rate"]), int(loss.params["burst"])
        imp.__post_init__()
    if jit is not None:
        imp.min_ms, imp.max_ms = float(jit.params["min_ms"]), float(jit.params["max_ms"])
    return imp
