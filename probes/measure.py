"""Marks to metrics: a turn's marks (probes/marks.py) become a `TurnResult`, a session's turns
and send lag its `SessionResult` totals.

Pure functions run once per turn after the session closed, so nothing here costs on the hot
path. Every latency counts from E, the intended end of speech (docs/design.md), with the actual-send
variant beside it; percentiles are playback.percentile's nearest rank.
"""

from __future__ import annotations

from probes import playback, prices, wer
from probes.dialects.base import AudioFormat
from probes.marks import MAX_TEXT_CHARS, TurnMarks
from probes.outcomes import CLIENT_OVERLOAD
from probes.results import (
    EMPTY_REPLY,
    OK,
    SILENT_REPLY,
    SessionResult,
    TurnResult,
    Usage,
    response_failed,
)


def _ms(a: int, b: int) -> float:
    return (a - b) / 1e6


def turn_result(t: TurnMarks, *, output_format: AudioFormat, model: str,
                prices_override: dict | None, jitter_buffer_ms: float) -> TurnResult:
    """The metrics of one turn from its marks."""
    tr = TurnResult(index=t.index)
    e, sent = t.speech_end_ns, t.speech_sent_ns
    tr.speech_end_ns, tr.speech_sent_ns = e, sent
    tr.first_audio_ns, tr.response_done_ns = t.first_audio_ns, t.done_ns
    tr.first_audible_ns = t.first_audible_ns
    if e is not None:
        if t.first_audio_ns is not None:
            tr.ttfa_ms = _ms(t.first_audio_ns, e)
            if sent is not None:
                tr.ttfa_sent_ms = _ms(t.first_audio_ns, sent)
        if t.first_audible_ns is not None:
            tr.ttfa_audible_ms = _ms(t.first_audible_ns, e)
        if t.first_text_ns is not None:
            tr.ttft_ms = _ms(t.first_text_ns, e)
        if t.speech_stopped_ns is not None:
            tr.vad_ms = _ms(t.speech_stopped_ns, e)
        if t.done_ns is not None:
            tr.turn_ms = _ms(t.done_ns, e)
            if sent is not None:
                tr.turn_sent_ms = _ms(t.done_ns, sent)
        if t.tool_calls:
            tr.tool_ms = _ms(t.tool_calls[0][0], e)
    tr.barge_in_ns, tr.tool_result_sent_ns = t.barge_ns, t.tool_sent_ns
    if t.tool_sent_ns is not None and t.tool_audio_ns is not None:
        tr.tool_result_ms = _ms(t.tool_audio_ns, t.tool_sent_ns)
    bps = output_format.bytes_per_s
    if t.barge_ns is not None:
        tr.checks["reply_stopped"] = t.stopped_ns is not None
        if t.stopped_ns is not None:
            tr.barge_in_ms = _ms(t.stopped_ns, t.barge_ns)
        tr.barge_in_audio_ms = t.barge_bytes / bps * 1000
    tr.checks.update(t.checks)
    notes = t.notes
    if t.unprompted:  # the reply-triggered-without-speech check (issue 20), failed only
        tr.checks["no_reply_without_speech"] = False
        notes = [*notes, f"the server began {t.unprompted} reply(s) with no finished speech "
                         "to answer"]
    tr.notes = "; ".join(notes)[:MAX_TEXT_CHARS]
    n = min(len(t.audio_t), len(t.audio_n))  # consistent even if a receiver were still running
    arrivals = t.audio_t[:n]
    durs = [b / bps for b in t.audio_n[:n]]
    tr.audio_s = sum(durs)
    tr.rtf = playback.rtf(arrivals, durs)
    tr.stalls, tr.stall_ms = playback.stalls(arrivals, durs, jitter_buffer_ms)
    tr.gap_p95_ms = playback.percentile(playback.gaps_ms(arrivals), 95)
    if t.lags_ns:
        lags = sorted(t.lags_ns)
        tr.send_lag_p50_ms = playback.percentile(lags, 50) / 1e6
        tr.send_lag_p99_ms = playback.percentile(lags, 99) / 1e6
        tr.send_lag_max_ms = lags[-1] / 1e6
    if t.done is not None:
        tr.usage = t.usage
        tr.response_status = t.done.status
        tr.cost_usd = prices.cost_usd(model, t.usage, prices_override)
        if t.done.status == "failed":
            tr.outcome = response_failed(t.done.error_code)
        elif t.done.status == "cancelled" and t.barge_ns is None:
            tr.outcome = response_failed(t.done.reason or "cancelled")
        else:
            silent = silent_failure(t)
            if silent:
                tr.outcome = silent
                tr.error = ("the reply completed without audio" if silent == EMPTY_REPLY else
                            "the reply's audio never crossed the audible gate")
    else:
        tr.usage = Usage()
    tr.transcript = "".join(t.transcript)
    tr.transcript_end_ms = t.transcript_end_ms
    tr.input_transcript = " ".join(t.input_transcript)
    if t.expected_text is not None:
        tr.checks["transcribed"] = bool(t.input_transcript)
        if t.input_transcript:
            tr.wer = wer.word_error_rate(t.expected_text, tr.input_transcript)
    return tr


def silent_failure(t: TurnMarks) -> str | None:
    """empty_reply / silent_reply for a turn whose reply completed (issue 19): no audio byte at
    all, or audio that never crossed the audible gate. A reply the user spoke over, and a turn
    whose only response was a tool call nobody answered, are not judged."""
    if t.done is None or t.done.status != "completed" or t.barge_ns is not None:
        return None
    if t.tool_calls and t.tool_sent_ns is None:
        return None
    if t.first_audio_ns is None:
        return EMPTY_REPLY
    if t.first_audible_ns is None and t.gated:  # (a delta without its audio cannot be judged)
        return SILENT_REPLY
    return None


def finish_session(res: SessionResult, turns: list[TurnResult], marks: list[TurnMarks], *,
                   duration_ns: int, max_send_lag_ms: float) -> None:
    """Set the session's turns and totals. The turn a failed session died in (no reply end)
    takes the session's outcome; a send lag past `max_send_lag_ms` marks an otherwise ok
    session client_overload (the generator, not the target, was too slow)."""
    res.duration_s = duration_ns / 1e9
    all_lags: list[int] = []
    for tr, t in zip(turns, marks, strict=True):
        if tr.outcome == OK and res.outcome != OK and t.done_ns is None:
            tr.outcome, tr.error = res.outcome, res.error
        elif tr.outcome in (EMPTY_REPLY, SILENT_REPLY) and res.outcome == OK:
            res.outcome, res.error = tr.outcome, f"turn {tr.index}: {tr.error}"
        all_lags.extend(t.lags_ns)
    res.turns = turns
    if all_lags:
        all_lags.sort()
        res.send_lag_p99_ms = playback.percentile(all_lags, 99) / 1e6
        worst = all_lags[-1] / 1e6
        if res.outcome == OK and worst > max_send_lag_ms:
            res.outcome = CLIENT_OVERLOAD
            res.error = (
                f"send lag reached {worst:.0f} ms (limit {max_send_lag_ms:g} ms):"
                " this load generator was too busy to pace audio"
            )
