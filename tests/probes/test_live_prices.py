"""GPT-Live's per-second pricing: cost from the server's usage seconds, else wall time."""

from __future__ import annotations

import math

import pytest

from probes import prices
from probes.results import Usage


def test_per_minute_rates_billed_by_the_second():
    assert prices.session_cost_usd("gpt-live-1", 60.0, None) == pytest.approx(0.05)
    assert prices.session_cost_usd("gpt-live-1", 90.4, None) == pytest.approx(0.05 * 90.4 / 60)
    assert prices.session_cost_usd("gpt-live-1.1", 6.2, None) == pytest.approx(0.05 * 6.2 / 60)


def test_usage_seconds_win_over_wall_time_which_is_the_fallback():
    assert prices.session_cost_usd("gpt-live-1", 30.0, 45.0) == pytest.approx(0.025)
    assert prices.session_cost_usd("gpt-live-1", None, 45.0) == pytest.approx(0.0375)
    assert prices.session_cost_usd("gpt-live-1", None, None) is None
    assert prices.session_cost_usd("gpt-live-1", 0.0, 45.0) == 0.0  # 0 reported is a value


def test_standby_only_on_1_1_and_never_more_than_the_total():
    # 1.1: 40 s paused of 100 s at $0.02/min, the rest at $0.05/min
    assert prices.session_cost_usd("gpt-live-1.1", 100, None, paused_seconds=40) == (
        pytest.approx((60 * 0.05 + 40 * 0.02) / 60))
    # gpt-live-1 has no standby rate: paused time is active time
    assert prices.session_cost_usd("gpt-live-1", 100, None, paused_seconds=40) == (
        pytest.approx(100 * 0.05 / 60))
    assert prices.session_cost_usd("gpt-live-1.1", 10, None, paused_seconds=99) == (
        pytest.approx(10 * 0.02 / 60))


def test_snapshots_simulator_and_unpriced_models():
    assert prices.second_price_for("gpt-live-1-2026-09-01") == prices.SECOND_PRICES["gpt-live-1"]
    assert prices.second_price_for("gpt-live-1.1") == prices.SECOND_PRICES["gpt-live-1.1"]
    assert prices.session_cost_usd("sim-live", 12.0, None) == pytest.approx(0.01)
    assert prices.session_cost_usd("gpt-realtime", 60, 60) is None  # billed by the token
    assert prices.second_price_for("gpt-live-10") is None  # not a snapshot of gpt-live-1
    # a per-second model has no token price: a turn costs None, never a guess
    assert prices.cost_usd("gpt-live-1", Usage(out_audio=100)) is None


def test_overrides_per_second_and_alongside_token_keys():
    assert prices.session_cost_usd("gpt-live-1", 60, None, {"active_per_min": 0.1}) == (
        pytest.approx(0.1))
    assert prices.session_cost_usd("my-deployment", 60, None, {"active_per_min": 0.06}) == (
        pytest.approx(0.06))
    assert prices.session_cost_usd("my-deployment", 60, None, {"standby_per_min": 0.01}) is None
    # per-second keys in a target's prices do not break its per-token cost, and vice versa
    mixed = {"active_per_min": 0.1, "audio_out": 1.0}
    assert prices.cost_usd("gpt-realtime", Usage(out_audio=1_000_000), mixed) == pytest.approx(1.0)
    assert prices.session_cost_usd("gpt-live-1", 60, None, mixed) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown price keys"):
        prices.cost_usd("gpt-realtime", Usage(), {"per_second": 1})


def test_cost_is_linear_in_seconds():
    a = prices.session_cost_usd("gpt-live-1", 1.0, None)
    assert all(math.isclose(prices.session_cost_usd("gpt-live-1", s, None), a * s)
               for s in (0.5, 7.3, 7200.0))
