"""The receiver's state machine (probes/marks.py) and marks -> metrics (probes/measure.py) with
plain data: normalised events and stamps in, marks out. No socket, no clock."""

from __future__ import annotations

from probes.dialects.base import (
    AudioDelta,
    AudioFormat,
    GoAway,
    InputTranscript,
    Interrupted,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfigured,
    SessionReady,
    SpeechStopped,
    TextDelta,
    ToolCall,
    TranscriptDelta,
    Unknown,
)
from probes.marks import MAX_DELTAS, MAX_TEXT_CHARS, Receiver, TurnMarks
from probes.measure import finish_session, turn_result
from probes.results import SessionResult, Usage

MS = 1_000_000
PCM24 = AudioFormat("pcm16", 24000)  # 48,000 bytes per second


def receiver_with_turn(e: int = 1000 * MS) -> tuple[Receiver, TurnMarks]:
    r = Receiver()
    t = TurnMarks(0)
    t.speech_end_ns = e
    t.trigger(e)
    r.begin(t, None)
    r.turns.append(t)
    return r, t


def result(t: TurnMarks, **kw):
    return turn_result(t, output_format=PCM24, model="gpt-realtime", prices_override=None,
                       jitter_buffer_ms=kw.get("jitter_buffer_ms", 100.0))


# ---- session marks ------------------------------------------------------------------------


def test_ready_and_configured_are_stamped_and_wake():
    r = Receiver()
    assert r.feed((SessionReady("sess_1"),), 5 * MS) is True
    assert (r.ready_ns, r.server_session_id, r.configured_ns) == (5 * MS, "sess_1", None)
    assert r.feed((SessionConfigured(),), 7 * MS) is True
    assert r.feed((SessionConfigured(),), 9 * MS) is True
    assert r.configured_ns == 7 * MS  # the first one counts


def test_events_before_any_turn_land_on_the_placeholder_turn():
    r = Receiver()
    r.feed((AudioDelta(480),), 3 * MS)
    assert r.turn.index == -1 and r.turn.first_audio_ns == 3 * MS and r.turns == []


def test_unknown_and_goaway_do_not_wake_but_goaway_is_kept():
    r = Receiver()
    assert r.feed((Unknown("x.y"),), 1) is False
    assert r.feed((GoAway(5.0),), 2) is False
    assert r.go_away is True and r.failure is None


# ---- turn marks: one test per mark ----------------------------------------------------------


def test_first_audio_is_the_first_delta_stamp_and_every_delta_is_kept():
    r, t = receiver_with_turn()
    assert r.feed((AudioDelta(4800),), 1200 * MS) is True
    assert r.feed((AudioDelta(4800), AudioDelta(2400)), 1250 * MS) is False
    assert t.first_audio_ns == t.reply_audio_ns == 1200 * MS
    assert t.audio_t == [1200 * MS, 1250 * MS, 1250 * MS] and t.audio_n == [4800, 4800, 2400]
    tr = result(t)
    assert tr.ttfa_ms == 200.0 and tr.first_audio_ns == 1200 * MS
    assert abs(tr.audio_s - 12000 / 48000) < 1e-9


def test_first_text_from_a_transcript_or_a_text_delta():
    r, t = receiver_with_turn()
    r.feed((TranscriptDelta("Hel"),), 1300 * MS)
    r.feed((TextDelta("lo"),), 1400 * MS)
    assert t.first_text_ns == 1300 * MS and t.transcript == ["Hel", "lo"]
    tr = result(t)
    assert tr.ttft_ms == 300.0 and tr.transcript == "Hello"


def test_transcript_text_is_bounded_but_counted():
    r, t = receiver_with_turn()
    r.feed((TranscriptDelta("a" * (MAX_TEXT_CHARS - 1)), TranscriptDelta("bcd")), 1)
    assert sum(map(len, t.transcript)) == MAX_TEXT_CHARS and t.text_chars == MAX_TEXT_CHARS + 2


def test_speech_stopped_gives_vad_and_belongs_to_the_next_turn_when_one_waits():
    r, t = receiver_with_turn()
    r.feed((SpeechStopped(900),), 1150 * MS)
    r.feed((SpeechStopped(950),), 1160 * MS)
    assert t.speech_stopped_ns == 1150 * MS and result(t).vad_ms == 150.0
    t.reply_from_ns = 1000 * MS  # replying: a new turn begun now waits for the reply's end
    nxt = TurnMarks(1)
    r.begin(nxt, t)
    assert r.next_turn is nxt and r.turn is t
    r.feed((SpeechStopped(),), 1500 * MS)
    assert nxt.speech_stopped_ns == 1500 * MS


def test_done_ends_the_reply_sums_usage_and_switches_to_a_waiting_turn():
    r, t = receiver_with_turn()
    r.feed((AudioDelta(480),), 1100 * MS)
    nxt = TurnMarks(1)
    r.begin(nxt, t)
    assert r.next_turn is nxt
    done = ResponseDone("completed", Usage(in_audio=10, out_audio=20))
    assert r.feed((ResponseCreated("r1"), done, AudioDelta(480)), 1900 * MS) is True
    assert t.done_ns == t.reply_done_ns == 1900 * MS and t.done is done and t.responses == 1
    assert r.turn is nxt and r.next_turn is None and nxt.audio_n == [480]  # after done: next
    tr = result(t)
    assert tr.turn_ms == 900.0 and tr.usage.total == 30 and tr.response_status == "completed"
    assert tr.outcome == "ok" and tr.cost_usd is not None and tr.cost_usd > 0


def test_a_failed_or_cancelled_reply_is_the_turns_outcome():
    r, t = receiver_with_turn()
    r.feed((ResponseDone("failed", error_code="server_error"),), 2 * MS)
    assert result(t).outcome == "response_failed:server_error"
    r2, t2 = receiver_with_turn()
    r2.feed((ResponseDone("cancelled", reason="client_cancelled"),), 2 * MS)
    assert result(t2).outcome == "response_failed:client_cancelled"


def test_barge_in_stopped_by_cancel_and_audio_after_the_barge_counted():
    r, t = receiver_with_turn()
    r.feed((AudioDelta(4800),), 1100 * MS)
    t.barge_ns = 1300 * MS
    r.feed((AudioDelta(4800),), 1299 * MS)  # before the user spoke: not counted
    r.feed((AudioDelta(9600),), 1320 * MS)
    r.feed((ResponseDone("cancelled", reason="turn_detected"),), 1450 * MS)
    assert t.stopped_ns == 1450 * MS and t.barge_bytes == 9600
    tr = result(t)
    assert tr.barge_in_ms == 150.0 and tr.checks["reply_stopped"] is True
    assert tr.barge_in_audio_ms == 200.0 and tr.outcome == "ok"  # a cancel we caused is fine


def test_barge_in_stopped_by_interrupted_and_a_reply_that_never_stopped():
    r, t = receiver_with_turn()
    t.barge_ns = 1300 * MS
    r.feed((Interrupted(),), 1380 * MS)
    r.feed((Interrupted(),), 1390 * MS)
    assert t.stopped_ns == 1380 * MS and result(t).barge_in_ms == 80.0
    r2, t2 = receiver_with_turn()
    r2.feed((Interrupted(),), 1380 * MS)  # no barge-in asked for: not a stop mark
    assert t2.stopped_ns is None
    t2.barge_ns = 1400 * MS
    tr = result(t2)
    assert tr.checks["reply_stopped"] is False and tr.barge_in_ms is None


def test_tool_calls_are_stamped_and_the_first_audio_after_the_result_is_kept():
    r, t = receiver_with_turn()
    call = ToolCall("c1", "get_weather", '{"city": "Paris"}')
    assert r.feed((call,), 1400 * MS) is True
    assert t.tool_calls == [(1400 * MS, call)]
    t.tool_sent_ns = 1500 * MS
    t.trigger(1500 * MS)
    r.feed((AudioDelta(480),), 1720 * MS)
    r.feed((AudioDelta(480),), 1800 * MS)
    assert t.tool_audio_ns == t.reply_audio_ns == 1720 * MS
    tr = result(t)
    assert tr.tool_ms == 400.0 and tr.tool_result_ms == 220.0 and tr.tool_result_sent_ns == 1500 * MS


def test_input_transcripts_go_to_the_oldest_turn_waiting_for_one():
    r, t = receiver_with_turn()
    t.expected_text = "hello there"
    r.awaiting_transcript.append(t)
    r.feed((ResponseDone("completed"),), 1)
    nxt = TurnMarks(1)
    r.begin(nxt, t)  # t's reply has ended: nxt is current at once
    assert r.turn is nxt
    r.feed((InputTranscript("hello", final=False),), 1)  # partial: not kept
    assert r.feed((InputTranscript("hello there"),), 2) is True
    assert t.input_transcript == ["hello there"] and nxt.input_transcript == []
    tr = result(t)
    assert tr.checks["transcribed"] is True and tr.wer == 0.0


def test_errors_fail_the_session_first_one_wins():
    r = Receiver()
    assert r.feed((ServerError("rate_limit_exceeded", "slow down"),), 1) is True
    r.feed((ServerError("other"),), 2)
    assert r.failure == ("server_error:rate_limit_exceeded", "slow down")


def test_session_expired_error_marks_the_end():
    r = Receiver()
    r.feed((ServerError("session_expired", "60 minutes"),), 42 * MS)
    assert r.failure == ("session_expired", "60 minutes") and r.ended_ns == 42 * MS


def test_too_many_deltas_is_a_protocol_failure():
    r, t = receiver_with_turn()
    t.audio_t = [0] * MAX_DELTAS
    t.audio_n = [1] * MAX_DELTAS
    assert r.feed((AudioDelta(1),), 1) is True
    assert r.failure[0] == "protocol" and len(t.audio_t) == MAX_DELTAS


# ---- close ----------------------------------------------------------------------------------


def test_close_by_the_server_is_ws_closed_and_after_goaway_go_away():
    r = Receiver()
    r.closed(1011, "boom", 9 * MS)
    assert r.failure == ("ws_closed_1011", "boom") and r.ended_ns == 9 * MS
    r2 = Receiver()
    r2.feed((GoAway(1.0),), 1)
    r2.closed(1000, "", 5)
    assert r2.failure[0] == "go_away" and "after goAway" in r2.failure[1]


def test_close_after_the_sender_finished_is_the_normal_end():
    r = Receiver()
    r.feed((ServerError("session_expired"),), 3)
    r2 = Receiver()
    r2.closing = True
    r2.closed(1000, "", 5)
    assert r2.failure is None and r2.closed_code == 1000 and r.ended_ns == 3


# ---- the session's totals -----------------------------------------------------------------


def test_finish_session_gives_send_lag_and_overload_and_the_turn_it_died_in():
    a, b = TurnMarks(0), TurnMarks(1)
    a.lags_ns = [1 * MS, 2 * MS, 3 * MS]
    a.done_ns = 5
    b.lags_ns = [1500 * MS]
    res = SessionResult("t", "openai", "m")
    finish_session(res, [result(a), result(b)], [a, b], duration_ns=3 * 10**9,
                   max_send_lag_ms=1000)
    assert res.duration_s == 3.0 and res.send_lag_p99_ms == 1500.0
    assert res.outcome == "client_overload" and "1500 ms" in res.error
    res2 = SessionResult("t", "openai", "m", outcome="ws_closed_1006", error="gone")
    finish_session(res2, [result(a), result(b)], [a, b], duration_ns=1, max_send_lag_ms=10_000)
    assert [t.outcome for t in res2.turns] == ["ok", "ws_closed_1006"]


def test_stalls_and_gaps_from_the_arrival_marks():
    r, t = receiver_with_turn()
    for i, ts in enumerate((1100, 1200, 1300, 1700)):  # 100 ms chunks, one 300 ms late
        r.feed((AudioDelta(4800),), ts * MS)
        assert len(t.audio_t) == i + 1
    tr = result(t, jitter_buffer_ms=50.0)
    assert tr.stalls == 1 and abs(tr.stall_ms - 250.0) < 1e-6 and tr.gap_p95_ms == 400.0
