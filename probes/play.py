"""The one driver: plays a script (probes/script.py) on an open session of the engine.

The engine (probes/session.py) owns the socket, the clock, the receiver and the phase deadlines;
this module only decides what to send next and what to wait for, step by step, through the
session's small public surface (`Line` below). Plain `turns: N` scenarios are compiled into a
script too (`plain_script`: say, wait for the reply, pause; N times), so every session runs here:

- `say` / `text` start a user turn (`TurnMarks`: everything the receiver hears until the next
  turn's reply is attributed to it). A turn begun while the previous reply still plays becomes
  the receiver's `next_turn`: it switches to it when that reply ends, so a cancelled reply's
  last events never land on the turn that interrupted it.
- `interrupt_after` marks the reply it speaks over with `barge_ns` (when the interrupting speech
  was due to start, like E an intended time) before streaming; the receiver records when the
  server stopped the reply and how much audio still came after barge_ns.
- `expect_tool` / `tool_result` check a function call and answer it; the first audio after the
  answer gives `tool_result_ms`.
- `repeat` with `until: session_expired` keeps the call going until the provider ends it; the
  engine then records that end as the expected one (`ended_by`, `expiry_s`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from time import perf_counter_ns
from typing import Protocol

from probes import audio
from probes.dialects.base import Dialect
from probes.marks import Receiver, TurnMarks
from probes.messages import append_messages
from probes.outcomes import STOPPED, Failure
from probes.results import timeout
from probes.script import (
    ExpectTool,
    InterruptAfter,
    Pause,
    Repeat,
    Say,
    Script,
    Silence,
    Text,
    ToolResult,
    WaitReply,
    check_call,
)
from probes.spec import Scenario, Target, Timeouts

_NS = 1_000_000_000
#: how long a finished script waits for input transcripts still on their way (WER)
TRANSCRIPT_GRACE_S = 3.0
#: what a function call the scenario did not expect is answered with
UNEXPECTED_CALL_OUTPUT = '{"error": "this call was not expected by the test scenario"}'


class Line(Protocol):
    """What the player needs of an open session (probes.session.Session)."""

    dialect: Dialect
    scenario: Scenario
    target: Target
    timeouts: Timeouts
    marks: Receiver

    def check(self) -> None:
        """Raise Failure for the receiver's first failure or the caller's stop."""

    def wait(self, done: Callable[[], bool], deadline_ns: int, phase: str) -> None:
        """Until done(); Failure(timeout:<phase>) past the deadline."""

    def settle(self, done: Callable[[], bool], seconds: float) -> None:
        """Until done() or `seconds` passed (not a failure)."""

    def sleep(self, seconds: float) -> bool:
        """False when the caller stopped the session meanwhile."""

    def send(self, msgs: Iterable[bytes]) -> None: ...

    def speak(self, turn: TurnMarks, utt: audio.Utterance, t0: int | None = None,
              user_turn: bool = True) -> None:
        """Stream an utterance on the pacing clock (a user turn sets E and joins the turns)."""

    def await_reply(self, turn: TurnMarks) -> None:
        """First audio, then the end, of the reply to the turn's latest trigger."""

    def reply_playing(self) -> bool:
        """The reply's audio is still arriving (WebRTC: it plays in real time, after its end
        was announced); False over a WebSocket, where the reply's end is its last audio."""


def plain_script(sc: Scenario) -> Script:
    """`turns: N` as a script: say `utterance_s` of speech, wait for the reply, pause `pause_s`;
    N times (a Say per turn, so each turn keeps its own seed: sc.seed + turn index)."""
    steps: list = []
    for i in range(sc.turns):
        if i:
            steps.append(Pause(sc.pause_s))
        steps += [Say("synthetic", sc.utterance_s), WaitReply()]
    return Script(tuple(steps))


# ---- audio for the script's utterances (rendered before the clock starts) ----------------------


def say_utterance(dialect: Dialect, sc: Scenario, say: Say, seed: int) -> audio.Utterance:
    u = _say_audio(dialect, sc, say, seed)
    if say.noise is None:
        return u
    from probes.noise import noisy_utterance  # a caller in a noisy place (say: noise:)

    return noisy_utterance(u, say.noise, say.snr_db, seed)


def _say_audio(dialect: Dialect, sc: Scenario, say: Say, seed: int) -> audio.Utterance:
    fmt = dialect.input_format
    trailing = 0.0 if sc.turn_mode == "manual" else sc.trailing_silence_s
    common = {"rate": fmt.rate, "codec": fmt.codec, "chunk_ms": sc.chunk_ms,
              "trailing_silence_s": trailing}
    if say.source == "speak":
        return audio.spoken(say.text, voice=say.voice, wpm=say.wpm,
                            loudness_dbfs=sc.loudness_dbfs, **common)
    if say.source == "wav":
        return audio.from_wav(say.path, **common)
    return audio.utterance(say.duration_s, trailing, rate=fmt.rate, codec=fmt.codec,
                           chunk_ms=sc.chunk_ms, seed=seed, loudness_dbfs=sc.loudness_dbfs)


def silence_utterance(dialect: Dialect, sc: Scenario, ms: float) -> audio.Utterance:
    fmt = dialect.input_format
    return audio.silent(ms / 1000, rate=fmt.rate, codec=fmt.codec, chunk_ms=sc.chunk_ms)


def _utterances(script: Script) -> list[Say]:
    return script.says()


def render(dialect: Dialect, sc: Scenario, opus: bool = False) -> None:
    """Render and encode every utterance and silence of the scenario's script (all cached);
    `opus` (WebRTC): Opus-encode them too (probes/rtc_media.py), once per process."""
    script = sc.script if sc.script is not None else plain_script(sc)
    utts = [say_utterance(dialect, sc, say, sc.seed + i)
            for i, say in enumerate(_utterances(script))]
    utts += [silence_utterance(dialect, sc, ms) for ms in _silences(script.steps)]
    if opus:
        from probes.rtc_media import encoded

        for u in utts:
            encoded(u)
        return
    for u in utts:
        append_messages(dialect, u)


def _silences(steps) -> list[float]:
    out: list[float] = []
    for s in steps:
        if isinstance(s, Silence):
            out.append(s.ms)
        elif isinstance(s, Repeat):
            out.extend(_silences(s.steps))
    return out


# ---- simulator hints --------------------------------------------------------------------------


def simulator_hints(script: Script) -> str:
    """Markers that make the built-in simulator "hear" each utterance's known text and call the
    expected tools on the right user input (simulator/markers.py): `[transcript: ...]` per
    audio turn in order, `[call@K:NAME {args}]` for the input an expect_tool follows."""
    transcripts: list[str] = []
    calls: list[str] = []
    inputs = -1
    for step in _flat(script.steps):
        if isinstance(step, Say | InterruptAfter):
            say = step.say if isinstance(step, InterruptAfter) else step
            inputs += 1
            transcripts.append(_marker_text(say.text or "simulated speech"))
        elif isinstance(step, Text):
            inputs += 1
        elif isinstance(step, ExpectTool) and inputs >= 0:
            args = {k: "example" for k in step.required}
            args.update(step.args or {})
            calls.append(f"[call@{inputs}:{step.name} {json.dumps(args, ensure_ascii=False)}]")
    if not any(t != "simulated speech" for t in transcripts):
        transcripts = []
    return " ".join([f"[transcript: {t}]" for t in transcripts] + calls)


def _flat(steps):
    for s in steps:
        if isinstance(s, Repeat):
            yield from _flat(s.steps)
        else:
            yield s


def _marker_text(text: str) -> str:
    return " ".join(text.replace("[", "(").replace("]", ")").split())


# ---- playing ----------------------------------------------------------------------------------


def play(s: Line, script: Script) -> None:
    _Player(s, script).run()


class _Player:
    def __init__(self, s: Line, script: Script) -> None:
        self.s = s
        self.sc = s.scenario
        self.script = script
        self.seeds = {id(say): self.sc.seed + i for i, say in enumerate(_utterances(script))}
        self.turn: TurnMarks | None = None  # the current user turn
        self.inputs = 0
        self.calls_seen = 0  # tool calls of the current turn already checked
        self.call = None  # the ToolCall the next tool_result answers
        # the server transcribes what it heard (asked for, or always: GPT-Live): score it
        self.transcribing = bool(s.target.transcription_model) or getattr(
            s.dialect, "transcribes_input", False)

    def run(self) -> None:
        self.steps(self.script.steps)
        self._await_transcripts()

    def steps(self, steps) -> None:
        for step in steps:
            self.s.check()
            self.step(step)

    def step(self, step) -> None:
        if isinstance(step, Say):
            self.say(step)
        elif isinstance(step, Silence):
            self.silence(step.ms)
        elif isinstance(step, WaitReply):
            self.wait_reply()
        elif isinstance(step, InterruptAfter):
            self.interrupt(step)
        elif isinstance(step, ExpectTool):
            self.expect_tool(step)
        elif isinstance(step, ToolResult):
            self.tool_result(step)
        elif isinstance(step, Text):
            self.text(step.text)
        elif isinstance(step, Repeat):
            self.repeat(step)
        elif isinstance(step, Pause):
            if step.s > 0 and not self.s.sleep(step.s):
                raise Failure(STOPPED, "stopped between turns")

    # -- user turns ------------------------------------------------------------------------

    def _begin(self, turn: TurnMarks) -> None:
        """Make `turn` the one the receiver fills: now, or when the running reply ends."""
        self.s.marks.begin(turn, self.turn)
        self.turn = turn
        self.calls_seen = 0
        self.call = None

    def _new_turn(self) -> TurnMarks:
        turn = TurnMarks(self.inputs)
        self.inputs += 1
        return turn

    def say(self, say: Say, t0: int | None = None) -> None:
        s = self.s
        utt = say_utterance(s.dialect, self.sc, say, self.seeds.get(id(say), self.sc.seed))
        turn = self._new_turn()
        if self.transcribing:  # the server transcribes what it heard: score it (WER)
            turn.expected_text = say.text
            s.marks.awaiting_transcript.append(turn)
        self._begin(turn)
        s.speak(turn, utt, t0)

    def text(self, text: str) -> None:
        s = self.s
        turn = self._new_turn()
        self._begin(turn)
        now = perf_counter_ns()
        turn.speech_end_ns = turn.speech_sent_ns = now  # E of a typed message: when it was sent
        turn.trigger(now)
        s.marks.turns.append(turn)
        s.send(s.dialect.user_text(text))

    def silence(self, ms: float) -> None:
        s = self.s
        s.speak(self.turn or s.marks.turn, silence_utterance(s.dialect, self.sc, ms),
                user_turn=False)

    def interrupt(self, step: InterruptAfter) -> None:
        """Speak over the current reply `ms` after its first audio arrived."""
        s = self.s
        old = self.turn
        s.wait(lambda: old.reply_audio_ns is not None or old.reply_done_ns is not None,
               old.reply_from_ns + int(s.timeouts.first_audio * _NS), "first_audio")
        if old.reply_audio_ns is not None:
            at = old.reply_audio_ns + int(step.ms * 1_000_000)
            ahead = at - perf_counter_ns()
            if ahead > 0 and not s.sleep(ahead / _NS):
                raise Failure(STOPPED, "stopped before the interruption")
            # still playing (over WebRTC the audio plays on after response.done): a barge-in
            if old.reply_done_ns is None or s.reply_playing():
                old.barge_ns = at
                if s.scenario.turn_mode == "manual" and not s.dialect.start_activity():
                    s.send(s.dialect.cancel())  # no server VAD to notice the speech
            else:
                self._nothing_to_interrupt(old, f"the reply had ended before {step.ms:g} ms")
            self.say(step.say, t0=at)  # intended, like E: lateness shows as send lag
        else:
            self._nothing_to_interrupt(old, "the reply had no audio")
            self.say(step.say)

    @staticmethod
    def _nothing_to_interrupt(turn: TurnMarks, why: str) -> None:
        turn.checks["reply_active"] = False
        turn.notes.append(f"no barge-in: {why}")

    def wait_reply(self) -> None:
        """Wait for the reply. A function call no expect_tool asked for is answered with an
        error output (and fails the `no_unexpected_tool` check), so the conversation goes on:
        a Gemini turn would otherwise wait for the answer forever."""
        s, turn = self.s, self.turn
        while True:
            seen = self.calls_seen
            s.wait(lambda seen=seen: turn.reply_audio_ns is not None
                   or turn.reply_done_ns is not None or len(turn.tool_calls) > seen,
                   turn.reply_from_ns + int(s.timeouts.first_audio * _NS), "first_audio")
            if len(turn.tool_calls) <= seen or turn.reply_audio_ns is not None:
                break
            _t, call = turn.tool_calls[seen]
            self.calls_seen = seen + 1
            turn.checks["no_unexpected_tool"] = False
            turn.notes.append(f"unexpected call to {call.name}")
            self._answer(call, UNEXPECTED_CALL_OUTPUT, 0.0)
        s.await_reply(turn)

    # -- tools ------------------------------------------------------------------------------

    def expect_tool(self, exp: ExpectTool) -> None:
        s, turn = self.s, self.turn
        seen = self.calls_seen
        s.wait(lambda: len(turn.tool_calls) > seen or turn.reply_done_ns is not None,
               turn.reply_from_ns + int(s.timeouts.response_done * _NS), "tool")
        if len(turn.tool_calls) > seen:
            _t, call = turn.tool_calls[seen]
            self.calls_seen = seen + 1
            self.call = call
            c = check_call(exp, call.name, call.arguments)
        else:
            self.call = None
            c = check_call(exp, None, None)
        turn.checks["tool_called"] = c.called
        if self.call is not None:
            turn.checks["tool_args_json"] = c.json_ok
            if exp.args or exp.required:
                turn.checks["tool_args_match"] = c.args_ok
        if c.problems:
            turn.notes.extend(c.problems)

    def tool_result(self, r: ToolResult) -> None:
        call = self.call
        if call is None:  # expect_tool found no call: nothing to answer (already a failed check)
            return
        self.call = None
        self._answer(call, r.output, r.delay_ms)

    def _answer(self, call, output: str, delay_ms: float) -> None:
        s, turn = self.s, self.turn
        if s.dialect.tool_call_ends_response:
            # OpenAI: the call's response must be done, or response.create is refused
            s.wait(lambda: turn.reply_done_ns is not None,
                   turn.reply_from_ns + int(s.timeouts.response_done * _NS), "response_done")
        if delay_ms > 0 and not s.sleep(delay_ms / 1000):
            raise Failure(STOPPED, "stopped before the tool result")
        now = perf_counter_ns()
        turn.tool_sent_ns = now
        turn.tool_audio_ns = None
        turn.trigger(now)
        s.send(s.dialect.tool_result(call.call_id, output, call.name))

    # -- long calls ---------------------------------------------------------------------------

    def repeat(self, r: Repeat) -> None:
        s = self.s
        start = time.monotonic()
        i = 0
        while True:
            if r.times is not None and i >= r.times:
                return
            if r.until is not None and time.monotonic() - start >= r.max_s:
                raise Failure(timeout("session_limit"),
                               f"the session was still open after {r.max_s:g} s of talking "
                               f"(expected {r.until})")
            s.check()
            self.steps(r.steps)
            i += 1

    def _await_transcripts(self) -> None:
        """Give input transcripts still on their way a moment (they score WER), without
        turning a missing one into a session failure: it shows as the `transcribed` check."""
        pending = self.s.marks.awaiting_transcript
        self.s.settle(lambda: not any(t.expected_text and not t.input_transcript
                                      for t in pending), TRANSCRIPT_GRACE_S)
