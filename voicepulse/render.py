"""Human and JSON renderings of results: the probe timeline, the --json document, summaries."""

from __future__ import annotations

from probes.results import SessionResult
from voicepulse.term import ms, paint, table

TURN_COLUMNS = [
    ("vad", "vad_ms"),
    ("ttft", "ttft_ms"),
    ("ttfa", "ttfa_ms"),
    ("turn", "turn_ms"),
]


def probe_document(r: SessionResult) -> dict:
    """The `voicepulse probe --json` document (stable keys; absent metrics are null)."""
    return {
        "target": r.target,
        "provider": r.provider,
        "model": r.model,
        "scenario": r.scenario,
        "outcome": r.outcome,
        "error": r.error or None,
        "session_id": r.session_id or None,
        "started_at": r.started_at,
        "connect_ms": r.connect_ms,
        "ready_ms": r.ready_ms,
        "duration_s": r.duration_s,
        "send_lag_p99_ms": r.send_lag_p99_ms,
        "cost_usd": r.cost_usd,
        "transport": r.transport,
        "rtp": None if r.rtp_received is None else {
            "received": r.rtp_received, "lost": r.rtp_lost, "late": r.rtp_late,
            "jitter_ms": r.rtp_jitter_ms},
        "turns": [
            {
                "index": t.index,
                "outcome": t.outcome,
                "error": t.error or None,
                "ttfa_ms": t.ttfa_ms,
                "ttfa_audible_ms": t.ttfa_audible_ms,
                "playout_delay_ms": t.playout_delay_ms,
                "audio_buffer_started_ms": t.audio_buffer_started_ms,
                "ttft_ms": t.ttft_ms,
                "vad_ms": t.vad_ms,
                "turn_ms": t.turn_ms,
                "ttfa_sent_ms": t.ttfa_sent_ms,
                "audio_s": t.audio_s,
                "rtf": t.rtf,
                "stall_ms": t.stall_ms,
                "stalls": t.stalls,
                "gap_p95_ms": t.gap_p95_ms,
                "send_lag_p50_ms": t.send_lag_p50_ms,
                "send_lag_p99_ms": t.send_lag_p99_ms,
                "send_lag_max_ms": t.send_lag_max_ms,
                "tokens": {
                    "in_audio": t.usage.in_audio,
                    "in_text": t.usage.in_text,
                    "out_audio": t.usage.out_audio,
                    "out_text": t.usage.out_text,
                    "total": t.usage.total,
                },
                "cost_usd": t.cost_usd,
                "barge_in_ms": t.barge_in_ms,
                "barge_in_audio_ms": t.barge_in_audio_ms,
                "tool_ms": t.tool_ms,
                "tool_result_ms": t.tool_result_ms,
                "wer": t.wer,
                "input_transcript": t.input_transcript or None,
                "checks": t.checks,
                "notes": t.notes or None,
            }
            for t in r.turns
        ],
        "ended_by": r.ended_by or None,
        "expiry_s": r.expiry_s,
    }


def _outcome(text: str) -> str:
    return paint(text, "green") if text == "ok" else paint(text, "red")


def probe_timeline(r: SessionResult) -> str:
    """A readable per-turn timeline with the phases aligned, for `voicepulse probe`."""
    head = (f"{r.target} ({r.provider}, model {r.model}, scenario {r.scenario})  "
            f"outcome {_outcome(r.outcome)}")
    lines = [head]
    if r.error:
        lines.append(f"  error: {r.error}")
    lines.append(f"  connect {ms(r.connect_ms, 1)} ms   ready {ms(r.ready_ms, 1)} ms   "
                 f"session {r.duration_s:.2f} s")
    if r.turns:
        headers = ["turn", *[f"{h} ms" for h, _ in TURN_COLUMNS], "audio s", "rtf", "stalls",
                   "gap p95", "lag p99", "tokens", "outcome"]
        rows = []
        for t in r.turns:
            rows.append([
                str(t.index + 1),
                *[ms(getattr(t, key), 1) for _, key in TURN_COLUMNS],
                f"{t.audio_s:.2f}",
                f"{t.rtf:.2f}" if t.rtf is not None else "-",
                f"{t.stalls} ({t.stall_ms:.0f} ms)" if t.stalls else "0",
                ms(t.gap_p95_ms, 1),
                ms(t.send_lag_p99_ms, 1),
                str(t.usage.total),
                t.outcome if t.outcome == "ok" else f"{t.outcome}",
            ])
        lines.append("")
        lines.extend("  " + line for line in table(headers, rows).splitlines())
    scenario_lines = [line for t in r.turns for line in _scenario_lines(t)]
    if scenario_lines:
        lines.append("")
        lines.extend(scenario_lines)
    if r.ended_by:
        lines.append(f"  the session ended by {r.ended_by} after {r.expiry_s or 0:.1f} s "
                     "(expected by the scenario)")
    cost = r.cost_usd
    lines.append("")
    lines.append("  latencies are from the intended end of speech; "
                 + (f"cost ${cost:.4f}" if cost is not None else "no price known for this model"))
    return "\n".join(lines)


def summary_table(rows) -> str:
    """Per-target summary (success ratio, TTFA p50/p95, turn p95, errors by class)."""
    headers = ["target", "provider", "model", "sessions", "success", "ttfa p50", "ttfa p95", "turn p95",
               "errors by class"]
    body = []
    for s in rows:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "-"
        body.append([
            s.target, s.provider, s.model, str(s.sessions), f"{100 * s.success_ratio:.1f} %",
            ms(s.ttfa_p50, 1), ms(s.ttfa_p95, 1), ms(s.turn_p95, 1), errors,
        ])
    return table(headers, body)


def _scenario_lines(t) -> list[str]:
    """Barge-in, tool, WER and check results of one turn, when its scenario measured them."""
    parts = []
    if t.barge_in_ms is not None:
        parts.append(f"barge-in stopped in {t.barge_in_ms:.1f} ms "
                     f"({t.barge_in_audio_ms or 0:.0f} ms of audio after)")
    elif t.checks.get("reply_stopped") is False:
        parts.append(paint("barge-in: the reply was not stopped", "yellow"))
    if t.tool_ms is not None:
        parts.append(f"tool call {t.tool_ms:.1f} ms"
                     + (f", result -> audio {t.tool_result_ms:.1f} ms" if t.tool_result_ms else ""))
    if t.wer is not None:
        parts.append(f"WER {100 * t.wer:.1f} %")
    failed = [k for k, v in t.checks.items() if not v and k != "reply_stopped"]
    if failed:
        parts.append(paint("failed checks: " + ", ".join(failed), "red")
                     + (f" ({t.notes})" if t.notes else ""))
    return [f"  turn {t.index + 1}: " + "; ".join(parts)] if parts else []
