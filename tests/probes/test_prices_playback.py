"""Price table and the player arithmetic (stalls, rtf, gaps) with plain numbers."""

from __future__ import annotations

import pytest

from probes import playback, prices
from probes.results import Usage


def test_known_models_snapshots_and_unknown():
    assert prices.price_for("gpt-realtime").audio_out == 64.0
    assert prices.price_for("gpt-realtime-2025-08-28") == prices.price_for("gpt-realtime")
    assert prices.price_for("gpt-realtime-mini").audio_in == 10.0  # not gpt-realtime's price
    assert prices.price_for("gpt-4o-mini-realtime-preview").text_out == 2.40
    assert prices.price_for("gpt-4o-realtime-preview-2024-12-17").audio_in == 40.0
    assert prices.price_for("sim-fast") == prices.FREE
    assert prices.price_for("gpt-realtime-ultra") is None
    assert prices.cost_usd("no-such-model", Usage(in_audio=100)) is None


def test_cost_arithmetic_with_cache_split():
    u = Usage(in_text=119, in_audio=13, out_text=30, out_audio=91, in_cached=64, in_cached_audio=0)
    # gpt-realtime: text 4 / 0.40 cached / 16, audio 32 / 0.40 / 64 per 1M
    expected = ((119 - 64) * 4 + 64 * 0.40 + 30 * 16 + 13 * 32 + 91 * 64) / 1e6
    assert prices.cost_usd("gpt-realtime", u) == pytest.approx(expected, rel=1e-12)
    assert prices.cost_usd("sim-fast", u) == 0.0


def test_overrides():
    u = Usage(in_audio=1_000_000, out_audio=1_000_000)
    assert prices.cost_usd("sim-fast", u, {"audio_in": 1.0, "audio_out": 2.0}) == pytest.approx(3.0)
    full = dict.fromkeys(["text_in", "text_cached", "text_out", "audio_in", "audio_cached"], 0.0)
    assert prices.cost_usd("mystery", u, {**full, "audio_out": 5.0}) == pytest.approx(5.0)
    assert prices.cost_usd("mystery", u, {"audio_out": 5.0}) is None  # half a price is a guess
    with pytest.raises(ValueError, match="audio_outt"):
        prices.cost_usd("sim-fast", u, {"audio_outt": 1.0})


MS = 1_000_000


def test_no_stall_when_faster_than_real_time():
    t = [0, 10 * MS, 20 * MS, 30 * MS]
    assert playback.stalls(t, [0.1] * 4, 100) == (0, 0.0)


def test_slow_stream_stall_arithmetic():
    # 0.1 s chunks delivered at 0.5x real time (every 200 ms), 100 ms jitter buffer.
    t = [k * 200 * MS for k in range(5)]
    count, total = playback.stalls(t, [0.1] * 5, 100)
    # chunk 1 is needed at 100+100=200 ms and arrives at 200: no stall; each later one is 100 ms late
    assert count == 3 and total == pytest.approx(300.0)
    # closed form: the running max of (arrival - audio before it) minus the start
    assert total == pytest.approx((t[-1] - 0.4e9 - 100 * MS) / MS)
    assert playback.rtf(t, [0.1] * 5) == pytest.approx(0.5)


def test_gaps_and_percentile():
    t = [0, 10 * MS, 30 * MS, 60 * MS]
    assert playback.gaps_ms(t) == [10.0, 20.0, 30.0]
    assert playback.percentile([10.0, 20.0, 30.0], 95) == 30.0
    assert playback.percentile(list(range(1, 101)), 50) == 50
    assert playback.percentile([], 95) is None
    assert playback.rtf([5], [0.1]) is None
