"""Receive-side RTP health of one stream, from plain numbers: packets received, lost (sequence gaps),
late (arrived after a later sequence number), and RFC 3550 interarrival jitter.

Pure arithmetic on (sequence number, RTP timestamp, arrival time) so it is tested with plain data
and fed by whatever hooks the transport has (aiortc: the receiver's packet handler, before the
jitter buffer). Sequence numbers are 16-bit and wrap; they are extended to a 64-bit count as in
RFC 3550 Appendix A.1. A packet that fills a gap later is counted late and taken off `lost`, so
`lost` is what never came.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEQ_MOD = 1 << 16
#: a jump forward larger than this is a restart (RFC 3550 A.1 MAX_DROPOUT), not loss
MAX_DROPOUT = 3000
#: a packet this far behind the highest one is a stale duplicate, not a late packet
MAX_MISORDER = 100


@dataclass(slots=True)
class RtpSnapshot:
    received: int
    lost: int
    late: int
    duplicates: int
    expected: int
    jitter_ms: float

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.expected if self.expected else 0.0


class RtpStats:
    """Per-stream counters; `clock_rate` converts RTP timestamps (48000 for Opus) to time."""

    __slots__ = ("clock_rate", "_base", "_max", "_seen", "received", "late", "duplicates",
                 "_jitter", "_last_transit")

    def __init__(self, clock_rate: int = 48000) -> None:
        self.clock_rate = clock_rate
        self._base: int | None = None  # extended sequence number of the first packet
        self._max = 0  # highest extended sequence number
        self._seen: set[int] = set()  # extended numbers within MAX_MISORDER of _max
        self.received = 0
        self.late = 0
        self.duplicates = 0
        self._jitter = 0.0  # in timestamp units, as RFC 3550 6.4.1
        self._last_transit: float | None = None

    def _extend(self, seq: int) -> int:
        """The extended sequence number of 16-bit `seq`: the one nearest the highest so far."""
        seq &= 0xFFFF
        if self._base is None:
            return seq
        cycles = self._max - (self._max & 0xFFFF)
        cand = cycles + seq
        if cand - self._max > _SEQ_MOD // 2:
            cand -= _SEQ_MOD
        elif self._max - cand > _SEQ_MOD // 2:
            cand += _SEQ_MOD
        return cand

    def packet(self, seq: int, rtp_ts: int, arrival_s: float) -> str:
        """Count one packet; returns "new", "late", "duplicate" or "restart"."""
        ext = self._extend(seq)
        self._update_jitter(rtp_ts, arrival_s)
        if self._base is None or ext - self._max > MAX_DROPOUT:
            kind = "new" if self._base is None else "restart"
            if self._base is not None:  # a restart: start counting afresh from here
                self.received = self.late = self.duplicates = 0
            self._base = self._max = ext
            self._seen = {ext}
            self.received += 1
            return kind
        if ext in self._seen or self._max - ext > MAX_MISORDER:
            self.duplicates += 1
            return "duplicate"
        self._seen.add(ext)
        self.received += 1
        self._base = min(self._base, ext)  # a reordered first packet widens the range
        if ext < self._max:
            self.late += 1
            return "late"
        self._max = ext
        if len(self._seen) > 4 * MAX_MISORDER:
            floor = self._max - MAX_MISORDER
            self._seen = {s for s in self._seen if s >= floor}
        return "new"

    def _update_jitter(self, rtp_ts: int, arrival_s: float) -> None:
        """RFC 3550 6.4.1: J += (|D| - J) / 16, D the change in transit time between packets in
        arrival order (timestamps are 32-bit: the difference is taken modulo 2^32)."""
        transit = arrival_s * self.clock_rate - rtp_ts
        if self._last_transit is not None:
            d = transit - self._last_transit
            d = (d + (1 << 31)) % (1 << 32) - (1 << 31)  # timestamp wraparound
            self._jitter += (abs(d) - self._jitter) / 16
        self._last_transit = transit

    @property
    def expected(self) -> int:
        return 0 if self._base is None else self._max - self._base + 1

    @property
    def lost(self) -> int:
        """Packets expected and never received (late arrivals are not lost)."""
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000 / self.clock_rate

    def snapshot(self) -> RtpSnapshot:
        return RtpSnapshot(self.received, self.lost, self.late, self.duplicates, self.expected,
                           round(self.jitter_ms, 3))
