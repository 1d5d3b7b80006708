"""Pure rule math: burn rates, threshold statistics, the regression test.

Each evaluator asks an `AlertSource` for the numbers of its windows and returns a `Verdict`:
whether the condition holds, the value it saw and the threshold it compared against. No state
lives here (pending/firing is scheduler/alerts.py), so each function is tested with plain data.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scheduler.config import (
    AVAILABILITY,
    BurnTier,
    RegressionRule,
    Slo,
    ThresholdRule,
)
from scheduler.source import AlertSource, Counts
from telemetry import stats

OPS = stats.OPS
#: The statistics an alert rule may name (a subset of telemetry.stats' vocabulary).
STATS = stats.STATS


@dataclass(slots=True)
class Verdict:
    breach: bool | None  # None: not enough data to say (keeps the current state)
    value: float | None
    threshold: float
    window: str  # human text, e.g. "1h&5m" or "10m"
    message: str = ""


def parse_expr(text: str) -> tuple[str, str, str, float]:
    """`ttfa_ms.p95 > 900` -> ("ttfa_ms", "p95", ">", 900.0); `error_rate > 5%` -> 0.05.

    The threshold grammar of telemetry.stats (units ms, s, %; a bare metric means its p95),
    without the load run's windows and abort_on_fail (a rule has its own `over`), and with
    `error_rate.value` as another spelling of `error_rate`. Raises ValueError with the reason,
    for the config reader to place at its key.
    """
    text = re.sub(r"^(\s*error_rate)\.value\b", r"\1", str(text))
    try:
        t = stats.parse_threshold(text, default_stat="p95")
    except ValueError as exc:
        msg = str(exc)
        if "takes no statistic" in msg:
            raise ValueError("error_rate takes no statistic (write `error_rate > 5%`)") from None
        if "unknown statistic" in msg or "out of range" in msg:
            m = re.search(r"\.([A-Za-z0-9_.]+)", text)
            raise ValueError(f"unknown statistic {m[1] if m else text!r} (known: "
                             f"{', '.join(STATS)})") from None
        raise ValueError("expected `metric.stat OP number`, e.g. `ttfa_ms.p95 > 900` or "
                         "`error_rate > 5%`") from None
    if t.window_s is not None or t.abort_on_fail:
        raise ValueError("expected `metric.stat OP number`, e.g. `ttfa_ms.p95 > 900` (an alert "
                         "rule takes its window from `over`)")
    if t.stat is None:
        if t.metric != "error_rate":
            raise ValueError(f"{t.metric} is a load-run counter; alert rules read error_rate or "
                             "a turn metric's statistic")
        return t.metric, "value", t.op, t.value
    if t.stat not in STATS:
        raise ValueError(f"unknown statistic {t.stat!r} (known: {', '.join(STATS)})")
    return t.metric, t.stat, t.op, t.value


def human(seconds: float) -> str:
    """A window length as a short label (1h, 5m, 3d, 1.8s) for messages and payloads."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and (seconds / size == int(seconds / size) or unit == "s"):
            v = seconds / size
            return f"{int(v)}{unit}" if v == int(v) else f"{v:.3g}{unit}"
    return f"{seconds * 1000:.3g}ms"


def statistic(values: list[float], stat: str) -> float:
    """The rule's statistic of raw values: telemetry.stats' vocabulary and nearest-rank rule."""
    v = stats.statistic(values, stat)
    if v is None:
        raise ValueError(f"{stat} of no values")
    return v


# -- SLO burn rates ---------------------------------------------------------------------------
def slo_counts(slo: Slo, source: AlertSource, start: float, end: float) -> Counts:
    """Good/total events of an SLO in a window: sessions (availability) or turns (latency)."""
    if slo.kind == AVAILABILITY:
        return source.session_counts(slo.target, start, end)
    values = source.turn_values(slo.target, slo.metric, start, end)
    assert slo.below_ms is not None
    return Counts(len(values), sum(1 for v in values if v < slo.below_ms))


def burn_rate(counts: Counts, budget: float) -> float | None:
    """How fast the error budget burns: 1.0 spends exactly the budget over the SLO period."""
    ratio = counts.error_ratio
    return None if ratio is None else ratio / budget


def evaluate_burn(slo: Slo, tier: BurnTier, source: AlertSource, now: float,
                  scale: float = 1.0, floor_s: float = 0.0) -> Verdict:
    """Both the long and the short window must burn faster than the tier's factor.

    The short window makes the alert reset quickly once the fault is gone; the long one keeps
    a short blip from paging (SRE workbook, "multiwindow, multi-burn-rate alerts").
    `floor_s` keeps a (time-scaled) window from shrinking below what the probe schedule can fill.
    """
    long_s, short_s = max(tier.long_s * scale, floor_s), max(tier.short_s * scale, floor_s)
    window = f"{human(long_s)}&{human(short_s)}"
    long_rate = burn_rate(slo_counts(slo, source, now - long_s, now), slo.budget)
    short_rate = burn_rate(slo_counts(slo, source, now - short_s, now), slo.budget)
    if long_rate is None or short_rate is None:
        return Verdict(None, None, tier.factor, window, "no data in a window")
    value = min(long_rate, short_rate)
    return Verdict(value > tier.factor, round(value, 4), tier.factor, window,
                   f"burn rate {long_rate:.3g}x over {human(long_s)}, {short_rate:.3g}x over "
                   f"{human(short_s)} (alert above {tier.factor:g}x; objective "
                   f"{slo.objective * 100:g}%)")


# -- thresholds -------------------------------------------------------------------------------
def evaluate_threshold(rule: ThresholdRule, source: AlertSource, now: float,
                       scale: float = 1.0, floor_s: float = 0.0) -> Verdict:
    over = max(rule.over_s * scale, floor_s)
    window = human(over)
    if rule.metric == "error_rate":
        counts = source.session_counts(rule.target, now - over, now)
        if counts.total < rule.min_samples:
            return Verdict(None, None, rule.value, window, f"{counts.total} sessions")
        value = counts.error_ratio or 0.0
        text = f"error rate {value:.2%} of {counts.total} sessions"
    else:
        values = source.turn_values(rule.target, rule.metric, now - over, now)
        if len(values) < max(rule.min_samples, 1):
            return Verdict(None, None, rule.value, window, f"{len(values)} samples")
        value = statistic(values, rule.stat)
        text = f"{rule.metric}.{rule.stat} = {value:.1f} over {len(values)} turns"
    breach = OPS[rule.op](value, rule.value)
    return Verdict(breach, round(value, 4), rule.value, window,
                   f"{text} (alert when {rule.op} {rule.value:g}, over {window})")


# -- regressions ------------------------------------------------------------------------------
@dataclass(slots=True)
class Comparison:
    p_value: float
    recent_n: int
    baseline_n: int
    median_growth: float
    p95_growth: float
    recent_median: float
    baseline_median: float


def compare(recent: list[float], baseline: list[float]) -> Comparison:
    """One-sided Mann-Whitney U (recent stochastically greater) plus median and p95 growth."""
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(recent, baseline, alternative="greater").pvalue)
    rm, bm = statistic(recent, "median"), statistic(baseline, "median")
    r95, b95 = statistic(recent, "p95"), statistic(baseline, "p95")
    return Comparison(
        p_value=p if not math.isnan(p) else 1.0,
        recent_n=len(recent),
        baseline_n=len(baseline),
        median_growth=(rm - bm) / bm if bm > 0 else 0.0,
        p95_growth=(r95 - b95) / b95 if b95 > 0 else 0.0,
        recent_median=rm,
        baseline_median=bm,
    )


def regression_windows(rule: RegressionRule, now: float, scale: float = 1.0
                       ) -> tuple[tuple[float, float], tuple[float, float]]:
    recent = (now - rule.recent_s * scale, now)
    end_ago = rule.baseline_end_ago_s if rule.baseline_end_ago_s is not None else rule.recent_s
    b_end = now - end_ago * scale
    return recent, (b_end - rule.baseline_s * scale, b_end)


def evaluate_regression(rule: RegressionRule, source: AlertSource, now: float,
                        scale: float = 1.0) -> Verdict:
    (r0, r1), (b0, b1) = regression_windows(rule, now, scale)
    window = f"{human(r1 - r0)} vs {human(b1 - b0)}"
    recent = source.turn_values(rule.target, rule.metric, r0, r1)
    baseline = source.turn_values(rule.target, rule.metric, b0, b1)
    if len(recent) < rule.min_samples or len(baseline) < rule.min_samples:
        return Verdict(None, None, rule.min_effect, window,
                       f"{len(recent)} recent / {len(baseline)} baseline samples "
                       f"(need {rule.min_samples} each)")
    c = compare(recent, baseline)
    growth = max(c.median_growth, c.p95_growth)
    breach = c.p_value < rule.p_max and growth >= rule.min_effect
    return Verdict(breach, round(growth, 4), rule.min_effect, window,
                   f"{rule.metric} median {c.baseline_median:.0f} -> {c.recent_median:.0f} ms "
                   f"({c.median_growth:+.0%}), p95 {c.p95_growth:+.0%}, Mann-Whitney p="
                   f"{c.p_value:.2g} (n={c.recent_n}/{c.baseline_n})")
