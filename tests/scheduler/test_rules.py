"""Rule math with plain data: expressions, burn rates over scaled windows, the regression test."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.config import DEFAULT_TIERS, RegressionRule, Slo, ThresholdRule
from scheduler.rules import (
    burn_rate,
    compare,
    evaluate_burn,
    evaluate_regression,
    evaluate_threshold,
    human,
    parse_expr,
    regression_windows,
)
from scheduler.source import Counts, MemorySource
from tests.scheduler.helpers import result

NOW = 1_800_000_000.0


def test_parse_expr() -> None:
    assert parse_expr("ttfa_ms.p95 > 900") == ("ttfa_ms", "p95", ">", 900.0)
    assert parse_expr("turn_ms.p50>=1.5s") == ("turn_ms", "p50", ">=", 1500.0)
    assert parse_expr("error_rate > 5%") == ("error_rate", "value", ">", 0.05)
    for bad in ("ttfa_ms.p42 > 1", "ttfa_ms.p95 = 3", "> 900", "error_rate.p95 > 1"):
        with pytest.raises(ValueError):
            parse_expr(bad)


def test_human_windows() -> None:
    assert [human(s) for s in (3600, 300, 259200, 21600, 36, 0.5)] == \
        ["1h", "5m", "3d", "6h", "36s", "500ms"]


def test_burn_rate_is_error_ratio_over_budget() -> None:
    assert burn_rate(Counts(1000, 990), 0.005) == pytest.approx(2.0)
    assert burn_rate(Counts(0, 0), 0.005) is None


def _slo() -> Slo:
    return Slo("avail", "t", "availability", objective=0.995)


def _fill(src: MemorySource, start: float, end: float, step: float, ok) -> None:
    t = start
    while t < end:
        src.record(result("t", t, ok=ok(t), ttfa=[500.0]))
        t += step


def test_fast_burn_needs_both_windows() -> None:
    """14.4x over 1h AND 5m (scaled by 0.01: 36 s and 3 s). A short blip trips the short window
    only, so it must not page; a sustained outage trips both."""
    scale, page = 0.01, DEFAULT_TIERS[0]
    src = MemorySource()
    _fill(src, NOW - 40, NOW, 0.25, ok=lambda t: t < NOW - 3)  # last 3 s failing
    v = evaluate_burn(_slo(), page, src, NOW, scale)
    # 12 of 144 failing in 36 s -> ratio 0.083 -> 16.7x ... both above: a page
    assert v.window == "36s&3s"
    long_ratio = 12 / 144
    assert v.breach is (long_ratio / 0.005 > 14.4)
    src2 = MemorySource()
    _fill(src2, NOW - 40, NOW, 0.25, ok=lambda t: not (NOW - 3 <= t < NOW - 2.5))  # 2 failures
    v2 = evaluate_burn(_slo(), page, src2, NOW, scale)
    # long window: 2/144 = 1.4 % -> 2.8x, below 14.4: no page though the short window burns
    assert v2.breach is False
    assert "over 36s" in v2.message


def test_burn_no_data_is_unknown() -> None:
    v = evaluate_burn(_slo(), DEFAULT_TIERS[0], MemorySource(), NOW, 0.01)
    assert v.breach is None


def test_latency_slo_counts_turns_over_the_bound() -> None:
    slo = Slo("lat", "t", "latency", objective=0.95, below_ms=800)
    src = MemorySource()
    for i in range(100):
        src.record(result("t", NOW - 30 + i * 0.25, ttfa=[900.0 if i % 4 == 0 else 500.0]))
    v = evaluate_burn(slo, DEFAULT_TIERS[1], src, NOW, 0.01)  # 6h&30m -> 216s&18s
    # long window (216 s): all 100 turns, i % 4 == 0 bad -> 25/100; short window (18 s): turns
    # at NOW-30+i/4 >= NOW-18, i = 48..99 -> 52 turns, 13 bad (48, 52, ..., 96) -> 13/52.
    # Both burn 0.25 / (1 - 0.95) = 5x, below 6x; the value is the smaller, to 4 decimals.
    assert v.window == "216s&18s"
    budget = 1 - 0.95
    assert v.value == round(min((25 / 100) / budget, (13 / 52) / budget), 4) == 5.0
    assert v.breach is False
    assert v.message.startswith("burn rate 5x over 216s, 5x over 18s")
    v = evaluate_burn(slo, DEFAULT_TIERS[2], src, NOW, 0.01)  # 1x tier: a ticket
    assert v.breach is True


def test_threshold_p95_and_error_rate() -> None:
    src = MemorySource()
    for i in range(100):
        src.record(result("t", NOW - 50 + i * 0.5, ok=i % 10 != 0, ttfa=[float(i * 10)]))
    rule = ThresholdRule("p95", "t", "ttfa_ms", "p95", ">", 900.0, over_s=60)
    v = evaluate_threshold(rule, src, NOW)
    assert v.breach is True and v.value == pytest.approx(940.0)  # nearest rank: the 95th of 0..990
    rule = ThresholdRule("err", "t", "error_rate", "value", ">", 0.05, over_s=60)
    assert evaluate_threshold(rule, src, NOW).value == pytest.approx(0.1)
    rule = ThresholdRule("err", "t", "error_rate", "value", ">", 0.15, over_s=60)
    assert evaluate_threshold(rule, src, NOW).breach is False


def test_compare_detects_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(7)
    base = list(rng.lognormal(np.log(500), 0.2, 200))
    same = list(rng.lognormal(np.log(500), 0.2, 40))
    slower = list(rng.lognormal(np.log(750), 0.2, 40))
    c = compare(slower, base)
    assert c.p_value < 1e-6 and c.median_growth == pytest.approx(0.5, abs=0.15)
    c = compare(same, base)
    assert c.p_value > 0.01


def _regression_src(growth: float, n_recent: int = 30, seed: int = 3) -> MemorySource:
    rng = np.random.default_rng(seed)
    src = MemorySource()
    for i in range(200):  # baseline: 864 s (24 h scaled by 0.01) before the recent window
        src.record(result("t", NOW - 18 - 800 + i * 4, ttfa=[float(rng.normal(500, 40))]))
    for i in range(n_recent):  # recent: the last 18 s (30 m scaled)
        src.record(result("t", NOW - 17.5 + i * 17 / n_recent,
                          ttfa=[float(rng.normal(500 * (1 + growth), 40))]))
    return src


def test_regression_rule() -> None:
    rule = RegressionRule("reg", "t", recent_s=1800, baseline_s=86400, min_samples=20)
    assert regression_windows(rule, NOW, 0.01) == ((NOW - 18, NOW), (NOW - 882, NOW - 18))
    assert evaluate_regression(rule, _regression_src(0.5), NOW, 0.01).breach is True
    assert evaluate_regression(rule, _regression_src(0.0), NOW, 0.01).breach is False
    # significant but small: 5 % slower with many samples is below the 15 % minimum effect
    v = evaluate_regression(rule, _regression_src(0.05, n_recent=150), NOW, 0.01)
    assert v.breach is False and "Mann-Whitney" in v.message
    # too few recent samples: no verdict, whatever the shift
    v = evaluate_regression(rule, _regression_src(0.5, n_recent=10), NOW, 0.01)
    assert v.breach is None
