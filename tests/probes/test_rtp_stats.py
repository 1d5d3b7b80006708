"""RTP receive arithmetic with plain numbers: gaps, 16-bit wraparound, late packets, jitter."""

from __future__ import annotations

import random

import pytest

from probes.rtp_stats import RtpStats

TS = 960  # 20 ms of Opus at 48 kHz


def feed(st: RtpStats, seqs, jitter=None):
    kinds = []
    for seq in seqs:
        t = (seq % 65536) * 0.02 if jitter is None else jitter(seq)
        kinds.append(st.packet(seq & 0xFFFF, (seq * TS) & 0xFFFFFFFF, t))
    return kinds


def test_no_loss_no_jitter():
    st = RtpStats()
    feed(st, range(100, 600))
    s = st.snapshot()
    assert (s.received, s.lost, s.late, s.expected) == (500, 0, 0, 500)
    assert s.jitter_ms == 0.0


def test_gaps_counted_as_lost():
    st = RtpStats()
    feed(st, [s for s in range(1000) if s % 10 != 3])  # every tenth packet missing
    assert st.lost == 100 and st.expected == 1000 and st.late == 0
    assert st.snapshot().loss_ratio == pytest.approx(0.1)


def test_wraparound_is_not_loss():
    st = RtpStats()
    feed(st, range(65500, 65600))  # 65500..65535 then 0..63
    assert (st.received, st.lost, st.expected) == (100, 0, 100)


def test_gap_across_wraparound():
    st = RtpStats()
    feed(st, [s for s in range(65530, 65545) if s not in (65535, 65536, 65537)])
    assert st.lost == 3 and st.expected == 15


def test_late_packet_fills_gap_and_is_not_lost():
    st = RtpStats()
    kinds = feed(st, [1, 2, 4, 5, 3, 6])
    assert kinds[4] == "late"
    assert (st.lost, st.late, st.received) == (0, 1, 6)


def test_duplicate_not_counted_twice():
    st = RtpStats()
    kinds = feed(st, [1, 2, 2, 3])
    assert kinds[2] == "duplicate" and st.received == 3 and st.duplicates == 1


def test_restart_after_large_jump():
    st = RtpStats()
    feed(st, range(10))
    assert st.packet(20000, 0, 1.0) == "restart"
    assert st.expected == 1 and st.received == 1


def test_jitter_constant_offset_is_zero():
    # a fixed network delay is not jitter
    st = RtpStats()
    feed(st, range(200), jitter=lambda s: s * 0.02 + 0.150)
    assert st.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_jitter_alternating_delay_converges_to_amplitude():
    # transit alternates 0 / 10 ms: |D| is 10 ms every packet, so J converges to 10 ms
    st = RtpStats()
    feed(st, range(2000), jitter=lambda s: s * 0.02 + (0.010 if s % 2 else 0.0))
    assert st.jitter_ms == pytest.approx(10.0, rel=1e-3)


def test_jitter_uniform_delay_matches_expectation():
    # uniform delay in [0, a): E|D| of two independent draws is a/3; J estimates E|D|
    rng = random.Random(7)
    st = RtpStats()
    a = 0.030
    feed(st, range(20000), jitter=lambda s: s * 0.02 + rng.random() * a)
    assert st.jitter_ms == pytest.approx(a / 3 * 1000, rel=0.1)


def test_jitter_timestamp_wraparound():
    st = RtpStats()
    base = 0xFFFFFFFF - 5 * TS
    for i in range(20):
        st.packet(i, (base + i * TS) & 0xFFFFFFFF, i * 0.02)
    assert st.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_random_loss_rate_measured():
    rng = random.Random(3)
    sent = range(5000)
    got = [s for s in sent if rng.random() >= 0.05]
    st = RtpStats()
    feed(st, got)
    # loss at the very end is invisible (no later packet); count only what the gaps show
    assert st.lost == got[-1] - got[0] + 1 - len(got)
