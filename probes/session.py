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

import dataclasses
import os
import re
import threading
import time
import uuid
from time import perf_counter_ns

from probes import audio, onset, prices, transport
from probes.dialects import dialect_for
from probes.dialects.base import Dialect, DialectError
from probes.marks import Receiver, TurnMarks
from probes.measure import finish_session, turn_result
from probes.messages import append_messages
from probes.outcomes import (
    CLIENT_ERROR,
    CLIENT_OVERLOAD,
    CONFIG,
    GO_AWAY,
    SESSION_EXPIRED,
    STOPPED,
    Failure,
)
from probes.play import plain_script, play, render, simulator_hints
from probes.results import OK, SessionResult, TurnResult, response_failed, timeout, ws_closed
from probes.spec import TURN_MODES, Scenario, Target
from probes.transport import MAX_FRAME_BYTES, SEND_BLOCK_TIMEOUT_S, Closed, SendTimeout, redact_url

__all__ = ["CLIENT_ERROR", "CLIENT_OVERLOAD", "CONFIG", "GO_AWAY", "MAX_FRAME_BYTES",
           "SEND_BLOCK_TIMEOUT_S", "SESSION_EXPIRED", "STOPPED", "Session", "effective_target",
           "prepare", "redact_url", "run_session"]

_NS = 1_000_000_000
#: how long a protocol's own close (GPT-Live session.close) may take to be answered
CLOSE_WAIT_S = 5.0
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
    s = Session(target, scenario, dialect, res, key, stop)
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


def prepare(target: Target, scenario: Scenario) -> None:
    """Render and encode every turn's audio now (cached for all later sessions).

    run_session does this itself before connecting; a load generator calls it once before the
    run so no session renders audio (tens of ms of numpy) while others are being timed, which
    under gevent would stall every greenlet in the process. Raises audio.AudioSourceError for
    a say step whose WAV or espeak-ng cannot be used.
    """
    render(_dialect(effective_target(target, scenario), scenario), scenario,
           opus=target.transport == "webrtc")


def _rtc():
    """probes/rtc_session.py, imported on first use (aiortc and PyAV only for WebRTC targets)."""
    from probes import rtc_session

    return rtc_session


def _dialect(target: Target, scenario: Scenario) -> Dialect:
    return dialect_for(target, scenario.turn_mode, interrupt_response=scenario.interrupt_response,
                       silence_ms=scenario.silence_ms)


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
        hints = simulator_hints(scenario.script)
        if hints:
            base = changes.get("instructions", target.instructions) or ""
            changes["instructions"] = f"{base} {hints}".strip()
    return dataclasses.replace(target, **changes) if changes else target


class Session:
    """One open session: the I/O and the pacing under the script player (probes/play.py).

    What the player may use is public and small: `dialect`, `scenario`, `target`, `timeouts`,
    `marks` (the receiver's probes.marks.Receiver), and `check`, `wait`, `settle`, `sleep`,
    `send`, `speak`, `await_reply`. Everything else is the engine's own."""

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
        self.timeouts = scenario.timeouts
        self.dialect = dialect
        self.res = res
        self.api_key = api_key
        self.stop = stop
        self.marks = Receiver()
        quiet_ms = target.quiet_ms if target.quiet_ms is not None else scenario.quiet_ms
        # the audible onset (and, for continuous output, the reply's end) from the sound
        self._gate = onset.gate_for(dialect, quiet_ms=quiet_ms)
        self._gate_quiet_ms = quiet_ms
        self._rtc = target.transport == "webrtc"  # probes/rtc_session.py does the media
        self._ws: transport.Transport | None = None
        self._wake = threading.Event()
        self._closed = False
        self._audio_free_ns = 0  # when the audio sent so far has played out (the mic's clock)
        self._stream_ms = 0.0  # audio streamed so far, ms (where the next utterance starts)
        # an open mic (GPT-Live, `continuous_input`): silence streams whenever no utterance does
        self._mic: bytes | None = None
        self._mic_ns = scenario.chunk_ms * 1_000_000
        self._deadline = 0  # the session's own deadline (perf_counter_ns)

    # ---- receiver side (runs in the transport's receive thread/greenlet) -------------------

    def _on_frame(self, data: bytes, t: int) -> None:
        marks = self.marks
        try:
            wake = False
            for events, ts in self._gate.feed(self.dialect.parse(data), t):
                wake = marks.feed(events, ts) or wake
        except DialectError as e:
            marks.fail("protocol", str(e))
            wake = True
        except Exception as e:  # a bug of ours in a dialect or the marks: end, do not hang
            marks.fail(CLIENT_ERROR, f"{type(e).__name__}: {e}")
            wake = True
        if wake:
            self._wake.set()

    def _on_close(self, code: int, reason: str) -> None:
        self.marks.closed(code, reason, perf_counter_ns())
        self._wake.set()

    # ---- the player's surface (the caller's thread) ---------------------------------------

    def check(self) -> None:
        """Raise the first failure the receiver recorded, or the caller's stop."""
        failure = self.marks.failure
        if failure is not None:
            raise Failure(failure[0], self.scrub(failure[1]))
        if self.stop is not None and self.stop.is_set():
            raise Failure(STOPPED, "stopped by the caller")

    def wait(self, done, deadline_ns: int, phase: str) -> None:
        """Wait until done() is true; a passed deadline ends the session as timeout:<phase>."""
        while True:
            self._wake.clear()
            if done():
                return
            self.check()
            now = perf_counter_ns()
            dl = min(deadline_ns, self._deadline)
            if now >= dl:
                which = phase if dl == deadline_ns else "session"
                raise Failure(timeout(which), f"{which} deadline passed")
            wait_s = (dl - now) / _NS
            if self.stop is not None:
                wait_s = min(wait_s, _STOP_POLL_S)
            self._wake.wait(self._mic_wait(now, wait_s))

    def settle(self, done, seconds: float) -> None:
        """Give done() up to `seconds` to come true; passing them is not a failure."""
        end = perf_counter_ns() + int(seconds * _NS)
        while not done() and perf_counter_ns() < end:
            self.check()
            self._wake.clear()
            if not done():
                now = perf_counter_ns()
                self._wake.wait(self._mic_wait(now, min(0.05, max((end - now) / _NS, 0))))

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early for the caller's stop; False if stopped."""
        if self._mic is not None:  # the open mic goes on meanwhile
            end = perf_counter_ns() + int(seconds * _NS)
            while (now := perf_counter_ns()) < end:
                wait_s = self._mic_wait(now, (end - now) / _NS)
                if self.stop is not None and self.stop.wait(wait_s):
                    return False
                if self.stop is None:
                    time.sleep(wait_s)
            return True
        if self.stop is None:
            time.sleep(seconds)
            return True
        return not self.stop.wait(seconds)

    def _mic_wait(self, now: int, wait_s: float) -> float:
        """The open mic: send the silence chunks due by now (on the mic's clock, right after
        the audio already sent), and return how long to wait, at most until the next one."""
        if self._mic is None or not self._audio_free_ns:
            return wait_s
        free = self._audio_free_ns
        if free <= now:
            try:
                while free <= now:
                    self._ws.send(self._mic)
                    free += self._mic_ns
                    self._stream_ms += self._mic_ns / 1e6
            except Closed as e:
                self._audio_free_ns, self._mic = free, None  # no mic while we look why
                self._send_failed(e)
            self._audio_free_ns = free
        return max(0.0, min(wait_s, (free - now) / _NS))

    def send(self, msgs) -> None:
        """Send the dialect's messages, in order."""
        ws = self._ws
        try:
            for m in msgs:
                ws.send(m)
        except Closed as e:
            self._send_failed(e)

    def speak(self, turn: TurnMarks, utt: audio.Utterance, t0: int | None = None,
              user_turn: bool = True) -> None:
        """Stream one utterance, chunk k due at t0 + k * chunk (t0 = now unless given).

        A user turn sets the turn's E, asks for a reply and joins the turns (even when
        streaming fails, so the session's end is counted); a manual one ends with commit +
        response.create after its speech. Otherwise (silence) it only keeps the mic going."""
        if self._rtc:
            return _rtc().speak(self, turn, utt, t0, user_turn)
        manual = self.scenario.turn_mode == "manual" and user_turn
        msgs = append_messages(self.dialect, utt)
        last = utt.speech_chunks - 1 if user_turn else -1
        if manual:
            self.send(self.dialect.start_activity())
        chunk_ns = utt.chunk_ms * 1_000_000
        lags = turn.lags_ns
        send = self._ws.send
        sleep = time.sleep
        marks = self.marks
        stop = self.stop
        try:
            # the mic's clock runs on: a stream starts no earlier than the last one's audio ended
            t0 = max(perf_counter_ns(), self._audio_free_ns) if t0 is None else t0
            self._audio_free_ns = t0 + len(msgs) * chunk_ns
            pos, self._stream_ms = self._stream_ms, self._stream_ms + len(msgs) * utt.chunk_ms
            if marks.input_t0_ns is None:
                marks.input_t0_ns = t0
            if user_turn:
                turn.input_pos_ms = pos
                turn.speech_end_ns = t0 + last * chunk_ns
                turn.trigger(turn.speech_end_ns)
            for k, m in enumerate(msgs):
                due = t0 + k * chunk_ns
                now = perf_counter_ns()
                if due > now:
                    sleep((due - now) / _NS)
                    now = perf_counter_ns()
                if marks.failure is not None or (stop is not None and stop.is_set()):
                    self.check()
                if now >= self._deadline:
                    raise Failure(timeout("session"), "session deadline passed while sending")
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
                marks.turns.append(turn)

    def reply_playing(self) -> bool:
        """WebRTC: the RTP stream is inside a reply (probes/rtc_media.py); else False."""
        return self._rtc and self._ws is not None and self._ws.listener.in_reply

    def await_reply(self, turn: TurnMarks) -> None:
        """Wait for the first audio (or the end) of the reply to the turn's latest trigger,
        then its end, with phase deadlines from that trigger. A failed reply ends the session
        with its outcome; so does a cancelled one, unless the user spoke over it (barge-in)."""
        e = turn.reply_from_ns
        t = self.timeouts
        self.wait(lambda: turn.reply_audio_ns is not None or turn.reply_done_ns is not None,
                  e + int(t.first_audio * _NS), "first_audio")
        self.wait(lambda: turn.reply_done_ns is not None, e + int(t.response_done * _NS),
                  "response_done")
        done = turn.reply_done
        if done is not None and (done.status == "failed" or (
                done.status == "cancelled" and turn.barge_ns is None)):
            code = done.error_code if done.status == "failed" else (done.reason or "cancelled")
            raise Failure(response_failed(code), f"response {done.status}: {code}")

    # ---- the session's life ----------------------------------------------------------------

    def run(self, intended_start_ns: int | None) -> None:
        res = self.res
        sc = self.scenario
        # render before the clock starts: cached after the first session, but the first one's
        # numpy work must not count as connect time or start lag
        try:
            render(self.dialect, sc, opus=self._rtc)
        except audio.AudioSourceError as e:  # a WAV that is not audio, espeak-ng failing
            return self._end(CONFIG, str(e))
        script = sc.script if sc.script is not None else plain_script(sc)
        if getattr(self.dialect, "continuous_input", False) and not self._rtc:
            [self._mic] = append_messages(self.dialect, audio.silent(
                sc.chunk_ms / 1000, rate=self.dialect.input_format.rate,
                codec=self.dialect.input_format.codec, chunk_ms=sc.chunk_ms))
        if intended_start_ns is not None:
            ahead = intended_start_ns - perf_counter_ns()
            if ahead > 0 and not self.sleep(ahead / _NS):
                return self._end(STOPPED, "stopped before start")
        start = perf_counter_ns()
        res.started_at = time.time()
        res.connect_start_ns = start
        if intended_start_ns is not None:
            res.start_lag_ms = (start - intended_start_ns) / 1e6
        session_s = self.timeouts.session
        if sc.script is not None:  # a long-call scenario runs until its repeat's max, not less
            session_s = max(session_s, script.longest_s() + self.timeouts.response_done)
        self._deadline = start + int(session_s * _NS)
        try:
            self._connect(start)
            self._setup(start)
            play(self, script)
            if self._rtc:  # the last reply may still be playing: let its audio arrive
                _rtc().drain(self)
            self._say_goodbye()
            self.marks.closing = True  # all turns done: a close from here on is the normal end
        except Failure as f:
            if _expected_end(script.expect, f.outcome):
                self.marks.closing = True
                res.ended_by = f.outcome
                m = self.marks
                if m.ready_ns is not None and m.ended_ns is not None:
                    res.expiry_s = (m.ended_ns - m.ready_ns) / _NS
            else:
                self._end(f.outcome, f.message)
        else:
            m = self.marks
            # a close that raced the sender's end, after the last reply had ended, is the end
            if m.failure is not None and not (m.failed_by_close and m.turn.reply_done_ns):
                self._end(*m.failure)
        finally:
            end = perf_counter_ns()
            # close first: the receiver must stop writing marks before the turns are summed up
            self.close()
            self._finish(start, end)

    def _end(self, outcome: str, message: str) -> None:
        if self.res.outcome == OK:
            self.res.outcome = outcome
            self.res.error = self.scrub(message)

    def _connect(self, start: int) -> None:
        if self._rtc:
            return _rtc().connect(self, start)
        req = self.dialect.connect_request(self.api_key)
        self._ws = transport.connect_websocket(
            req.url, req.headers, ca_file=self.target.ca_file, timeout_s=self.timeouts.connect,
            on_frame=self._on_frame, on_close=self._on_close)
        self.res.connect_ms = (self._ws.open_ns - start) / 1e6

    def _setup(self, start: int) -> None:
        marks, ready_s = self.marks, self.timeouts.ready
        opened = perf_counter_ns()
        setup_first = getattr(self.dialect, "setup_first", False)  # Gemini: setup, then ready
        configure = (_rtc().rtc.configure_messages(self.dialect) if self._rtc
                     else self.dialect.configure())
        if setup_first:
            self.send(configure)
        self.wait(lambda: marks.ready_ns is not None, opened + int(ready_s * _NS), "ready")
        self.res.ready_ms = (marks.ready_ns - start) / 1e6
        if not setup_first:
            self.send(configure)
        if self.dialect.waits_for_configured:
            self.wait(lambda: marks.configured_ns is not None,
                      perf_counter_ns() + int(ready_s * _NS), "ready")

    def _say_goodbye(self) -> None:
        """A protocol with its own close (GPT-Live `session.close`): send it and give the
        server CLOSE_WAIT_S to answer with the final usage (`session.closed`)."""
        bye = getattr(self.dialect, "close", None)
        if bye is None:
            return
        marks = self.marks
        marks.closing = True  # the server's close after session.closed is the normal end
        self._mic = None
        self.send(bye())
        self.settle(lambda: marks.session_closed_ns is not None or marks.closed_code is not None,
                    CLOSE_WAIT_S)

    def _send_failed(self, e: Closed) -> None:
        """A send found the connection gone (or blocked past SEND_BLOCK_TIMEOUT_S)."""
        if isinstance(e, SendTimeout):
            raise Failure(timeout("send"), "the server stopped reading for "
                          f"{transport.SEND_BLOCK_TIMEOUT_S:g} s") from None
        # the receiver's on_close records the code; give it a moment to run
        marks = self.marks
        self.wait(lambda: marks.closed_code is not None, perf_counter_ns() + _NS, "session")
        self.check()
        raise Failure(ws_closed(marks.closed_code), "connection closed while sending") from None

    def _finish(self, start: int, end: int) -> None:
        res, m = self.res, self.marks
        if m.ready_ns is not None and res.ready_ms is None:
            res.ready_ms = (m.ready_ns - start) / 1e6
        res.server_session_id = m.server_session_id
        res.go_away = m.go_away
        fmt, tgt = self.dialect.output_format, self.target
        turns = [turn_result(t, output_format=fmt, model=tgt.model, prices_override=tgt.prices,
                             jitter_buffer_ms=self.scenario.jitter_buffer_ms) for t in m.turns]
        finish_session(res, turns, m.turns, duration_ns=end - start,
                       max_send_lag_ms=self.scenario.max_send_lag_ms)
        res.unknown_events = getattr(self.dialect, "unknown_events", 0)
        res.usage_seconds = getattr(self.dialect, "usage_seconds", None)
        if prices.second_price_for(tgt.model, tgt.prices) is not None:  # billed by the second
            res.session_cost_usd = prices.session_cost_usd(
                tgt.model, res.usage_seconds, res.duration_s, tgt.prices,
                paused_seconds=getattr(self.dialect, "paused_seconds", None))
            for tr in res.turns:
                tr.cost_usd = None
        if self._rtc:
            _rtc().finish(self, res, res.turns)

    def close(self) -> None:
        """Close once (bounded in time); the receiver has stopped when it returns."""
        self.marks.closing = True
        ws = self._ws
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
