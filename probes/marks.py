"""The receiver's state machine as pure code: normalised events and their stamps in, marks out.

`Receiver.feed(events, t)` takes what a dialect made of one server frame (probes/dialects/base.py
events) and the frame's receive stamp `t` (perf_counter_ns, the kernel's arrival time where the
transport has it) and updates the marks of the turn those events belong to: first audio, first
text, speech stopped, done, barge-in stopped, tool calls, input transcripts; and the session's:
ready, configured, errors, goAway, close. No I/O, no clock reads: the caller stamps, the caller
wakes whoever waits (feed returns True when a waiter may care), so every rule here is tested
with plain data (tests/probes/test_marks.py).

Two flows write here: the receiver (feed / closed / fail) and the sender, which opens turns
(`begin`) and sets intended marks on them (E, triggers, barge-in, tool result sent). Each
attribute has one writer; plain attribute stores, no locks.

How to plug in a protocol: add a dialect whose parse() yields these events. What the protocol
leaves implicit is derived before feed(), in probes/onset.py (between dialect and receiver,
(events, t) in, (events, t) groups out): the audible onset of each reply (AudibleOnset) and, for
GPT-Live's continuous output, reply audio only and a ResponseDone(output_quiet) once the output
stayed below the gate `quiet_ms`, stamped when it fell.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from probes.dialects.base import (
    OUTPUT_QUIET,
    AudibleOnset,
    AudioDelta,
    GoAway,
    InputTranscript,
    Interrupted,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionClosed,
    SessionConfigured,
    SessionReady,
    SpeechStopped,
    TextDelta,
    ToolCall,
    TranscriptDelta,
)
from probes.outcomes import GO_AWAY, SESSION_EXPIRED
from probes.results import Usage, server_error, ws_closed

#: Per-turn bounds on what a server can make us keep (a flood ends the turn, not the process).
MAX_TEXT_CHARS = 64 * 1024  # transcript / input transcript text kept per turn; the rest counted
MAX_DELTAS = 200_000  # audio deltas per turn; more is a protocol error
MAX_TOOL_CALLS = 64
MAX_INPUT_TRANSCRIPTS = 16
#: how far a timed transcript fragment's start may lie before its speech in our stream (the
#: server's VAD onset, its clock from session.started vs ours from receiving it)
FRAGMENT_SLACK_MS = 300.0


class TurnMarks:
    """Marks of one user turn (plain attributes; each written by one flow)."""

    __slots__ = (
        "index",
        "input_pos_ms",
        "speech_end_ns",
        "speech_sent_ns",
        "speech_stopped_ns",
        "first_audio_ns",
        "first_audible_ns",
        "gated",
        "first_text_ns",
        "done_ns",
        "audio_t",
        "audio_n",
        "done",
        "transcript",
        "transcript_end_ms",
        "input_transcript",
        "tool_calls",
        "lags_ns",
        "responses",
        "unprompted",
        "text_chars",
        "usage",
        # the reply to the latest trigger (speech end, tool result, text), barge-in marks,
        # expected transcript, checks (scripted scenarios, probes/play.py)
        "reply_from_ns",
        "reply_audio_ns",
        "reply_done_ns",
        "reply_done",
        "tool_sent_ns",
        "tool_audio_ns",
        "barge_ns",
        "stopped_ns",
        "barge_bytes",
        "expected_text",
        "checks",
        "notes",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.input_pos_ms: float | None = None  # where its speech starts in the audio we sent
        self.speech_end_ns: int | None = None  # E: when the last speech chunk was due
        self.speech_sent_ns: int | None = None
        self.speech_stopped_ns: int | None = None
        self.first_audio_ns: int | None = None
        self.first_audible_ns: int | None = None  # the first delta that crossed the audible gate
        self.gated = False  # some reply delta carried its audio (the gate could listen)
        self.first_text_ns: int | None = None
        self.done_ns: int | None = None
        self.audio_t: list[int] = []
        self.audio_n: list[int] = []
        self.done: ResponseDone | None = None
        self.transcript: list[str] = []
        self.transcript_end_ms: int | None = None  # GPT-Live: the reply transcript's end_ms
        self.input_transcript: list[str] = []
        self.tool_calls: list[tuple[int, ToolCall]] = []
        self.lags_ns: list[int] = []
        self.responses = 0
        # replies the server began with no finished speech of ours to answer: while the caller
        # was still speaking (before E), or after this turn's reply had ended with nothing new
        # sent (noise heard as speech, a turn split at a pause); from ResponseCreated, so judged
        # where the protocol announces replies (OpenAI Realtime, Azure)
        self.unprompted = 0
        self.text_chars = 0  # transcript characters received (kept up to MAX_TEXT_CHARS)
        self.usage = Usage()  # summed over the turn's responses (a tool call makes two)
        self.reply_from_ns: int | None = None  # what the reply's phase deadlines count from
        self.reply_audio_ns: int | None = None
        self.reply_done_ns: int | None = None
        self.reply_done: ResponseDone | None = None
        self.tool_sent_ns: int | None = None
        self.tool_audio_ns: int | None = None  # first audio after the tool result was sent
        self.barge_ns: int | None = None  # the user started speaking over this reply
        self.stopped_ns: int | None = None  # the server stopped it (cancelled / interrupted)
        self.barge_bytes = 0  # reply audio that arrived after barge_ns
        self.expected_text: str | None = None  # what was said, when known (WER reference)
        self.checks: dict[str, bool] = {}
        self.notes: list[str] = []  # why a check failed, in words

    def trigger(self, from_ns: int) -> None:
        """A new reply is asked for (called before the message that asks for it is sent)."""
        self.reply_from_ns = from_ns
        self.reply_audio_ns = self.reply_done_ns = self.reply_done = None

    @property
    def replying(self) -> bool:
        """A reply was asked for and has not ended."""
        return self.reply_from_ns is not None and self.reply_done_ns is None


class Receiver:
    """The marks of one session, fed frame by frame."""

    def __init__(self) -> None:
        self.turn = TurnMarks(-1)  # events before the first turn land here
        self.next_turn: TurnMarks | None = None  # begun while self.turn's reply still runs
        self.turns: list[TurnMarks] = []  # the user turns, in order (the sender appends)
        self.awaiting_transcript: collections.deque[TurnMarks] = collections.deque()
        self.ready_ns: int | None = None
        self.configured_ns: int | None = None
        self.server_session_id = ""
        self.go_away = False
        self.ended_ns: int | None = None  # session_expired notice or close, whichever first
        self.closed_code: int | None = None
        self.closed_reason = ""
        self.closing = False  # the sender is done: a close from now on is the normal end
        self.failure: tuple[str, str] | None = None  # (outcome, message), first one wins
        self.failed_by_close = False  # that failure is the connection's close
        self.session_closed_ns: int | None = None  # GPT-Live session.closed
        self.input_t0_ns: int | None = None  # when our first audio chunk was due (the sender's)
        self.session_close_reason = ""

    # ---- the sender's side -----------------------------------------------------------------

    def begin(self, turn: TurnMarks, prev: TurnMarks | None) -> None:
        """Make `turn` the one the events fill: now, or when `prev`'s running reply ends (so a
        cancelled reply's last events never land on the turn that interrupted it)."""
        if prev is not None and prev.replying:
            self.next_turn = turn
            if prev.reply_done_ns is not None:  # it ended meanwhile: the switch may be missed
                self.turn, self.next_turn = turn, None
        else:
            self.turn = turn

    # ---- the receiver's side -----------------------------------------------------------------

    def _fragment_turn(self, start_ms: int) -> TurnMarks | None:
        """The turn a timed input-transcript fragment belongs to: the latest waiting turn whose
        speech starts, in the audio we sent, at or before the fragment's start. The server
        places input on its session timeline from the arrival of our first chunk (taken as when
        it was due, FRAGMENT_SLACK_MS either way), and counts the audio it got, not wall time,
        so gaps in our stream do not shift it. Turns before it will hear no more and leave the
        queue. None when no turn waits for a transcript."""
        q = self.awaiting_transcript
        if not q:
            return None
        lead = ((self.input_t0_ns or 0) - (self.ready_ns or 0)) / 1e6
        pos = start_ms - lead + FRAGMENT_SLACK_MS
        while len(q) > 1 and q[1].input_pos_ms is not None and q[1].input_pos_ms <= pos:
            q.popleft()
        return q[0]

    def fail(self, outcome: str, message: str) -> None:
        if self.failure is None:
            self.failure = (outcome, message)

    def closed(self, code: int, reason: str, t: int) -> None:
        """The connection is gone (close code, or 1006 without one), noticed at `t`."""
        self.closed_code, self.closed_reason = code, reason
        self.ended_ns = self.ended_ns or t
        if not self.closing:
            self.failed_by_close = self.failure is None
            if self.go_away:  # announced (Gemini goAway): its own outcome, not a drop
                self.fail(GO_AWAY, f"closed {code} after goAway: {reason or 'no reason'}")
            else:
                self.fail(ws_closed(code), reason or "connection closed by the server")

    def feed(self, events: Iterable, t: int) -> bool:
        """Apply one frame's events, received at `t`. True when a waiter may want to look."""
        wake = False
        turn = self.turn
        for ev in events:
            cls = type(ev)
            if cls is AudioDelta:
                if turn.first_audio_ns is None:
                    turn.first_audio_ns = t
                    wake = True
                if turn.reply_audio_ns is None:
                    turn.reply_audio_ns = t
                    if turn.tool_sent_ns is not None and turn.tool_audio_ns is None:
                        turn.tool_audio_ns = t
                    wake = True
                if len(turn.audio_t) >= MAX_DELTAS:
                    self.fail("protocol", f"more than {MAX_DELTAS} audio deltas in one turn")
                    return True
                turn.audio_t.append(t)
                turn.audio_n.append(ev.nbytes)
                if ev.audio:
                    turn.gated = True
                if turn.barge_ns is not None and t >= turn.barge_ns:
                    turn.barge_bytes += ev.nbytes
            elif cls is AudibleOnset:
                if turn.first_audible_ns is None:
                    turn.first_audible_ns = t
            elif cls is TranscriptDelta or cls is TextDelta:
                if turn.first_text_ns is None:
                    turn.first_text_ns = t
                if turn.text_chars < MAX_TEXT_CHARS:
                    turn.transcript.append(ev.text[: MAX_TEXT_CHARS - turn.text_chars])
                turn.text_chars += len(ev.text)
                if cls is TranscriptDelta and ev.end_ms is not None:
                    turn.transcript_end_ms = ev.end_ms
            elif cls is ResponseDone:
                turn.done = turn.reply_done = ev
                turn.done_ns = turn.reply_done_ns = t
                turn.usage.add(ev.usage)
                if turn.barge_ns is not None and turn.stopped_ns is None and (
                        ev.status == "cancelled"
                        or (ev.reason == OUTPUT_QUIET and t >= turn.barge_ns)):
                    turn.stopped_ns = t  # cancelled, or (GPT-Live) its output fell quiet
                if self.next_turn is not None:  # the reply a barge-in spoke over has ended
                    self.turn = turn = self.next_turn
                    self.next_turn = None
                wake = True
            elif cls is SpeechStopped:
                st = self.next_turn or turn  # speech over a reply belongs to the next turn
                if st.speech_stopped_ns is None:
                    st.speech_stopped_ns = t
            elif cls is ResponseCreated:
                turn.responses += 1
                if turn.index >= 0 and (not turn.replying or (
                        turn.speech_end_ns is not None and t < turn.speech_end_ns)):
                    turn.unprompted += 1
            elif cls is InputTranscript and not ev.final and ev.start_ms is not None:
                it = self._fragment_turn(ev.start_ms)  # GPT-Live: timed deltas, no final
                if it is not None:  # deltas of one transcript: joined as they come
                    have = it.input_transcript[-1] if it.input_transcript else ""
                    text = (have + ev.text)[:MAX_TEXT_CHARS]
                    if it.input_transcript:
                        it.input_transcript[-1] = text
                    else:
                        it.input_transcript.append(text)
                    wake = True
            elif cls is InputTranscript:
                # transcripts come in speech order, maybe after the next turn began: the oldest
                # turn still waiting for one gets it
                it = self.awaiting_transcript.popleft() if (
                    ev.final and self.awaiting_transcript) else (self.next_turn or turn)
                if ev.final and len(it.input_transcript) < MAX_INPUT_TRANSCRIPTS:
                    it.input_transcript.append(ev.text[:MAX_TEXT_CHARS])
                    wake = True
            elif cls is ToolCall:
                if len(turn.tool_calls) < MAX_TOOL_CALLS:
                    turn.tool_calls.append((t, ev))
                wake = True
            elif cls is ServerError:
                if ev.code == SESSION_EXPIRED:
                    self.ended_ns = self.ended_ns or t
                    self.fail(SESSION_EXPIRED, ev.message)
                else:
                    self.fail(server_error(ev.code), ev.message)
                wake = True
            elif cls is SessionReady:
                self.ready_ns = t
                self.server_session_id = ev.session_id
                wake = True
            elif cls is SessionConfigured:
                if self.configured_ns is None:
                    self.configured_ns = t
                wake = True
            elif cls is GoAway:
                self.go_away = True
            elif cls is SessionClosed:
                self.session_closed_ns = t
                self.session_close_reason = ev.reason
                if ev.reason == "expired":  # the session limit (GPT-Live)
                    self.ended_ns = self.ended_ns or t
                    self.fail(SESSION_EXPIRED, "session.closed: expired")
                wake = True
            elif cls is Interrupted:
                if turn.barge_ns is not None and turn.stopped_ns is None:
                    turn.stopped_ns = t
        return wake
