"""The end-of-run summary: percentiles per metric from the merged HDR histograms, error classes,
arrivals (due, started, late, no slot, dropped), generator health and threshold verdicts, and
for scripted scenarios the checks (passed/total per name) and WER (mean, p95).
Printed as a table and written as JSON (`--summary-json`).

Every percentile follows telemetry.stats' one rule (nearest rank ceil(p/100 * n)); HDR ones are
clamped to the metric's exact min and max, so no row shows a p99 above its max."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from loadtests.metrics import (
    GENERATOR_METRICS,
    SESSION_HDR_METRICS,
    TURN_HDR_METRICS,
    Delta,
    ScenarioTally,
)

PCTS = (50.0, 90.0, 95.0, 99.0, 99.9)


@dataclass(slots=True)
class MetricStats:
    name: str
    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    max: float

    @classmethod
    def of(cls, name: str, h) -> MetricStats:
        p = h.percentiles_ms(PCTS)
        return cls(name, h.count, h.sum_ms / h.count, h.min_ms, p[50.0], p[90.0], p[95.0],
                   p[99.0], p[99.9], h.max_ms)


@dataclass(slots=True)
class WorkerHealth:
    worker: str
    cpu_pct_max: float | None = None
    send_lag_p99_ms: float | None = None  # worst 10 s interval
    loop_lag_p99_ms: float | None = None  # worst 10 s interval
    overloaded: bool = False
    reasons: list[str] = field(default_factory=list)
    # the counts the verdict is taken from (loadtests/overload.py), summed over the run
    turns: int = 0
    slow_turns: int = 0  # median chunk send lag over load.overload_lag_ms
    lag_turns: int = 0  # own send lag p99 over it
    loop_samples: int = 0
    loop_late: int = 0


@dataclass(slots=True)
class WerStats:
    """Word error rate of the server's input transcription, over the turns that have one."""

    turns: int
    mean: float
    p95: float


@dataclass(slots=True)
class LoadSummary:
    run_id: str
    target: str
    model: str
    scenario: str
    load_model: str  # open | closed
    level: float  # sessions/s (open) or users (closed) at peak
    arrivals: str
    duration_s: float  # wall time from first arrival to the end
    slots: int
    workers: int
    counters: dict
    metrics: list[MetricStats] = field(default_factory=list)
    health: list[WorkerHealth] = field(default_factory=list)
    thresholds: list[dict] = field(default_factory=list)
    overloaded: bool = False
    overload_message: str = ""
    aborted: str = ""  # the threshold that stopped the run
    complete: bool = True  # every worker sent its final report
    achieved_rate: float | None = None  # started sessions/s over the arrival period
    checks: dict[str, dict] = field(default_factory=dict)  # name -> {"passed": p, "total": n}
    wer: WerStats | None = None
    # per drawn caller (scenario callers:, probes/callers.py): label -> sessions, ok, turns,
    # ttfa_p50/p95, vad_p50 (ms), no_speech (turns failing no_reply_without_speech)
    callers: dict[str, dict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(t["ok"] for t in self.thresholds)

    def metric(self, name: str) -> MetricStats | None:
        return next((m for m in self.metrics if m.name == name), None)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoadSummary:
        d = dict(d)
        d.pop("passed", None)
        d["metrics"] = [MetricStats(**m) for m in d.get("metrics", [])]
        d["health"] = [WorkerHealth(**h) for h in d.get("health", [])]
        d["wer"] = WerStats(**d["wer"]) if d.get("wer") else None
        return cls(**d)

    def table(self) -> str:
        c = self.counters
        lines = [f"VoicePulse load run {self.run_id}: {self.target} ({self.model}), scenario "
                 f"{self.scenario}, {self.load_model} model "
                 + (f"{self.level:g} sessions/s ({self.arrivals})" if self.load_model == "open"
                    else f"{self.level:g} users")
                 + f", {self.duration_s:.1f} s, {self.workers} worker(s), {self.slots} slots"]
        lines.append("")
        lines.append(f"{'metric':<16}{'count':>8}{'mean':>9}{'p50':>9}{'p90':>9}{'p95':>9}"
                     f"{'p99':>9}{'p99.9':>9}{'max':>9}   (ms, HDR 3 s.f.)")
        for m in self.metrics:
            lines.append(f"{m.name:<16}{m.count:>8}{m.mean:>9.1f}{m.p50:>9.1f}{m.p90:>9.1f}"
                         f"{m.p95:>9.1f}{m.p99:>9.1f}{m.p999:>9.1f}{m.max:>9.1f}")
        lines.append("")
        sess, ok = c.get("sessions", 0), c.get("sessions_ok", 0)
        rate = f"{(sess - ok) / sess:.2%}" if sess else "n/a"
        lines.append(f"sessions {sess} ok {ok} failed {sess - ok} (error rate {rate}); "
                     f"turns {c.get('turns', 0)} ok {c.get('turns_ok', 0)}")
        for k, v in sorted((c.get("errors") or {}).items(), key=lambda kv: -kv[1]):
            lines.append(f"  {k:<30}{v:>8}")
        ach = f", achieved {self.achieved_rate:.2f}/s" if self.achieved_rate is not None else ""
        lines.append(f"arrivals due {c.get('arrivals_due', 0)} started {c.get('arrivals_started', 0)}"
                     f" late {c.get('late_starts', 0)} no-slot {c.get('no_slot', 0)} dropped "
                     f"{c.get('dropped', 0)} cut {c.get('cut', 0)}{ach}")
        lines.extend(self.scenario_lines())
        if self.callers:
            lines.append(f"{'callers:':<42}{'sessions':>9}{'ok':>6}{'ttfa p50':>10}{'p95':>8}"
                         f"{'vad p50':>9}{'no-speech':>10}")
            for name, k in sorted(self.callers.items()):
                def ms(v):
                    return f"{v:.0f}" if v is not None else "-"
                lines.append(f"  {name:<40}{k['sessions']:>9}{k['ok']:>6}{ms(k['ttfa_p50']):>10}"
                             f"{ms(k['ttfa_p95']):>8}{ms(k['vad_p50']):>9}{k['no_speech']:>10}")
        lines.append("generator health:")
        for h in self.health:
            def fmt(v, unit):
                return "n/a" if v is None else f"{v:.1f}{unit}"
            lines.append(f"  {h.worker:<24} cpu max {fmt(h.cpu_pct_max, ' %')}, send lag p99 "
                         f"{fmt(h.send_lag_p99_ms, ' ms')}, loop lag p99 "
                         f"{fmt(h.loop_lag_p99_ms, ' ms')}"
                         + (f"; over the bound: send lag p99 in {h.lag_turns} of {h.turns} "
                            f"turns, most chunks in {h.slow_turns}, loop {h.loop_late} of "
                            f"{h.loop_samples} wake-ups" if h.turns or h.loop_samples else "")
                         + (" OVERLOADED: " + "; ".join(h.reasons) if h.overloaded else ""))
        if self.overloaded:
            lines.append(f"WARNING: {self.overload_message}")
        if not self.complete:
            lines.append("WARNING: not every worker sent its final report; counts may be short")
        if self.aborted:
            lines.append(f"ABORTED: threshold {self.aborted} failed (abort_on_fail)")
        if self.thresholds:
            lines.append("thresholds:")
            for t in self.thresholds:
                act = "no data" if t["actual"] is None else f"{t['actual']:.4g}"
                lines.append(f"  {'PASS' if t['ok'] else 'FAIL'}  {t['expr']:<32} actual {act}")
        return "\n".join(lines)

    def scenario_lines(self) -> list[str]:
        """The scenario checks block: nothing for a run without scripted checks or WER."""
        if not self.checks and self.wer is None:
            return []
        lines = ["scenario checks:"]
        for name, c in sorted(self.checks.items()):
            failed = c["total"] - c["passed"]
            lines.append(f"  {name:<30}{c['passed']:>6}/{c['total']:<6}"
                         + (f" FAILED {failed}" if failed else ""))
        if self.wer is not None:
            w = self.wer
            lines.append(f"  {'wer':<30}mean {w.mean:.3f}  p95 {w.p95:.3f}  ({w.turns} turns)")
        return lines


def scenario_stats(t: ScenarioTally) -> tuple[dict[str, dict], WerStats | None]:
    """The summary's checks and WER from the run's merged tally."""
    checks = {k: {"passed": p, "total": n} for k, (p, n) in sorted(t.checks.items())}
    wer = None
    if t.wer_count:
        wer = WerStats(t.wer_count, t.wer_mean, t.wer_percentile(95.0))
    return checks, wer


def metric_stats(total: Delta) -> list[MetricStats]:
    order = list(SESSION_HDR_METRICS) + list(TURN_HDR_METRICS) + list(GENERATOR_METRICS)
    names = [n for n in order if n in total.hist] + sorted(set(total.hist) - set(order))
    return [MetricStats.of(n, total.hist[n]) for n in names if total.hist[n].count]
