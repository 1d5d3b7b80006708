"""One simulated Gemini Live (BidiGenerateContent) session on one WebSocket connection.

Independent of the client codec (probes/dialects/gemini_live.py): written from the protocol
reference. Reuses the simulator's frame I/O (channel.py, with server frames sent as BINARY
frames as the real service does), energy VAD (vad.py, at 16 kHz), profiles, faults, reply
audio and ground truth.

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
import binascii
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import orjson
from websockets.exceptions import ConnectionClosed

from . import audio, markers, pacing
from .channel import MAX_MESSAGE, FastChannel, WebsocketsChannel, frame_header
from .faults import SESSION_KINDS, TURN_KINDS, Fault
from .openai_session import abort_rst, rand_id, tokens_for_text
from .truth import SessionTruth, TurnTruth
from .vad import EnergyVAD

if TYPE_CHECKING:
    from .profiles import Profile
    from .server import SimState

log = logging.getLogger("simulator")

IN_RATE = 16000
OUT_MIME = b"audio/pcm;rate=24000"
AUDIO_TOKENS_PER_S = 25
SETUP_TIMEOUT_S = 30.0
QUOTA_REASON = "You exceeded your current quota, please check your plan and billing details."
INTERNAL_REASON = "Internal error encountered."
GO_AWAY_REASON = "The operation was aborted."
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_RATE = re.compile(r"rate=(\d+)")
_AUDIO_HEAD = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"'
_AUDIO_TAIL = b'"}}}'

#: Paths served (after collapsing leading slashes); group 1 is the API version.
PATH_RE = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"BidiGenerateContent(Constrained)?$"
    r"|^/ws/google\.cloud\.aiplatform\.(v1|v1beta1)\.LlmBidiService/BidiGenerateContent$"
)


def close_for(code: str | None) -> tuple[int, str]:
    """A fault's error code -> (close code, reason) as Gemini reports it."""
    c = str(code or "").lower()
    if c in ("1007", "invalid_argument", "invalid_value", "invalid_request_error"):
        return 1007, "Request contains an invalid argument."
    if c in ("1008", "not_found", "policy_violation", "permission_denied"):
        return 1008, "Requested entity was not found."
    if c in ("rate_limit_exceeded", "quota", "resource_exhausted", "quota_exceeded"):
        return 1011, QUOTA_REASON
    return 1011, INTERNAL_REASON


def camel(k: str) -> str:
    if "_" not in k:
        return k
    head, *rest = k.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camelize(obj):
    """snake_case keys -> camelCase, at every level."""
    if isinstance(obj, dict):
        return {camel(k) if isinstance(k, str) else k: camelize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [camelize(v) for v in obj]
    return obj


def b64decode_any(b64: bytes | str) -> bytes:
    """Standard or URL-safe base64 (padding optional); raises ValueError."""
    if isinstance(b64, str):
        b64 = b64.encode("ascii", "replace")
    b64 = b64.translate(_URLSAFE)
    b64 += b"=" * (-len(b64) % 4)
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(str(e)) from None


class BinaryFastChannel(FastChannel):
    """FastChannel whose server frames are BINARY (opcode 2), as Gemini's are."""

    @classmethod
    def take_over(cls, ws, max_size: int):
        chan = super().take_over(ws, max_size)
        return BinaryWsChannel(ws, max_size) if type(chan) is WebsocketsChannel else chan

    async def write(self, payload: bytes) -> int:
        if not self.open:
            raise ConnectionClosed(None, None)
        tr = self.transport
        if tr.get_write_buffer_size() >= 64 * 1024:
            await self.ws.drain()
            if not self.open:
                raise ConnectionClosed(None, None)
        t = time.monotonic_ns()
        tr.write(frame_header(len(payload), 0x2) + payload)
        return t


class BinaryWsChannel(WebsocketsChannel):
    async def write(self, payload: bytes) -> int:
        t = time.monotonic_ns()
        await self.ws.send(payload)  # bytes: a binary frame
        return t


@dataclass(slots=True)
class GeminiConnInfo:
    path: str
    version: str
    profile: Profile  # the default profile until setup names the model
    truth: SessionTruth
    faults: list[Fault] = field(default_factory=list)  # none yet: picked once the model is known


@dataclass(slots=True)
class InputTurn:
    speech_start_ns: int | None = None
    speech_end_ns: int | None = None
    start_ms: float = 0.0
    end_ms: float | None = None


@dataclass(slots=True)
class Reply:
    truth: TurnTruth
    trigger_ns: int
    task: asyncio.Task | None = None
    interrupted: bool = False
    faults: dict = field(default_factory=dict)
    input_ms: float = 0.0
    in_text: int = 0  # input text tokens (instructions + clientContent text)
    text: list = field(default_factory=list)
    input_index: int | None = None  # the user input answered (markers.py counts them)


class GeminiSession:
    def __init__(self, state: SimState, ws, info: GeminiConnInfo):
        self.state, self.ws, self.info = state, ws, info
        self.rng = state.rng
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
        self.active: Reply | None = None
        self.turn_index = 0
        self.user_inputs = 0  # user inputs so far (audio turns + user text turns)
        self.transcribed = 0  # user audio turns whose transcription was started
        self.turn_faults: list[Fault] = []
        self.closing = False
        self.tasks: set[asyncio.Task] = set()
        self.lifetime_s = 0.0

    @property
    def profile(self) -> Profile:
        return self.state.profiles.for_model(self.model)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def send(self, obj: dict) -> int:
        return await self.chan.write(orjson.dumps(obj))

    async def close(self, code: int, reason: str, outcome: str | None = None) -> None:
        st = self.info.truth
        if outcome and st.outcome == "open":
            st.outcome = outcome
        self.closing = True
        await self.chan.close(code, reason)

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        st = self.info.truth
        st.session_id = self.id
        make = BinaryFastChannel.take_over if self.state.options.reader == "fast" else BinaryWsChannel
        self.chan = make(self.ws, MAX_MESSAGE)
        self.state.sessions.add(self)
        timers: list[asyncio.TimerHandle] = []
        try:
            try:
                raw, t = await asyncio.wait_for(self.chan.recv(), SETUP_TIMEOUT_S)
            except TimeoutError:
                await self.close(1007, "No setup message received.", "no_setup")
                return
            if not await self.on_setup(raw):
                return
            delay = self.profile.ready_delay_ms.sample(self.rng)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            st.ready_ns = await self.send({"setupComplete": {"sessionId": self.id}})
            loop = asyncio.get_running_loop()
            lead = min(max(self.state.options.go_away_lead_s, 0.0), self.lifetime_s)
            timers.append(loop.call_later(self.lifetime_s - lead,
                                          lambda: self._spawn(self.go_away(lead))))
            timers.append(loop.call_later(self.lifetime_s, lambda: self._spawn(self.expire())))
            while True:
                raw, t = await self.chan.recv()
                try:
                    await self.dispatch(raw, t)
                except ConnectionClosed:
                    raise
                except Exception:  # a bug must not take the server down: close as Gemini would
                    log.exception("simulator: error handling a Gemini client message")
                    await self.close(1011, INTERNAL_REASON, "closed_1011")
                    return
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            for h in timers:
                h.cancel()
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            self.state.sessions.discard(self)
            if isinstance(self.chan, FastChannel) and self.chan.open:
                await self.chan.close(1011, INTERNAL_REASON)
            st.closed_ns = time.monotonic_ns()
            st.close_code = self.chan.close_code
            if st.outcome == "open":
                st.outcome = "closed"

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
        prof = self.profile
        faults = self.state.faults.pick(prof, self.model, SESSION_KINDS)
        faults += self.state.faults.pick(prof, self.model, TURN_KINDS, per="session")
        st.faults += [f.record() for f in faults if f.kind in SESSION_KINDS]
        self.turn_faults = [f for f in faults if f.kind in TURN_KINDS]
        self.lifetime_s = prof.session_max_s
        for f in faults:
            if f.kind == "session_expiry":
                self.lifetime_s = min(self.lifetime_s, float(f.params["after_s"]))
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
        if raw.startswith(_AUDIO_HEAD) and raw.endswith(_AUDIO_TAIL):  # the bulk: plain audio
            b64 = raw[len(_AUDIO_HEAD):-len(_AUDIO_TAIL)]
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
            m = _RATE.search(str(a.get("mimeType") or ""))
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
        delay = self.profile.cancel_delay_ms.sample(self.rng)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay / 1000, self._cancel, r)
        else:
            self._cancel(r)

    def _cancel(self, r: Reply) -> None:
        if r.task is not None and not r.task.done():
            r.task.cancel()

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
        r = Reply(tr, trigger_ns, input_ms=input_ms)
        if trigger != "toolResponse" and self.user_inputs:
            r.input_index = self.user_inputs - 1
        r.in_text = tokens_for_text(self.instructions) + math.ceil(text_chars / 4)
        faults = list(self.turn_faults)
        faults += self.state.faults.pick(self.profile, self.model, TURN_KINDS, per="turn")
        for f in faults:
            r.faults.setdefault(int(f.params.get("after_deltas", 0)), []).append(f)
            tr.faults.append(f.record())
        self.active = r
        r.task = self._spawn(self.run_reply(r))
        if self.in_transcription and turn is not None:
            self._spawn(self.transcribe(tr, self.transcribed))
            self.transcribed += 1

    async def transcribe(self, tr: TurnTruth, k: int) -> None:
        """Transcribe user audio turn k (0-based over transcribed turns), with the profile's WER
        seeded per session and turn as the OpenAI session does."""
        delay = self.profile.transcription_delay_ms.sample(self.rng)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        prof = self.profile
        text = markers.transcript_for(self.instructions, k) or prof.transcript or "simulated speech"
        if prof.wer > 0:
            text = markers.inject_wer(text, prof.wer, f"{self.id}:{tr.turn_index}")
        tr.transcript = text
        try:
            await self.send({"serverContent": {"inputTranscription": {"text": text, "finished": True}}})
        except ConnectionClosed:
            pass

    def usage(self, r: Reply) -> dict:
        tr = r.truth
        in_audio = math.ceil(r.input_ms * AUDIO_TOKENS_PER_S / 1000)
        in_text = r.in_text
        out_audio = math.ceil(tr.reply_audio_ms * AUDIO_TOKENS_PER_S / 1000)
        u = {"promptTokenCount": in_audio + in_text, "responseTokenCount": out_audio,
             "totalTokenCount": in_audio + in_text + out_audio,
             "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": in_audio},
                                     {"modality": "TEXT", "tokenCount": in_text}],
             "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": out_audio}]}
        tr.usage = u
        return u

    async def run_reply(self, r: Reply) -> None:
        tr = r.truth
        try:
            await self.reply_body(r)
        except asyncio.CancelledError:
            if self.closing or not r.interrupted:
                tr.status = "closed" if tr.status == "in_progress" else tr.status
                raise
            try:
                await self.send({"serverContent": {"interrupted": True}})
                tr.cancel_ns = await self.send({"serverContent": {"turnComplete": True},
                                                "usageMetadata": self.usage(r)})
                tr.response_done_ns = tr.cancel_ns
                tr.status = "cancelled"
            except ConnectionClosed:
                tr.status = "closed"
        except ConnectionClosed:
            if tr.status == "in_progress":
                tr.status = "closed"
        finally:
            if self.active is r:
                self.active = None
            self.state.truth.turn(tr)

    async def fault_point(self, r: Reply, i: int, slot: list[int]) -> bool:
        """Faults due before delta i; False when the reply must stop here."""
        for f in r.faults.pop(i, ()):
            k = f.kind
            if k == "stall":
                await asyncio.sleep(float(f.params["stall_s"]))
                slot[0] = time.monotonic_ns() - i * slot[1]
            elif k == "malformed_json":
                await self.chan.write(b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"AAAA')
            elif k == "oversized":
                n = int(f.params["bytes"]) // 4 * 4
                await self.chan.write(b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":'
                                      b'{"mimeType":"' + OUT_MIME + b'","data":"' + b"A" * n
                                      + b'"}}]}}}')
            elif k == "drop":
                r.truth.status = "dropped"
                self.info.truth.outcome = "dropped"
                abort_rst(self.ws)
                raise ConnectionClosed(None, None)
            elif k in ("close_1011", "error_event", "response_failed"):
                code, reason = (1011, INTERNAL_REASON) if k == "close_1011" else close_for(
                    f.params.get("code"))
                r.truth.status = "closed"
                await self.close(code, reason, f"closed_{code}")
                raise ConnectionClosed(None, None)
        return True

    async def reply_body(self, r: Reply) -> None:
        tr = r.truth
        prof = self.profile
        slot0 = [0, 0]
        if 0 in r.faults and any(f.kind in ("error_event", "response_failed") for f in r.faults[0]):
            await self.fault_point(r, 0, slot0)
        ttfa_ms = prof.ttfa_ms.sample(self.rng) * prof.ttfa_scale
        tr.injected_ttfa_ms = round(ttfa_ms, 3)
        first_ns = r.trigger_ns + int(ttfa_ms * 1e6)
        call = None if tr.trigger == "toolResponse" else markers.call_for(self.instructions,
                                                                          r.input_index)
        if call is not None and call.name in self.tools:
            wait = first_ns - time.monotonic_ns()
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
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
        reply_ms = max(1, round(prof.reply_s.sample(self.rng) * 1000))
        delta_ms = prof.delta_ms
        n = math.ceil(reply_ms / delta_ms)
        tr.planned_audio_ms = reply_ms
        words = markers.reply_text(reply_ms / 1000, prof.reply_text).split()
        per_delta: list[list[str]] = [[] for _ in range(n)]
        for j, w in enumerate(words):
            per_delta[j * n // len(words)].append(w)
        slot = [first_ns, int(delta_ms * 1e6 / prof.speed)]
        jitter = pacing.jitter_of(prof)
        clip = audio.reply_clip("pcm16", delta_ms)
        head = b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"' + OUT_MIME + b'","data":"'
        tail = b'"}}]}}}'
        lateness = self.state.lateness
        offset = self.rng.randrange(len(clip.chunks_b64))
        for i in range(n):
            if i in r.faults and not await self.fault_point(r, i, slot):
                return
            deadline = await pacing.until_due(i, slot, jitter, self.rng)
            chunk_ms = delta_ms if i < n - 1 else reply_ms - (n - 1) * delta_ms
            b64 = clip.chunk(offset + i) if chunk_ms == delta_ms else clip.partial(offset + i, chunk_ms)
            t = await self.chan.write(head + b64 + tail)
            pacing.audio_sent(tr, lateness, t, deadline, chunk_ms)
            if per_delta[i] and self.out_transcription:
                t2 = await self.send({"serverContent": {"outputTranscription": {
                    "text": " ".join(per_delta[i]) + " "}}})
                if tr.first_text_ns is None:
                    tr.first_text_ns = t2
            r.text.extend(per_delta[i])
        for i in sorted(r.faults):
            if not await self.fault_point(r, i, slot):
                return
        await self.send({"serverContent": {"generationComplete": True}})
        if self.active is r:
            self.active = None  # a new turn may start as soon as turnComplete is out
        tr.response_done_ns = await self.send({"serverContent": {"turnComplete": True},
                                               "usageMetadata": self.usage(r)})
        tr.status = "completed"
        if self.resumption:
            await self.send({"sessionResumptionUpdate": {"newHandle": rand_id(24), "resumable": True}})
