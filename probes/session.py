"""The engine: one scripted voice session against one target, measured.

Plain blocking code over a transport (probes/transport.py: websockets' sans-I/O protocol on a
socket the transport owns), so the same function runs in OS threads (CLI, scheduler) and in
gevent greenlets under monkey-patching (Locust): no asyncio anywhere.

Two flows of control per session:
- the caller's thread is the **sender**: it connects, configures, and streams each utterance in
  chunks on an absolute schedule (chunk k is due at t0 + k * chunk; lateness is recorded as
  send lag, never accumulated as drift), then waits for the reply with per-phase deadlines;
- the transport's receive thread (greenlet under gevent) is the **receiver**: each frame,
  stamped with the kernel's arrival time of its last bytes where the socket has it
  (probes/rxstamp.py), goes to the dialect and its events to the marks (probes/marks.py), so a
  receive loop that runs late under load does not inflate latencies.

Latencies are taken from E, the moment the last speech chunk was *due* (docs/design.md), so a late
sender shows up as send lag, not as server slowness. Everything the target can do wrong ends up
in `SessionResult.outcome` as one of the stable error classes; run_session never raises for it.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import threading
import time
import uuid
from time import perf_counter_ns

from probes import audio, playback, prices, transport, wer
from probes.dialects import dialect_for
from probes.dialects.base import (
    AudioDelta,
    Dialect,
    DialectError,
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
from probes.outcomes import (
    CLIENT_ERROR,
    CLIENT_OVERLOAD,
    CONFIG,
    GO_AWAY,
    SESSION_EXPIRED,
    STOPPED,
    Failure,
)
from probes.results import (
    OK,
    SessionResult,
    TurnResult,
    Usage,
    response_failed,
    server_error,
    timeout,
    ws_closed,
)
from probes.spec import TURN_MODES, Scenario, Target
from probes.transport import MAX_FRAME_BYTES, SEND_BLOCK_TIMEOUT_S, Closed, SendTimeout, redact_url

__all__ = ["CLIENT_ERROR", "CLIENT_OVERLOAD", "CONFIG", "GO_AWAY", "MAX_FRAME_BYTES",
           "SEND_BLOCK_TIMEOUT_S", "SESSION_EXPIRED", "STOPPED", "effective_target", "prepare",
           "redact_url", "run_session"]

#: Per-turn bounds on what a server can make us keep (a flood ends the turn, not the process).
MAX_TEXT_CHARS = 64 * 1024  # transcript / input transcript text kept per turn; the rest counted
MAX_DELTAS = 200_000  # audio deltas per turn; more is a protocol error

_NS = 1_000_000_000
_STOP_POLL_S = 0.25  # how often a waiting session looks at the caller's stop event


def run_session(
    target: Target,
    scenario: Scenario,
    *,
    kind: str = "probe",
    agent: str = "",
    run_id: str = "",
    api_key: str | None = None,
    intended_start_ns: int | None = None,
    stop: threading.Event | None = None,
) -> SessionResult:
    """Run one session and return what was measured. Never raises for anything the target does.

    api_key=None reads os.environ[target.api_key_env] at connect time (unset -> outcome
    "config"). intended_start_ns (perf_counter_ns) is when the load model wanted this session
    to start: if it is still ahead the call waits for it, and the lateness is `start_lag_ms`.
    `stop` ends the session early (outcome "stopped"). Raises ValueError only for a spec the
    engine cannot run at all (unknown turn mode or provider).
    """
    if scenario.turn_mode not in TURN_MODES:
        raise ValueError(f"turn_mode must be one of {TURN_MODES}, not {scenario.turn_mode!r}")
    target = effective_target(target, scenario)
    dialect = _dialect(target, scenario)
    res = SessionResult(
        target=target.name,
        provider=target.provider,
        model=target.model,
        scenario=scenario.name,
        kind=kind,
        agent=agent,
        run_id=run_id,
        session_id=uuid.uuid4().hex,
    )
    key = api_key
    if key is None and target.api_key_env:
        key = os.environ.get(target.api_key_env) or None
        if key is None:
            res.outcome = CONFIG
            res.error = f"environment variable {target.api_key_env} is not set"
            return res
    s = _Session(target, scenario, dialect, res, key, stop)
    try:
        s.run(intended_start_ns)
    except Exception as e:  # a bug of ours: report it, do not kill a load generator
        if res.outcome == OK:
            res.outcome = CLIENT_ERROR
            res.error = s.scrub(f"{type(e).__name__}: {e}")
        res.turns = [t for t in res.turns if isinstance(t, TurnResult)]
    finally:
        s.close()
    return res


# ---- the receiver's view of one turn ---------------------------------------------------------


class _Turn:
    """Marks the receiver collects for one turn (plain attributes: written by one thread)."""

    __slots__ = (
        "index",
        "speech_end_ns",
        "speech_sent_ns",
        "speech_stopped_ns",
        "first_audio_ns",
        "first_text_ns",
        "done_ns",
        "audio_t",
        "audio_n",
        "done",
        "transcript",
        "input_transcript",
        "tool_calls",
        "lags_ns",
        "responses",
        "text_chars",
        # scripted scenarios (probes/play.py): the reply to the latest trigger (speech end, tool
        # result, text), barge-in marks, expected transcript, checks
        "usage",
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
        self.speech_end_ns: int | None = None
        self.speech_sent_ns: int | None = None
        self.speech_stopped_ns: int | None = None
        self.first_audio_ns: int | None = None
        self.first_text_ns: int | None = None
        self.done_ns: int | None = None
        self.audio_t: list[int] = []
        self.audio_n: list[int] = []
        self.done: ResponseDone | None = None
        self.transcript: list[str] = []
        self.input_transcript: list[str] = []
        self.tool_calls: list[tuple[int, ToolCall]] = []
        self.lags_ns: list[int] = []
        self.responses = 0
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


# append messages per (dialect class, input format, utterance): built once, shared by sessions
_MESSAGES: dict[tuple, tuple[bytes, ...]] = {}


def _append_messages(dialect: Dialect, utt: audio.Utterance) -> tuple[bytes, ...]:
    key = (type(dialect), dialect.input_format, utt)
    msgs = _MESSAGES.get(key)
    if msgs is None:
        msgs = tuple(dialect.append_audio(c) for c in utt.chunks)
        if len(_MESSAGES) > 256:
            _MESSAGES.clear()
        _MESSAGES[key] = msgs
    return msgs


def _utterance(dialect: Dialect, sc: Scenario, index: int) -> audio.Utterance:
    fmt = dialect.input_format
    return audio.utterance(
        sc.utterance_s,
        0.0 if sc.turn_mode == "manual" else sc.trailing_silence_s,
        rate=fmt.rate,
        codec=fmt.codec,
        chunk_ms=sc.chunk_ms,
        seed=sc.seed + index,
        loudness_dbfs=sc.loudness_dbfs,
    )


def prepare(target: Target, scenario: Scenario) -> None:
    """Render and encode every turn's audio now (cached for all later sessions).

    run_session does this itself before connecting; a load generator calls it once before the
    run so no session renders audio (tens of ms of numpy) while others are being timed, which
    under gevent would stall every greenlet in the process. Raises audio.AudioSourceError for
    a say step whose WAV or espeak-ng cannot be used.
    """
    _render(_dialect(effective_target(target, scenario), scenario), scenario)


def _dialect(target: Target, scenario: Scenario) -> Dialect:
    return dialect_for(target, scenario.turn_mode, interrupt_response=scenario.interrupt_response,
                       silence_ms=scenario.silence_ms)


def _render(dialect: Dialect, scenario: Scenario) -> None:
    if scenario.script is not None:
        from probes.play import render

        render(dialect, scenario)
        return
    for i in range(scenario.turns):
        _append_messages(dialect, _utterance(dialect, scenario, i))


#: outcomes that mean "the session reached the provider's session limit" (`expect:`)
_EXPIRY_OUTCOMES = {"session_expired": (SESSION_EXPIRED, GO_AWAY)}


def _expected_end(expect: str | None, outcome: str) -> bool:
    return expect is not None and outcome in _EXPIRY_OUTCOMES.get(expect, ())


def effective_target(target: Target, scenario: Scenario) -> Target:
    """The target as this scenario talks to it: its instructions, tools and transcription,
    plus the simulator's steering hints when the target asks for them."""
    changes: dict = {}
    if scenario.instructions is not None:
        changes["instructions"] = scenario.instructions
    if scenario.tools is not None:
        changes["tools"] = scenario.tools
    if scenario.transcription_model is not None:
        changes["transcription_model"] = scenario.transcription_model
    if target.simulator_hints and scenario.script is not None:
        from probes.play import simulator_hints

        hints = simulator_hints(scenario.script)
        if hints:
            base = changes.get("instructions", target.instructions) or ""
            changes["instructions"] = f"{base} {hints}".strip()
    return dataclasses.replace(target, **changes) if changes else target


_Failure = Failure


class _Session:
    def __init__(
        self,
        target: Target,
        scenario: Scenario,
        dialect: Dialect,
        res: SessionResult,
        api_key: str | None,
        stop: threading.Event | None,
    ) -> None:
        self.target = target
        self.scenario = scenario
        self.t = scenario.timeouts
        self.dialect = dialect
        self.res = res
        self.api_key = api_key
        self.stop = stop
        self.ws: transport.Transport | None = None
        self.wake = threading.Event()
        self.closing = False
        self._closed = False
        self.closed_code: int | None = None
        self.closed_reason = ""
        self.failure: tuple[str, str] | None = None  # (outcome, message), first one wins
        self.ready_ns: int | None = None
        self.configured_ns: int | None = None
        self.turn = _Turn(-1)  # frames before the first turn land here
        self.next_turn: _Turn | None = None  # a turn begun while self.turn's reply still runs
        self.awaiting_transcript: collections.deque[_Turn] = collections.deque()
        self.ended_ns: int | None = None  # session_expired notice or close, whichever came first
        self.audio_free_ns = 0  # when the audio sent so far has played out (the mic's clock)
        self.session_deadline = 0

    # ---- receiver side (runs in the connection's receive thread/greenlet) --------------

    def on_frame(self, data: bytes, t: int) -> None:
        try:
            events = self.dialect.parse(data)
        except DialectError as e:
            self.fail("protocol", str(e))
            return
        turn = self.turn
        for ev in events:
            cls = type(ev)
            if cls is AudioDelta:
                if turn.first_audio_ns is None:
                    turn.first_audio_ns = t
                    self.wake.set()
                if turn.reply_audio_ns is None:
                    turn.reply_audio_ns = t
                    if turn.tool_sent_ns is not None and turn.tool_audio_ns is None:
                        turn.tool_audio_ns = t
                    self.wake.set()
                if len(turn.audio_t) >= MAX_DELTAS:
                    self.fail("protocol", f"more than {MAX_DELTAS} audio deltas in one turn")
                    return
                turn.audio_t.append(t)
                turn.audio_n.append(ev.nbytes)
                if turn.barge_ns is not None and t >= turn.barge_ns:
                    turn.barge_bytes += ev.nbytes
            elif cls is TranscriptDelta or cls is TextDelta:
                if turn.first_text_ns is None:
                    turn.first_text_ns = t
                if turn.text_chars < MAX_TEXT_CHARS:
                    turn.transcript.append(ev.text[: MAX_TEXT_CHARS - turn.text_chars])
                turn.text_chars += len(ev.text)
            elif cls is ResponseDone:
                turn.done = turn.reply_done = ev
                turn.done_ns = turn.reply_done_ns = t
                turn.usage.add(ev.usage)
                if ev.status == "cancelled" and turn.barge_ns is not None and turn.stopped_ns is None:
                    turn.stopped_ns = t
                if self.next_turn is not None:  # the reply a barge-in spoke over has ended
                    self.turn = turn = self.next_turn
                    self.next_turn = None
                self.wake.set()
            elif cls is SpeechStopped:
                st = self.next_turn or turn  # speech over a reply belongs to the next turn
                if st.speech_stopped_ns is None:
                    st.speech_stopped_ns = t
            elif cls is ResponseCreated:
                turn.responses += 1
            elif cls is InputTranscript:
                # transcripts come in speech order, maybe after the next turn began: the oldest
                # turn still waiting for one gets it
                it = self.awaiting_transcript.popleft() if (
                    ev.final and self.awaiting_transcript) else (self.next_turn or turn)
                if ev.final and len(it.input_transcript) < 16:
                    it.input_transcript.append(ev.text[:MAX_TEXT_CHARS])
                    self.wake.set()
            elif cls is ToolCall:
                if len(turn.tool_calls) < 64:
                    turn.tool_calls.append((t, ev))
                self.wake.set()
            elif cls is ServerError:
                if ev.code == SESSION_EXPIRED:
                    self.ended_ns = self.ended_ns or t
                    self.fail(SESSION_EXPIRED, ev.message)
                else:
                    self.fail(server_error(ev.code), ev.message)
            elif cls is SessionReady:
                self.ready_ns = t
                self.res.server_session_id = ev.session_id
                self.wake.set()
            elif cls is SessionConfigured:
                if self.configured_ns is None:
                    self.configured_ns = t
                self.wake.set()
            elif cls is GoAway:
                self.res.go_away = True
            elif cls is Interrupted:
                if turn.barge_ns is not None and turn.stopped_ns is None:
                    turn.stopped_ns = t
            elif cls is Unknown:
                pass

    def on_close(self, code: int, reason: str) -> None:
        self.closed_code, self.closed_reason = code, reason
        self.ended_ns = self.ended_ns or perf_counter_ns()
        if not self.closing:
            if self.res.go_away:  # announced (Gemini goAway): its own outcome, not a drop
                self.fail(GO_AWAY, f"closed {code} after goAway: {reason or 'no reason'}")
            else:
                self.fail(ws_closed(code), reason or "connection closed by the server")
        self.wake.set()

    def fail(self, outcome: str, message: str) -> None:
        if self.failure is None:
            self.failure = (outcome, self.scrub(message))
        self.wake.set()

    # ---- sender side (the caller's thread) ---------------------------------------------

    def run(self, intended_start_ns: int | None) -> None:
        res = self.res
        # render before the clock starts: cached after the first session, but the first one's
        # numpy work must not count as connect time or start lag
        try:
            _render(self.dialect, self.scenario)
        except audio.AudioSourceError as e:  # a WAV that is not audio, espeak-ng failing
            return self._end(CONFIG, str(e))
        script = self.scenario.script
        if intended_start_ns is not None:
            ahead = intended_start_ns - perf_counter_ns()
            if ahead > 0 and not self._sleep(ahead / _NS):
                return self._end(STOPPED, "stopped before start")
        start = perf_counter_ns()
        res.started_at = time.time()
        res.connect_start_ns = start
        if intended_start_ns is not None:
            res.start_lag_ms = (start - intended_start_ns) / 1e6
        session_s = self.t.session
        if script is not None:  # a long-call scenario runs until its repeat's max, not less
            session_s = max(session_s, script.longest_s() + self.t.response_done)
        self.session_deadline = start + int(session_s * _NS)
        try:
            self._connect(start)
            self._setup(start)
            if script is not None:
                from probes.play import play

                play(self, script)
            else:
                for i in range(self.scenario.turns):
                    if i:
                        pause = self.scenario.pause_s
                        if pause > 0 and not self._sleep(pause):
                            raise _Failure(STOPPED, "stopped between turns")
                    self._turn(i)
            self.closing = True  # all turns done: a close from here on is the normal end
        except _Failure as f:
            outcome, msg = f.args
            if script is not None and _expected_end(script.expect, outcome):
                self.closing = True
                res.ended_by = outcome
                if self.ready_ns is not None and self.ended_ns is not None:
                    res.expiry_s = (self.ended_ns - self.ready_ns) / _NS
            else:
                self._end(outcome, msg)
        else:
            if self.failure is not None:
                self._end(*self.failure)
        finally:
            end = perf_counter_ns()
            # close first: the receiver must stop appending before the turns are summed up
            self.close()
            self._finish_session(start, end)

    def _end(self, outcome: str, message: str) -> None:
        if self.res.outcome == OK:
            self.res.outcome = outcome
            self.res.error = self.scrub(message)

    def _check(self) -> None:
        """Raise the first failure the receiver recorded, or the caller's stop."""
        if self.failure is not None:
            raise _Failure(*self.failure)
        if self.stop is not None and self.stop.is_set():
            raise _Failure(STOPPED, "stopped by the caller")

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early for the caller's stop; False if stopped."""
        if self.stop is None:
            time.sleep(seconds)
            return True
        return not self.stop.wait(seconds)

    def _connect(self, start: int) -> None:
        req = self.dialect.connect_request(self.api_key)
        self.ws = transport.connect_websocket(
            req.url, req.headers, ca_file=self.target.ca_file, timeout_s=self.t.connect,
            on_frame=self.on_frame, on_close=self.on_close)
        self.res.connect_ms = (self.ws.open_ns - start) / 1e6

    def _wait(self, done, deadline_ns: int, phase: str) -> None:
        """Wait until done() is true; a passed deadline ends the session as timeout:<phase>."""
        while True:
            self.wake.clear()
            if done():
                return
            self._check()
            now = perf_counter_ns()
            dl = min(deadline_ns, self.session_deadline)
            if now >= dl:
                raise _Failure(
                    timeout(phase if dl == deadline_ns else "session"),
                    f"{phase if dl == deadline_ns else 'session'} deadline passed",
                )
            wait_s = (dl - now) / _NS
            if self.stop is not None:
                wait_s = min(wait_s, _STOP_POLL_S)
            self.wake.wait(wait_s)

    def _setup(self, start: int) -> None:
        ws = self.ws
        assert ws is not None
        opened = perf_counter_ns()
        setup_first = getattr(self.dialect, "setup_first", False)  # Gemini: setup, then ready
        if setup_first:
            self._send_all(self.dialect.configure())
        self._wait(lambda: self.ready_ns is not None, opened + int(self.t.ready * _NS), "ready")
        self.res.ready_ms = (self.ready_ns - start) / 1e6
        if not setup_first:
            self._send_all(self.dialect.configure())
        if self.dialect.waits_for_configured:
            self._wait(
                lambda: self.configured_ns is not None,
                perf_counter_ns() + int(self.t.ready * _NS),
                "ready",
            )

    def _send_all(self, msgs) -> None:
        for m in msgs:
            self._send(m)

    def _send(self, m: bytes) -> None:
        try:
            self.ws.send(m)
        except Closed as e:
            self._send_failed(e)

    def _send_failed(self, e: Closed) -> None:
        """A send found the connection gone (or blocked past SEND_BLOCK_TIMEOUT_S)."""
        if isinstance(e, SendTimeout):
            raise _Failure(
                timeout("send"), f"the server stopped reading for {transport.SEND_BLOCK_TIMEOUT_S:g} s"
            ) from None
        # the receiver's on_close records the code; give it a moment to run
        self._wait(lambda: self.closed_code is not None, perf_counter_ns() + _NS, "session")
        self._check()
        raise _Failure(ws_closed(self.closed_code), "connection closed while sending") from None

    def _turn(self, index: int) -> None:
        utt = _utterance(self.dialect, self.scenario, index)
        turn = _Turn(index)
        self.turn = turn
        self._speak(turn, utt)
        self._await_reply(turn, turn.speech_end_ns)

    def _speak(self, turn: _Turn, utt: audio.Utterance, t0: int | None = None,
               user_turn: bool = True) -> None:
        """Stream one utterance, chunk k due at t0 + k * chunk (t0 = now unless given).

        A user turn sets the turn's E, asks for a reply and joins res.turns (even when
        streaming fails, so the session's end is counted); a manual one ends with commit +
        response.create after its speech. Otherwise (silence) it only keeps the mic going."""
        manual = self.scenario.turn_mode == "manual" and user_turn
        msgs = _append_messages(self.dialect, utt)
        last = utt.speech_chunks - 1 if user_turn else -1
        if manual:
            self._send_all(self.dialect.start_activity())
        chunk_ns = utt.chunk_ms * 1_000_000
        lags = turn.lags_ns
        send = self.ws.send
        sleep = time.sleep
        try:
            # the mic's clock runs on: a stream starts no earlier than the last one's audio ended
            t0 = max(perf_counter_ns(), self.audio_free_ns) if t0 is None else t0
            self.audio_free_ns = t0 + len(msgs) * chunk_ns
            if user_turn:
                turn.speech_end_ns = t0 + last * chunk_ns
                turn.trigger(turn.speech_end_ns)
            for k, m in enumerate(msgs):
                due = t0 + k * chunk_ns
                now = perf_counter_ns()
                if due > now:
                    sleep((due - now) / _NS)
                    now = perf_counter_ns()
                if self.failure is not None or (self.stop is not None and self.stop.is_set()):
                    self._check()
                if now >= self.session_deadline:
                    raise _Failure(timeout("session"), "session deadline passed while sending")
                lags.append(now - due)
                send(m)
                if k == last:
                    turn.speech_sent_ns = now
                    if manual:
                        for em in self.dialect.end_turn():
                            send(em)
        except Closed as e:
            self._send_failed(e)
        finally:
            if user_turn:
                self.res.turns.append(turn)  # replaced by its TurnResult in _finish_session

    def _await_reply(self, turn: _Turn, e: int) -> None:
        """Wait for the first audio (or the end) of the reply to the turn's latest trigger,
        then its end, with phase deadlines from `e`. A failed reply ends the session with its
        outcome; so does a cancelled one, unless the user spoke over it (barge-in)."""
        self._wait(
            lambda: turn.reply_audio_ns is not None or turn.reply_done_ns is not None,
            e + int(self.t.first_audio * _NS),
            "first_audio",
        )
        self._wait(lambda: turn.reply_done_ns is not None, e + int(self.t.response_done * _NS),
                   "response_done")
        done = turn.reply_done
        if done is not None and (done.status == "failed" or (
                done.status == "cancelled" and turn.barge_ns is None)):
            code = done.error_code if done.status == "failed" else (done.reason or "cancelled")
            raise _Failure(response_failed(code), f"response {done.status}: {code}")

    # ---- results -------------------------------------------------------------------------

    def _finish_session(self, start: int, end: int) -> None:
        res = self.res
        res.duration_s = (end - start) / _NS
        all_lags: list[int] = []
        turns: list[TurnResult] = []
        for t in res.turns:
            tr = self._turn_result(t)
            if tr.outcome == OK and res.outcome != OK and t.done_ns is None:
                tr.outcome, tr.error = res.outcome, res.error  # the turn the session died in
            all_lags.extend(t.lags_ns)
            turns.append(tr)
        res.turns = turns
        if self.ready_ns is not None and res.ready_ms is None:
            res.ready_ms = (self.ready_ns - start) / 1e6
        if all_lags:
            all_lags.sort()
            res.send_lag_p99_ms = playback.percentile(all_lags, 99) / 1e6
            worst = all_lags[-1] / 1e6
            if res.outcome == OK and worst > self.scenario.max_send_lag_ms:
                res.outcome = CLIENT_OVERLOAD
                res.error = (
                    f"send lag reached {worst:.0f} ms (limit {self.scenario.max_send_lag_ms:g} ms):"
                    " this load generator was too busy to pace audio"
                )
        res.unknown_events = getattr(self.dialect, "unknown_events", 0)

    def _turn_result(self, t: _Turn) -> TurnResult:
        tr = TurnResult(index=t.index)
        e, sent = t.speech_end_ns, t.speech_sent_ns
        tr.speech_end_ns, tr.speech_sent_ns = e, sent
        tr.first_audio_ns, tr.response_done_ns = t.first_audio_ns, t.done_ns
        if e is not None:
            if t.first_audio_ns is not None:
                tr.ttfa_ms = (t.first_audio_ns - e) / 1e6
                if sent is not None:
                    tr.ttfa_sent_ms = (t.first_audio_ns - sent) / 1e6
            if t.first_text_ns is not None:
                tr.ttft_ms = (t.first_text_ns - e) / 1e6
            if t.speech_stopped_ns is not None:
                tr.vad_ms = (t.speech_stopped_ns - e) / 1e6
            if t.done_ns is not None:
                tr.turn_ms = (t.done_ns - e) / 1e6
                if sent is not None:
                    tr.turn_sent_ms = (t.done_ns - sent) / 1e6
            if t.tool_calls:
                tr.tool_ms = (t.tool_calls[0][0] - e) / 1e6
        tr.barge_in_ns, tr.tool_result_sent_ns = t.barge_ns, t.tool_sent_ns
        if t.tool_sent_ns is not None and t.tool_audio_ns is not None:
            tr.tool_result_ms = (t.tool_audio_ns - t.tool_sent_ns) / 1e6
        bps = self.dialect.output_format.bytes_per_s
        if t.barge_ns is not None:
            tr.checks["reply_stopped"] = t.stopped_ns is not None
            if t.stopped_ns is not None:
                tr.barge_in_ms = (t.stopped_ns - t.barge_ns) / 1e6
            tr.barge_in_audio_ms = t.barge_bytes / bps * 1000
        tr.checks.update(t.checks)
        tr.notes = "; ".join(t.notes)[:MAX_TEXT_CHARS]
        n = min(len(t.audio_t), len(t.audio_n))  # consistent even if a receiver were still running
        arrivals = t.audio_t[:n]
        durs = [b / bps for b in t.audio_n[:n]]
        tr.audio_s = sum(durs)
        tr.rtf = playback.rtf(arrivals, durs)
        tr.stalls, tr.stall_ms = playback.stalls(arrivals, durs, self.scenario.jitter_buffer_ms)
        tr.gap_p95_ms = playback.percentile(playback.gaps_ms(arrivals), 95)
        if t.lags_ns:
            lags = sorted(t.lags_ns)
            tr.send_lag_p50_ms = playback.percentile(lags, 50) / 1e6
            tr.send_lag_p99_ms = playback.percentile(lags, 99) / 1e6
            tr.send_lag_max_ms = lags[-1] / 1e6
        if t.done is not None:
            tr.usage = t.usage
            tr.response_status = t.done.status
            tr.cost_usd = prices.cost_usd(self.target.model, t.usage, self.target.prices)
            if t.done.status == "failed":
                tr.outcome = response_failed(t.done.error_code)
            elif t.done.status == "cancelled" and t.barge_ns is None:
                tr.outcome = response_failed(t.done.reason or "cancelled")
        else:
            tr.usage = Usage()
        tr.transcript = "".join(t.transcript)
        tr.input_transcript = " ".join(t.input_transcript)
        if t.expected_text is not None:
            tr.checks["transcribed"] = bool(t.input_transcript)
            if t.input_transcript:
                tr.wer = wer.word_error_rate(t.expected_text, tr.input_transcript)
        return tr

    def close(self) -> None:
        """Close once (bounded by close_timeout); the receiver has stopped when it returns."""
        self.closing = True
        ws = self.ws
        if ws is None or self._closed:
            return
        self._closed = True
        try:
            ws.close()
        except Exception:  # already gone; nothing left to measure
            pass

    def scrub(self, message: str) -> str:
        """Never let the key or a URL's query/credentials into a message. (Keys shorter than 8
        characters are test placeholders; scrubbing "x" would garble every message.)"""
        if self.api_key and len(self.api_key) >= 8:
            message = message.replace(self.api_key, "***")
        return _URL_RE.sub(lambda m: redact_url(m.group(0)), message)


_URL_RE = re.compile(r"\b(?:wss?|https?)://[^\s'\"<>]+")
