"""One simulated Gemini Live (BidiGenerateContent) session on one WebSocket connection.

Independent of the client codec (probes/dialects/gemini_live.py): written from the protocol
reference. Runs on the shared session skeleton (session_base.py) and reply plan (reply.py: TTFA,
paced deltas, faults, truth), in the shapes of gemini_wire.py; server frames are BINARY
(channel.py), as the real service sends them; energy VAD (vad.py) at 16 kHz.

- The first client message must be `setup`; `setupComplete` is the first server message.
- Keys are accepted in camelCase or snake_case at every level; audio base64 may be standard or
  URL-safe (the Python SDK sends URL-safe).
- Turns end by automatic activity detection (VAD on the input, `silenceDurationMs`) or, with
  `automaticActivityDetection.disabled`, by `activityEnd`. Speech (or `activityStart`) during a
  reply interrupts it: `interrupted`, then `turnComplete`.
- A reply is `modelTurn` audio parts (24 kHz PCM16) paced at delta/speed, optional
  `outputTranscription` chunks, then `generationComplete`, then `turnComplete` +
  `usageMetadata` (25 audio tokens per second in and out, text ~4 characters per token).
- Errors are closes with a reason: a fault's `code` maps to 1007 (invalid_argument), 1008
  (not_found / policy_violation) or 1011 (rate_limit_exceeded / quota: the quota reason;
  anything else: internal error). `close_1011` closes 1011 mid-reply.
- Connection lifetime: the profile's `session_max_s` (or a `session_expiry` fault's `after_s`);
  `goAway{timeLeft}` goes out `go_away_lead_s` (SimOptions, default 60) before it, then the
  connection closes with 1008 "The operation was aborted.".
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import orjson
from websockets.exceptions import ConnectionClosed

from . import markers, reply
from .channel import BinaryFastChannel, BinaryWsChannel
from .faults import Fault
from .gemini_wire import (
    AUDIO_HEAD,
    AUDIO_TAIL,
    GO_AWAY_REASON,
    IN_RATE,
    INTERNAL_REASON,
    RATE_RE,
    ReplyWire,
    b64decode_any,
    camelize,
    close_for,
    usage,
)
from .session_base import HeardTurn, Session
from .truth import SessionTruth, TurnTruth
from .util import rand_id, tokens_for_text
from .vad import EnergyVAD

if TYPE_CHECKING:
    from .profiles import Profile
    from .state import SimState

SETUP_TIMEOUT_S = 30.0


@dataclass(slots=True)
class GeminiConnInfo:
    path: str
    version: str
    profile: Profile  # the default profile until setup names the model
    truth: SessionTruth
    faults: list[Fault] = field(default_factory=list)  # none yet: picked once the model is known


@dataclass(slots=True)
class InputTurn(HeardTurn):
    start_ms: float = 0.0
    end_ms: float | None = None


@dataclass(slots=True)
class GeminiReply(reply.Reply):
    interrupted: bool = False
    input_ms: float = 0.0
    in_text: int = 0  # input text tokens (instructions + clientContent text)


class GeminiSession(Session):
    INTERNAL_REASON = INTERNAL_REASON
    CHANNELS = (BinaryFastChannel, BinaryWsChannel)

    def __init__(self, state: SimState, ws, info: GeminiConnInfo):
        super().__init__(state, ws, info)
        self.id = "gsess_" + rand_id(20)
        self.model = ""
        self.setup: dict = {}
        self.manual = False
        self.interrupts = True
        self.in_transcription = False
        self.out_transcription = False
        self.resumption = False
        self.instructions = ""
        self.tools: set[str] = set()
        self.vad = EnergyVAD(IN_RATE)
        self.vad_rate = IN_RATE
        self.total_ms = 0.0
        self.turn_start_ms = 0.0
        self.input: InputTurn | None = None
        self.active: GeminiReply | None = None
        self.turn_faults: list[Fault] = []
        self.lifetime_s = 0.0

    async def send(self, obj: dict) -> int:
        return await self.chan.write(orjson.dumps(obj))

    async def close(self, code: int, reason: str, outcome: str | None = None) -> None:
        st = self.info.truth
        if outcome and st.outcome == "open":
            st.outcome = outcome
        self.closing = True
        await self.chan.close(code, reason)

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> bool:
        try:
            raw, t = await asyncio.wait_for(self.chan.recv(), SETUP_TIMEOUT_S)
        except TimeoutError:
            await self.close(1007, "No setup message received.", "no_setup")
            return False
        if not await self.on_setup(raw):
            return False
        await self.ready_delay()
        self.info.truth.ready_ns = await self.send({"setupComplete": {"sessionId": self.id}})
        lead = min(max(self.state.options.go_away_lead_s, 0.0), self.lifetime_s)
        self.later(self.lifetime_s - lead, lambda: self.go_away(lead))
        self.later(self.lifetime_s, self.expire)
        return True

    async def internal_error(self) -> bool:
        await self.close(1011, INTERNAL_REASON, "closed_1011")  # as Gemini would
        return False

    async def on_setup(self, raw: bytes) -> bool:
        st = self.info.truth
        try:
            msg = camelize(orjson.loads(raw))
        except orjson.JSONDecodeError:
            await self.close(1007, "Invalid JSON payload received.", "bad_setup")
            return False
        setup = msg.get("setup") if isinstance(msg, dict) else None
        if not isinstance(setup, dict):
            await self.close(1007, "The first message must be setup.", "bad_setup")
            return False
        model = setup.get("model")
        if not isinstance(model, str) or not model.strip("/"):
            await self.close(1007, "setup.model is required.", "bad_setup")
            return False
        self.setup = setup
        self.model = model.rsplit("/", 1)[-1]
        st.model = self.model
        gen = setup.get("generationConfig") or {}
        mods = [str(m).upper() for m in gen.get("responseModalities") or ["AUDIO"]]
        if len(mods) != 1:
            await self.close(1007, "Only one response modality is supported.", "bad_setup")
            return False
        ric = setup.get("realtimeInputConfig") or {}
        aad = ric.get("automaticActivityDetection") or {}
        self.manual = bool(aad.get("disabled"))
        self.interrupts = ric.get("activityHandling", "START_OF_ACTIVITY_INTERRUPTS") != "NO_INTERRUPTION"
        silence = int(aad.get("silenceDurationMs") or 200)
        padding = int(aad.get("prefixPaddingMs") or 20)
        self.vad = EnergyVAD(IN_RATE, 0.5, padding, silence)
        self.in_transcription = "inputAudioTranscription" in setup
        self.out_transcription = "outputAudioTranscription" in setup
        self.resumption = "sessionResumption" in setup
        si = setup.get("systemInstruction")
        if isinstance(si, dict):
            self.instructions = " ".join(str(p.get("text", "")) for p in si.get("parts") or []
                                         if isinstance(p, dict))
        elif isinstance(si, str):
            self.instructions = si
        for tool in setup.get("tools") or []:
            if isinstance(tool, dict):
                for fd in tool.get("functionDeclarations") or []:
                    if isinstance(fd, dict) and fd.get("name"):
                        self.tools.add(str(fd["name"]))
        self.lifetime_s = self.arm_faults(st)
        return True

    async def go_away(self, lead_s: float) -> None:
        self.info.truth.faults.append({"kind": "go_away", "time_left_s": lead_s,
                                       "at_ns": time.monotonic_ns()})
        try:
            await self.send({"goAway": {"timeLeft": f"{lead_s:g}s"}})
        except ConnectionClosed:
            pass

    async def expire(self) -> None:
        if self.active is not None and self.active.task is not None:
            self.active.task.cancel()
        try:
            await self.close(1008, GO_AWAY_REASON, "go_away")
        except ConnectionClosed:
            pass

    # ---- client messages --------------------------------------------------------------------

    async def dispatch(self, raw: bytes, t: int) -> None:
        if raw.startswith(AUDIO_HEAD) and raw.endswith(AUDIO_TAIL):  # the bulk: plain audio
            b64 = raw[len(AUDIO_HEAD):-len(AUDIO_TAIL)]
            if b'"' not in b64 and b"\\" not in b64:
                await self.on_audio(b64, IN_RATE, t)
                return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self.close(1007, "Invalid JSON payload received.", "closed_1007")
            return
        if not isinstance(msg, dict) or len(msg) != 1:
            await self.close(1007, "Invalid JSON payload received: expected exactly one of setup, "
                             "clientContent, realtimeInput, toolResponse.", "closed_1007")
            return
        msg = camelize(msg)
        key, body = next(iter(msg.items()))
        if key == "realtimeInput" and isinstance(body, dict):
            await self.on_realtime_input(body, t)
        elif key == "clientContent" and isinstance(body, dict):
            turns = [turn for turn in body.get("turns") or [] if isinstance(turn, dict)]
            texts = [str(p.get("text", "")) for turn in turns
                     for p in turn.get("parts") or [] if isinstance(p, dict)]
            self.user_inputs += sum(1 for turn in turns if turn.get("role", "user") == "user")
            if self.active is not None:
                self.interrupt(t)
            if body.get("turnComplete"):
                self.start_reply(t, "clientContent", text_chars=sum(map(len, texts)))
        elif key == "toolResponse" and isinstance(body, dict):
            self.start_reply(t, "toolResponse", tool_output_ns=t)
        elif key == "setup":
            await self.close(1007, "setup must be the first message only.", "closed_1007")
        else:
            await self.close(1007, f"Invalid JSON payload received. Unknown name \"{key[:60]}\".",
                             "closed_1007")

    async def on_realtime_input(self, body: dict, t: int) -> None:
        a = body.get("audio")
        if a is None and isinstance(body.get("mediaChunks"), list) and body["mediaChunks"]:
            a = body["mediaChunks"][0]  # legacy: only the first element is used
        if isinstance(a, dict):
            data = a.get("data")
            if not isinstance(data, str):
                await self.close(1007, "realtime_input.audio.data must be base64.", "closed_1007")
                return
            m = RATE_RE.search(str(a.get("mimeType") or ""))
            await self.on_audio(data.encode("ascii", "replace"), int(m.group(1)) if m else IN_RATE, t)
        if "activityStart" in body:
            if not self.manual:
                await self.close(1007, "activity_start is only allowed when automatic activity "
                                 "detection is disabled.", "closed_1007")
                return
            if self.active is not None and self.interrupts:
                self.interrupt(t)
            self.input = InputTurn(start_ms=self.total_ms)
        if "activityEnd" in body:
            if not self.manual:
                await self.close(1007, "activity_end is only allowed when automatic activity "
                                 "detection is disabled.", "closed_1007")
                return
            turn = self.input or InputTurn(start_ms=self.turn_start_ms)
            self.input = None
            turn.end_ms = self.total_ms
            self.user_inputs += 1
            self.start_reply(t, "activityEnd", turn=turn, commit_ns=t)
        if body.get("audioStreamEnd"):
            if self.manual:
                await self.close(1007, "audio_stream_end is only allowed when automatic activity "
                                 "detection is enabled.", "closed_1007")
                return
            if self.vad.in_speech:  # the mic paused: the turn ends now
                self.vad.in_speech = False
                self.end_of_speech(t)
        if isinstance(body.get("text"), str):
            self.user_inputs += 1
            if self.active is not None:
                self.interrupt(t)
            self.start_reply(t, "text", text_chars=len(body["text"]))

    async def on_audio(self, b64: bytes, rate: int, t: int) -> None:
        try:
            raw = b64decode_any(b64)
        except ValueError:
            await self.close(1007, "Invalid value at 'realtime_input.audio.data': invalid base64.",
                             "closed_1007")
            return
        if rate != self.vad_rate:
            old = self.vad
            self.vad = EnergyVAD(rate, 0.5, old.prefix_padding_ms, old.silence_duration_ms)
            self.vad.frames_done = int(self.total_ms) // 10
            self.vad_rate = rate
        self.total_ms += len(raw) / 2 * 1000 / rate
        events, voiced = self.vad.feed(np.frombuffer(raw, dtype="<i2", count=len(raw) // 2))
        if voiced:
            if self.input is None and not self.manual:
                start = next((e.audio_ms for e in events if e.kind == "start"), self.total_ms)
                self.input = InputTurn(start_ms=start)
            if self.input is not None:
                if self.input.speech_start_ns is None:
                    self.input.speech_start_ns = t
                self.input.speech_end_ns = t
        if self.manual:
            return
        for ev in events:
            if ev.kind == "start":
                if self.input is None:
                    self.input = InputTurn(start_ms=ev.audio_ms, speech_start_ns=t)
                if self.active is not None and self.interrupts:
                    self.active.truth.barge_in_speech_ns = t
                    self.interrupt(t)
            else:
                self.end_of_speech(t, ev.audio_ms)

    def end_of_speech(self, t: int, audio_end_ms: float | None = None) -> None:
        turn = self.input or InputTurn(start_ms=self.turn_start_ms)
        self.input = None
        turn.end_ms = audio_end_ms if audio_end_ms is not None else self.total_ms
        self.user_inputs += 1
        self.start_reply(t, "vad", turn=turn, stopped_ns=t)

    # ---- replies ----------------------------------------------------------------------------

    def interrupt(self, t: int) -> None:
        r = self.active
        if r is None or r.interrupted:
            return
        r.interrupted = True
        self.cancel_later(r)

    def start_reply(self, trigger_ns: int, trigger: str, *, turn: InputTurn | None = None,
                    stopped_ns: int | None = None, commit_ns: int | None = None,
                    tool_output_ns: int | None = None, text_chars: int = 0) -> None:
        if self.active is not None and not self.active.interrupted:
            return  # NO_INTERRUPTION: the model is still answering; this input joins history
        tr = TurnTruth(self.id, self.turn_index, self.model, "resp_" + rand_id(16), trigger=trigger)
        self.turn_index += 1
        tr.speech_stopped_ns, tr.commit_ns, tr.tool_output_ns = stopped_ns, commit_ns, tool_output_ns
        input_ms = 0.0
        if turn is not None:
            tr.speech_start_ns, tr.speech_end_ns = turn.speech_start_ns, turn.speech_end_ns
            end = turn.end_ms if turn.end_ms is not None else self.total_ms
            input_ms = max(0.0, end - min(turn.start_ms, self.turn_start_ms))
            tr.audio_start_ms, tr.audio_end_ms = int(turn.start_ms), int(end)
            self.turn_start_ms = end
        tr.input_audio_ms = int(input_ms)
        r = GeminiReply(truth=tr, trigger_ns=trigger_ns, input_ms=input_ms)
        if trigger != "toolResponse" and self.user_inputs:
            r.input_index = self.user_inputs - 1
        r.in_text = tokens_for_text(self.instructions) + math.ceil(text_chars / 4)
        r.faults = reply.schedule_faults(self.turn_faults, self.state.faults, self.profile,
                                         self.model, tr)
        self.active = r
        r.task = self._spawn(self.run_reply(r))
        if self.in_transcription and turn is not None:
            self._spawn(self.transcribe(tr, self.transcribed))
            self.transcribed += 1

    async def transcribe(self, tr: TurnTruth, k: int) -> None:
        """Transcribe user audio turn k (0-based over transcribed turns), with the profile's WER
        seeded per session and turn as the OpenAI session does."""
        text = await self.transcript_text(k, f"{self.id}:{tr.turn_index}")
        tr.transcript = text
        try:
            await self.send({"serverContent": {"inputTranscription": {"text": text, "finished": True}}})
        except ConnectionClosed:
            pass

    def usage(self, r: GeminiReply) -> dict:
        r.truth.usage = u = usage(r.input_ms, r.in_text, r.truth.reply_audio_ms)
        return u

    def cancel_wanted(self, r: GeminiReply) -> bool:
        return r.interrupted

    async def send_cancelled(self, r: GeminiReply) -> int:
        tr = r.truth
        # the stop a client sees is `interrupted`: cancel_ns is when that was written
        stopped = await self.send({"serverContent": {"interrupted": True}})
        t = await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": self.usage(r)})
        tr.response_done_ns = t
        tr.status = "cancelled"
        return stopped

    async def fault_end(self, r: GeminiReply, f: Fault, due_ns: int) -> bool:
        """close_1011 closes 1011; an error event or failed response closes as its code says."""
        k = f.kind
        code, reason = (1011, INTERNAL_REASON) if k == "close_1011" else close_for(
            f.params.get("code"))
        r.truth.status = "closed"
        await self.close(code, reason, f"closed_{code}")
        raise ConnectionClosed(None, None)

    async def reply_body(self, r: GeminiReply) -> None:
        tr = r.truth
        prof = self.profile
        wire = ReplyWire(self.out_transcription)
        if 0 in r.faults and any(f.kind in ("error_event", "response_failed") for f in r.faults[0]):
            await reply.apply_faults(self, r, wire, 0, [0, 0])
        first_ns = reply.first_delta_ns(prof, self.rng, r.trigger_ns, tr, self.state.active_sessions)
        call = None if tr.trigger == "toolResponse" else markers.call_for(self.instructions,
                                                                          r.input_index)
        if call is not None and call.name in self.tools:
            await reply.sleep_until(first_ns)
            try:
                args = orjson.loads(call.arguments)
            except orjson.JSONDecodeError:
                args = {}
            fid = "fc-" + rand_id(12)
            tr.tool_args_done_ns = await self.send(
                {"toolCall": {"functionCalls": [{"id": fid, "name": call.name, "args": args}]}})
            tr.tool_call = {"name": call.name, "call_id": fid, "arguments": call.arguments,
                            "broken": call.broken}
            tr.status = "tool_call"  # the turn goes on after the toolResponse
            return
        plan = reply.ReplyPlan(prof, self.rng, first_ns, tr, "pcm16")
        if not await plan.play(self, r, wire, self.state.lateness):
            return
        await self.send({"serverContent": {"generationComplete": True}})
        if self.active is r:
            self.active = None  # a new turn may start as soon as turnComplete is out
        tr.response_done_ns = await self.send({"serverContent": {"turnComplete": True},
                                               "usageMetadata": self.usage(r)})
        tr.status = "completed"
        if self.resumption:
            await self.send({"sessionResumptionUpdate": {"newHandle": rand_id(24), "resumable": True}})
