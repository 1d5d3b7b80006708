"""The engine's WebRTC side (probes/session.py calls these for `transport: webrtc` targets):
streaming an utterance on the caller's paced track, and the session's WebRTC results.

Over WebRTC the sender does not write chunks itself: the utterance's pre-encoded Opus packets
are scheduled on the track's 20 ms slots (probes/rtc_media.py) and the sender waits for them
to have left, watching for failures, the caller's stop and the session deadline as it does
while streaming over a WebSocket. E is the due time of the slot holding the last speech sample.
"""

from __future__ import annotations

import time
from time import perf_counter_ns

from probes import prices, rtc
from probes.dialects.base import AudibleOnset, Interrupted
from probes.marks import MAX_DELTAS
from probes.outcomes import Failure
from probes.results import timeout

_NS = 1_000_000_000
#: how long past its last slot an utterance may still be leaving (a busy loop) before the
#: sender stops waiting for it (its lags are still recorded as they come)
LATE_WAIT_S = 1.0
_POLL_S = 0.05
#: the longest the engine waits, after the script, for the last reply's audio to play out
DRAIN_S = 10.0


def connect(s, start: int) -> None:
    """Open the session's WebRTC transport (raises Failure with the error class)."""
    def on_close(code: int, reason: str) -> None:
        tr = s._ws
        if tr is not None and tr.failure_class is not None:
            s.marks.fail(tr.failure_class, reason)
        s._on_close(code, reason)

    s._rtp_turn = None  # the turn whose reply the RTP stream is playing
    s._rtc_answered = False
    try:
        s._ws = _open(s, on_close)
    except Failure as f:
        s._rtc_answered = getattr(f, "answered", False)
        raise
    s.res.connect_ms = (s._ws.open_ns - start) / 1e6


def _open(s, on_close):
    return rtc.connect_webrtc(
        s.dialect, s.api_key, ca_file=s.target.ca_file, timeout_s=s.timeouts.connect,
        on_frame=s._on_frame, on_close=on_close, on_media=lambda ev, t: on_media(s, ev, t),
        on_audio=lambda stamps, n: on_audio(s, stamps, n),
        quiet_ms=s._gate_quiet_ms)


def on_media(s, events, t: int) -> None:
    """What the RTP stream said (onsets, GPT-Live's quiet ends), to the marks. The onset's turn
    is the one the reply's later packets belong to (`on_audio`)."""
    marks = s.marks
    try:
        if type(events[0]) is Interrupted:  # output_audio_buffer.cleared: the playing reply's
            turn = s._rtp_turn  # turn, which a barge-in may already have moved on from
            if turn is not None and turn.barge_ns is not None and turn.stopped_ns is None:
                turn.stopped_ns = t
                s._wake.set()
            return
        if any(type(e) is AudibleOnset for e in events):
            s._rtp_turn = marks.turn
        if marks.feed(events, t):
            s._wake.set()
    except Exception as e:  # a bug of ours: end the session, do not hang it
        marks.fail("client_error", f"{type(e).__name__}: {e}")
        s._wake.set()


def on_audio(s, stamps: list[int], nbytes: int) -> None:
    """Arrivals of reply packets after an onset (20 ms each). A reply's audio keeps arriving
    after its response.done (it plays in real time), maybe after the next turn began: it is
    the audio of the turn that got its onset."""
    turn = s._rtp_turn
    if turn is None:
        return
    room = MAX_DELTAS - len(turn.audio_t)
    stamps = stamps[:max(0, room)]
    turn.audio_t.extend(stamps)
    turn.audio_n.extend([nbytes] * len(stamps))
    if turn.barge_ns is not None:
        turn.barge_bytes += nbytes * sum(t >= turn.barge_ns for t in stamps)


def speak(s, turn, utt, t0: int | None, user_turn: bool) -> None:
    """Stream one utterance over the track (see Session.speak for the turn bookkeeping)."""
    manual = s.scenario.turn_mode == "manual" and user_turn
    marks, tr = s.marks, s._ws
    try:
        if manual:
            s.send(s.dialect.start_activity())
        t0 = max(perf_counter_ns(), s._audio_free_ns) if t0 is None else t0
        item = tr.speak(utt, t0, turn.lags_ns)
        n = len(item.enc.packets)
        end_ns = tr.slot_ns(item.start + n)
        s._audio_free_ns = end_ns
        grid0 = tr.slot_ns(0)
        if marks.input_t0_ns is None:
            marks.input_t0_ns = grid0
        if user_turn:
            turn.input_pos_ms = (tr.slot_ns(item.start) - grid0) / 1e6
            last = item.enc.last_speech if item.enc.last_speech >= 0 else n - 1
            turn.speech_end_ns = tr.slot_ns(item.start + last)
            turn.trigger(turn.speech_end_ns)
        _wait_sent(s, item, end_ns)
        if user_turn:
            turn.speech_sent_ns = item.last_sent_ns
            if manual:
                s.send(s.dialect.end_turn())
    finally:
        if user_turn:
            marks.turns.append(turn)


def _wait_sent(s, item, end_ns: int) -> None:
    marks, stop = s.marks, s.stop
    late_by = end_ns + int(LATE_WAIT_S * _NS)
    while not item.done:
        if marks.failure is not None or (stop is not None and stop.is_set()):
            s.check()
        now = perf_counter_ns()
        if now >= s._deadline:
            raise Failure(timeout("session"), "session deadline passed while sending")
        if now >= late_by:
            return
        wait = (end_ns - now) / _NS if now < end_ns else 0.002
        time.sleep(min(max(wait, 0.0005), _POLL_S))


def drain(s) -> None:
    """Before closing: give the reply still playing on the track (its audio trails its
    response.done in real time) up to DRAIN_S to end, so its audio_s and stalls are whole."""
    listener = s._ws.listener
    s.settle(lambda: not listener.in_reply, DRAIN_S)


def finish(s, res, turns) -> None:
    """The WebRTC results: the RTP stream's health, each turn's playout delay and data-channel
    buffer mark, and GPT-Live's setup charge for a session that never started."""
    tr = s._ws
    res.transport = "webrtc"
    tgt = s.target
    answered = tr.answered if tr is not None else getattr(s, "_rtc_answered", False)
    if prices.second_price_for(tgt.model, tgt.prices) is not None:  # GPT-Live
        if not answered:  # the offer was never taken: no session exists to bill
            res.session_cost_usd = None
        elif s.marks.ready_ns is None:  # the setup charge, never credited
            res.session_cost_usd = prices.webrtc_setup_cost_usd(tgt.model, tgt.prices)
    if tr is None:
        return
    snap = tr.rtp_snapshot()
    res.rtp_received, res.rtp_lost, res.rtp_late = snap.received, snap.lost, snap.late
    res.rtp_jitter_ms = snap.jitter_ms if snap.received > 1 else None
    delays = tr.playout.delays
    starts = sorted(tr.dc_started)
    marks = s.marks.turns
    for i, (t, m) in enumerate(zip(turns, marks, strict=False)):
        if m.first_audible_ns is not None and m.first_audible_ns in delays:
            t.playout_delay_ms = delays[m.first_audible_ns] / 1e6
        e = m.speech_end_ns
        nxt = marks[i + 1].speech_end_ns if i + 1 < len(marks) else None
        if e is not None:
            got = [x for x in starts if x >= e and (nxt is None or x < nxt)]
            if got:
                t.audio_buffer_started_ms = (got[0] - e) / 1e6
