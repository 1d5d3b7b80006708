"""One simulated OpenAI Realtime session (GA or beta shape) on one WebSocket connection.

The receive loop handles client events in order; each response runs as its own task that paces
audio deltas on an absolute schedule (slot i at first_audio + i * delta/speed, never drifting) and
stamps the ground truth right around the socket writes. Audio deltas are spliced from pre-encoded
base64 into a bytes template, so a delta costs no JSON encoding.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from websockets.exceptions import ConnectionClosed

from . import audio, markers, pacing
from .channel import MAX_MESSAGE, FastChannel, WebsocketsChannel
from .faults import SESSION_KINDS, TURN_KINDS, Fault
from .session_config import ConfigReject, SessionConfig
from .truth import SessionTruth, TurnTruth
from .vad import EnergyVAD

if TYPE_CHECKING:
    from .profiles import Profile
    from .server import SimState

log = logging.getLogger("simulator")

MAX_APPEND_BYTES = 15 * 1024 * 1024  # the real service's per-append limit
_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_RATE_LIMITS = [{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
                {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 60}]


def rand_id(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def tokens_for_text(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


@dataclass(slots=True)
class Names:
    """Event names that differ between the GA and beta shapes."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    text_delta: str
    text_done: str
    out_audio_part: str
    out_text_part: str


GA_NAMES = Names("response.output_audio.delta", "response.output_audio.done",
                 "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                 "response.output_text.delta", "response.output_text.done",
                 "output_audio", "output_text")
BETA_NAMES = Names("response.audio.delta", "response.audio.done",
                   "response.audio_transcript.delta", "response.audio_transcript.done",
                   "response.text.delta", "response.text.done", "audio", "text")


@dataclass(slots=True)
class InputTurn:
    """The user's audio turn being captured (speech start -> stop/commit)."""

    item_id: str
    speech_start_ns: int | None = None
    speech_end_ns: int | None = None
    speech_stopped_ns: int | None = None
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    commit_ns: int | None = None
    audio_ms: int = 0
    transcript: str | None = None


@dataclass(slots=True)
class Response:
    id: str
    truth: TurnTruth
    text_only: bool
    instructions: str
    tools: list
    trigger_ns: int
    event_id: str | None = None
    task: asyncio.Task | None = None
    cancel_reason: str | None = None
    faults: dict = field(default_factory=dict)  # after_deltas -> [Fault]
    input_text_tokens: int = 0
    item_id: str | None = None
    sent_text: list = field(default_factory=list)
    input: InputTurn | None = None
    input_index: int | None = None  # the user input answered (markers.py counts them)
    after_tool: bool = False  # follows a function_call_output: never calls
    user_text: str | None = None  # the latest user text item's text, for its call markers


@dataclass(slots=True)
class ConnInfo:
    """What the upgrade request told us, plus the faults decided for this connection."""

    model: str
    path: str
    ga: bool
    profile: Profile
    truth: SessionTruth
    faults: list[Fault] = field(default_factory=list)


class OpenAISession:
    def __init__(self, state: SimState, ws, info: ConnInfo):
        self.state, self.ws, self.info = state, ws, info
        self.ga = info.ga
        self.names = GA_NAMES if self.ga else BETA_NAMES
        self.rng = state.rng
        self.id = "sess_" + rand_id(21)
        self.tag = rand_id(13)
        self._n = 0
        self.cfg = SessionConfig()
        if not self.ga:
            self.cfg.voice = "alloy"
            self.cfg.turn_detection = {k: v for k, v in self.cfg.turn_detection.items()
                                       if k != "idle_timeout_ms"}
        self.conversation_id = "conv_" + rand_id(21)
        self.created_s = time.time()
        self.expiry_s = info.profile.session_max_s
        for f in info.faults:
            if f.kind == "session_expiry":
                self.expiry_s = min(self.expiry_s, float(f.params["after_s"]))
        self.turn_faults = [f for f in info.faults if f.kind in TURN_KINDS]
        self.expires_at = int(self.created_s + self.expiry_s)
        self.vad = self._new_vad()
        self.total_ms = 0.0  # input timeline (all audio appended this session)
        self.buffer_start_ms = 0.0  # start of the uncommitted part of the input buffer
        self.last_voiced_ns: int | None = None
        self.input: InputTurn | None = None  # audio turn in progress
        self.pending: InputTurn | None = None  # committed, not yet answered
        self.pending_text_chars = 0
        self.pending_user_text: str | None = None  # latest user text item not yet answered
        self.user_inputs = 0  # user inputs so far (audio turns + user message items)
        self.transcribed = 0  # user audio turns whose transcription was started
        self.last_item_id: str | None = None
        self.last_item_type: str | None = None
        self.active: Response | None = None
        self.last_tool_output_ns: int | None = None
        self.deferred_vad = False
        self.turn_index = 0
        self.closing = False
        self.tasks: set[asyncio.Task] = set()
        self.handlers = {
            "session.update": self.on_session_update,
            "input_audio_buffer.append": self.on_append,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
            "conversation.item.create": self.on_item_create,
            "conversation.item.truncate": self.on_item_truncate,
            "conversation.item.delete": self.on_item_delete,
            "conversation.item.retrieve": self.on_item_retrieve,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
            "output_audio_buffer.clear": self.on_output_audio_clear,
        }

    @property
    def profile(self) -> Profile:
        """The model's profile as it is now: PUT /profile takes effect on the next turn."""
        return self.state.profiles.for_model(self.info.model)

    # ---- ids and sending ------------------------------------------------------------------------

    def eid(self) -> str:
        self._n += 1
        return f"event_{self.tag}{self._n:08d}"

    def new_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self.tag}{self._n:08d}"

    async def send(self, obj: dict) -> int:
        """Send one event; returns monotonic_ns taken just before the write."""
        obj["event_id"] = self.eid()
        return await self.write(orjson.dumps(obj))

    async def write(self, payload: bytes) -> int:
        """One text frame; returns monotonic_ns taken just before it went to the socket."""
        return await self.chan.write(payload)

    async def error(self, code: str | None, message: str, etype: str = "invalid_request_error",
                    param: str | None = None, event_id: str | None = None) -> None:
        await self.send({"type": "error", "error": {"type": etype, "code": code, "message": message,
                                                    "param": param, "event_id": event_id}})

    # ---- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        st = self.info.truth
        st.session_id = self.id
        loop = asyncio.get_running_loop()
        expiry = None
        make = FastChannel.take_over if self.state.options.reader == "fast" else WebsocketsChannel
        self.chan = make(self.ws, MAX_MESSAGE)
        self.state.sessions.add(self)
        try:
            delay = self.profile.ready_delay_ms.sample(self.rng)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            st.ready_ns = await self.send({"type": "session.created", "session": self.render()})
            if not self.ga:
                await self.send({"type": "conversation.created",
                                 "conversation": {"id": self.conversation_id,
                                                  "object": "realtime.conversation"}})
            expiry = loop.call_later(self.expiry_s, lambda: self._spawn(self.expire()))
            while True:
                raw, t = await self.chan.recv()
                try:
                    await self.dispatch(raw, t)
                except ConnectionClosed:
                    raise
                except Exception:  # a bug must not take the server (or this session) down
                    log.exception("simulator: error handling a client event")
                    await self.error("server_error", "The simulator hit an internal error.",
                                     etype="server_error")
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            if expiry is not None:
                expiry.cancel()
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            self.state.sessions.discard(self)
            if isinstance(self.chan, FastChannel) and self.chan.open:
                await self.chan.close(1011, "internal error")
            st.closed_ns = time.monotonic_ns()
            st.close_code = self.chan.close_code
            if st.outcome == "open":
                st.outcome = "closed"

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def render(self) -> dict:
        return self.cfg.render(self.ga, self.id, self.info.model, self.expires_at)

    async def expire(self) -> None:
        minutes = self.expiry_s / 60
        msg = (f"Your session hit the maximum duration of {minutes:g} minutes." if minutes >= 1
               else f"Your session hit the maximum duration of {self.expiry_s:g} seconds.")
        self.info.truth.outcome = "expired"
        self.info.truth.faults.append({"kind": "session_expiry", "after_s": self.expiry_s})
        if self.active is not None and self.active.task is not None:
            self.active.cancel_reason = "session_expired"
            self.active.task.cancel()
        try:
            await self.error("session_expired", msg)
            await self.chan.close(1001, msg)
        except ConnectionClosed:
            pass

    async def dispatch(self, raw: bytes, t: int) -> None:
        # Fast path for the bulk of traffic: a plain append, spliced out without a JSON parse.
        if raw.startswith(_APPEND_HEAD) and raw.endswith(b'"}'):
            b64 = raw[len(_APPEND_HEAD):-2]
            if b'"' not in b64 and b"\\" not in b64 and len(b64) <= MAX_APPEND_BYTES:
                await self.append_b64(b64, t, None)
                return
        if len(raw) > MAX_APPEND_BYTES + 4096:
            await self.error("invalid_event", "The event is too large: at most 15 MiB of audio "
                             "per input_audio_buffer.append.", param="audio")
            return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self.error("invalid_event", "We could not parse the JSON body of your request.")
            return
        if not isinstance(msg, dict):
            await self.error("invalid_event", "The event must be a JSON object.")
            return
        typ = msg.get("type")
        handler = self.handlers.get(typ) if isinstance(typ, str) else None
        if handler is None:
            if typ is None:
                await self.error("invalid_event", "The 'type' field is missing.", param="type",
                                 event_id=msg.get("event_id"))
            else:
                await self.error("invalid_event", f"Invalid value: '{str(typ)[:80]}'. Unknown event "
                                 "type.", param="type", event_id=msg.get("event_id"))
            return
        await handler(msg, t)

    # ---- session --------------------------------------------------------------------------------

    def _new_vad(self) -> EnergyVAD:
        td = self.cfg.turn_detection or {}
        rate = audio.FORMATS[self.cfg.input_format][0]
        return EnergyVAD(rate, float(td.get("threshold", 0.5)),
                         int(td.get("prefix_padding_ms", 300)), self.cfg.silence_ms())

    async def on_session_update(self, msg: dict, t: int) -> None:
        try:
            new = self.cfg.updated(msg.get("session"), self.ga)
        except ConfigReject as e:
            await self.error(e.code, str(e), param=e.param, event_id=msg.get("event_id"))
            return
        fmt_changed = new.input_format != self.cfg.input_format
        self.cfg = new
        vad = self._new_vad()
        if not fmt_changed:
            vad.frames_done, vad.carry = self.vad.frames_done, self.vad.carry
            vad.in_speech, vad.last_speech_end_ms = self.vad.in_speech, self.vad.last_speech_end_ms
        else:
            vad.frames_done = int(self.total_ms) // 10
        self.vad = vad
        await self.send({"type": "session.updated", "session": self.render()})

    # ---- input audio ----------------------------------------------------------------------------

    async def on_append(self, msg: dict, t: int) -> None:
        b64 = msg.get("audio")
        if not isinstance(b64, str) or not b64.isascii():
            await self.error("invalid_value", "Missing or invalid 'audio' (base64 string).",
                             param="audio", event_id=msg.get("event_id"))
            return
        await self.append_b64(b64.encode(), t, msg.get("event_id"))

    async def append_b64(self, b64: bytes, t: int, event_id: str | None) -> None:
        fmt = self.cfg.input_format
        rate, width = audio.FORMATS[fmt]
        res = self.vad.feed_pcm16_b64(b64) if fmt == "pcm16" else None
        if res is None:
            try:
                raw = audio.b64decode(b64)
            except ValueError:
                await self.error("invalid_value", "Invalid base64 in 'audio'.", param="audio",
                                 event_id=event_id)
                return
            nbytes = len(raw)
        else:
            nbytes = len(b64) // 4 * 3 - (2 if b64.endswith(b"==") else b64.endswith(b"="))
        if nbytes > MAX_APPEND_BYTES:
            await self.error("invalid_value", "Audio chunk too large: at most 15 MiB per append.",
                             param="audio", event_id=event_id)
            return
        self.total_ms += nbytes / width * 1000 / rate
        events, voiced = res if res is not None else self.vad.feed(
            audio.decode_to_int16(raw, fmt))
        if voiced:
            self.last_voiced_ns = t
        td = self.cfg.turn_detection
        if td is None:  # manual mode: VAD only tracks speech for the ground truth
            if voiced:
                if self.input is None:
                    self.input = InputTurn(self.new_id("item"), speech_start_ns=t)
                self.input.speech_end_ns = t
            return
        for ev in events:
            if ev.kind == "start":
                await self.on_speech_started(ev.audio_ms, t, td)
            else:
                await self.on_speech_stopped(ev.audio_ms, td)

    async def on_speech_started(self, audio_start_ms: int, t: int, td: dict) -> None:
        self.input = InputTurn(self.new_id("item"), speech_start_ns=t, audio_start_ms=audio_start_ms)
        await self.send({"type": "input_audio_buffer.speech_started",
                         "audio_start_ms": audio_start_ms, "item_id": self.input.item_id})
        resp = self.active
        if resp is not None and td.get("interrupt_response", True) and resp.cancel_reason is None:
            resp.truth.barge_in_speech_ns = t
            resp.cancel_reason = "turn_detected"
            delay = self.profile.cancel_delay_ms.sample(self.rng)
            if delay > 0:
                asyncio.get_running_loop().call_later(delay / 1000, self._cancel_task, resp)
            else:
                self._cancel_task(resp)

    def _cancel_task(self, resp: Response) -> None:
        if resp.task is not None and not resp.task.done():
            resp.task.cancel()

    async def on_speech_stopped(self, audio_end_ms: int, td: dict) -> None:
        turn = self.input or InputTurn(self.new_id("item"))
        self.input = None
        turn.speech_end_ns = self.last_voiced_ns
        turn.audio_end_ms = audio_end_ms
        turn.speech_stopped_ns = await self.send({"type": "input_audio_buffer.speech_stopped",
                                                  "audio_end_ms": audio_end_ms,
                                                  "item_id": turn.item_id})
        turn.audio_ms = int(max(0.0, audio_end_ms - self.buffer_start_ms))
        self.buffer_start_ms = audio_end_ms
        await self.commit_item(turn)
        if td.get("create_response", True):
            if self.active is None:
                self.start_response(turn.speech_stopped_ns, "vad", None, {})
            else:  # not interrupted (interrupt_response false): answer once the reply ends
                self.deferred_vad = True

    async def on_commit(self, msg: dict, t: int) -> None:
        buffered = self.total_ms - self.buffer_start_ms
        if buffered < 100:
            await self.error("input_audio_buffer_commit_empty",
                             "Error committing input audio buffer: buffer too small. Expected at "
                             f"least 100ms of audio, but buffer only has {buffered:.2f}ms of audio.",
                             event_id=msg.get("event_id"))
            return
        turn = self.input or InputTurn(self.new_id("item"))
        self.input = None
        turn.commit_ns = t
        turn.audio_ms = int(buffered)
        self.buffer_start_ms = self.total_ms
        self.vad.reset()
        await self.commit_item(turn)

    async def commit_item(self, turn: InputTurn) -> None:
        prev = self.last_item_id
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": prev,
                         "item_id": turn.item_id})
        item = {"id": turn.item_id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        await self.item_added(item, prev)
        self.pending = turn
        self.user_inputs += 1
        if self.cfg.transcription is not None:
            self._spawn(self.transcribe(turn, self.transcribed))
            self.transcribed += 1

    async def item_added(self, item: dict, prev: str | None) -> None:
        self.last_item_id, self.last_item_type = item["id"], item.get("type")
        if self.ga:
            await self.send({"type": "conversation.item.added", "previous_item_id": prev,
                             "item": item})
            await self.send({"type": "conversation.item.done", "previous_item_id": prev,
                             "item": item})
        else:
            await self.send({"type": "conversation.item.created", "previous_item_id": prev,
                             "item": item})

    async def transcribe(self, turn: InputTurn, k: int) -> None:
        """Transcribe user audio turn k (0-based over transcribed turns): the k-th marker."""
        delay = self.profile.transcription_delay_ms.sample(self.rng)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        text = (markers.transcript_for(self.cfg.instructions, k) or self.profile.transcript
                or "simulated speech")
        if self.profile.wer > 0:
            text = markers.inject_wer(text, self.profile.wer, f"{self.id}:{turn.item_id}")
        turn.transcript = text
        base = {"item_id": turn.item_id, "content_index": 0}
        try:
            if self.ga:
                await self.send({"type": "conversation.item.input_audio_transcription.delta",
                                 **base, "delta": text})
            done = {"type": "conversation.item.input_audio_transcription.completed", **base,
                    "transcript": text}
            if self.ga:
                done["usage"] = {"type": "duration", "seconds": round(turn.audio_ms / 1000, 3)}
            await self.send(done)
        except ConnectionClosed:
            pass

    async def on_clear(self, msg: dict, t: int) -> None:
        self.buffer_start_ms = self.total_ms
        self.input = None
        self.vad.reset()
        await self.send({"type": "input_audio_buffer.cleared"})

    # ---- conversation items ---------------------------------------------------------------------

    async def on_item_create(self, msg: dict, t: int) -> None:
        item = msg.get("item")
        if not isinstance(item, dict) or item.get("type") not in ("message", "function_call",
                                                                  "function_call_output"):
            await self.error("invalid_value", "item.type must be message, function_call or "
                             "function_call_output.", param="item.type",
                             event_id=msg.get("event_id"))
            return
        item = dict(item)
        item.setdefault("id", self.new_id("item"))
        item["object"] = "realtime.item"
        item.setdefault("status", "completed")
        if item["type"] == "message":
            texts = [c.get("text", "") for c in item.get("content") or []
                     if isinstance(c, dict) and c.get("type") in ("input_text", "text")]
            text = " ".join(t for t in texts if isinstance(t, str))
            self.pending_text_chars += len(text)
            if item.get("role") == "user":
                self.pending_user_text = text
                self.user_inputs += 1
        elif item["type"] == "function_call_output":
            self.pending_text_chars += len(str(item.get("output", "")))
            self.last_tool_output_ns = t
        await self.item_added(item, msg.get("previous_item_id", self.last_item_id))

    async def on_item_truncate(self, msg: dict, t: int) -> None:
        await self.send({"type": "conversation.item.truncated", "item_id": msg.get("item_id"),
                         "content_index": msg.get("content_index", 0),
                         "audio_end_ms": msg.get("audio_end_ms", 0)})

    async def on_item_delete(self, msg: dict, t: int) -> None:
        await self.send({"type": "conversation.item.deleted", "item_id": msg.get("item_id")})

    async def on_item_retrieve(self, msg: dict, t: int) -> None:
        await self.send({"type": "conversation.item.retrieved",
                         "item": {"id": msg.get("item_id"), "object": "realtime.item"}})

    async def on_output_audio_clear(self, msg: dict, t: int) -> None:
        await self.error("invalid_request_error", "output_audio_buffer.clear is only for WebRTC/SIP.",
                         event_id=msg.get("event_id"))

    # ---- responses ------------------------------------------------------------------------------

    async def on_response_create(self, msg: dict, t: int) -> None:
        if self.active is not None:
            await self.error("conversation_already_has_active_response",
                             "Conversation already has an active response in progress: "
                             f"{self.active.id}. Wait until the response is finished before "
                             "creating a new one.", event_id=msg.get("event_id"))
            return
        over = msg.get("response") or {}
        if not isinstance(over, dict):
            await self.error("invalid_type", "Invalid type for 'response'.", param="response",
                             event_id=msg.get("event_id"))
            return
        self.start_response(t, "response.create", msg.get("event_id"), over)

    async def on_response_cancel(self, msg: dict, t: int) -> None:
        resp = self.active
        rid = msg.get("response_id")
        if resp is None or (rid and rid != resp.id):
            await self.error("response_cancel_not_active", "Cancellation failed: no active "
                             "response found", event_id=msg.get("event_id"))
            return
        if resp.cancel_reason is None:
            resp.cancel_reason = "client_cancelled"
        self._cancel_task(resp)

    def start_response(self, trigger_ns: int, trigger: str, event_id: str | None,
                       over: dict) -> None:
        mods = over.get("output_modalities" if self.ga else "modalities")
        text_only = self.cfg.text_only if not isinstance(mods, list) else "audio" not in mods
        instructions = over.get("instructions")
        if not isinstance(instructions, str):
            instructions = self.cfg.instructions
        tools = over.get("tools") if isinstance(over.get("tools"), list) else self.cfg.tools
        rid = self.new_id("resp")
        turn = self.pending
        self.pending = None
        tr = TurnTruth(self.id, self.turn_index, self.info.model, rid, trigger=trigger)
        self.turn_index += 1
        if trigger == "response.create":
            tr.response_create_ns = trigger_ns
        after_tool = self.last_item_type == "function_call_output"
        if after_tool:
            tr.tool_output_ns = self.last_tool_output_ns
        if turn is not None:
            tr.speech_start_ns, tr.speech_end_ns = turn.speech_start_ns, turn.speech_end_ns
            tr.speech_stopped_ns, tr.commit_ns = turn.speech_stopped_ns, turn.commit_ns
            tr.audio_start_ms, tr.audio_end_ms = turn.audio_start_ms, turn.audio_end_ms
            tr.input_audio_ms = turn.audio_ms
        resp = Response(rid, tr, text_only, instructions, tools, trigger_ns, event_id, input=turn,
                        input_index=self.user_inputs - 1 if self.user_inputs else None,
                        after_tool=after_tool, user_text=self.pending_user_text)
        self.pending_user_text = None
        resp.input_text_tokens = tokens_for_text(instructions) + math.ceil(
            self.pending_text_chars / 4)
        self.pending_text_chars = 0
        faults = list(self.turn_faults)  # chosen for the whole session at connect
        faults += self.state.faults.pick(self.profile, self.info.model, TURN_KINDS, per="turn")
        for f in faults:
            resp.faults.setdefault(int(f.params.get("after_deltas", 0)), []).append(f)
            tr.faults.append(f.record())
        self.active = resp
        resp.task = self._spawn(self.run_response(resp))

    def _tool_call(self, resp: Response) -> markers.CallMarker | None:
        """The call this response makes: a marker in the latest user text item, else in the
        instructions, for its user input; none after a function_call_output."""
        if resp.after_tool:
            return None
        k = resp.input_index
        marker = markers.call_for(resp.user_text, k) or markers.call_for(resp.instructions, k)
        if marker is None:
            return None
        declared = {t.get("name") for t in resp.tools if isinstance(t, dict)}
        return marker if marker.name in declared else None

    async def run_response(self, resp: Response) -> None:
        tr = resp.truth
        try:
            await self.response_body(resp)
        except asyncio.CancelledError:
            if self.closing or resp.cancel_reason in (None, "session_expired"):
                tr.status = "closed" if tr.status == "in_progress" else tr.status
                raise
            try:
                tr.cancel_ns = await self.finish(resp, "cancelled", {"type": "cancelled",
                                                                     "reason": resp.cancel_reason})
            except ConnectionClosed:
                tr.status = "closed"
        except ConnectionClosed:
            if tr.status == "in_progress":
                tr.status = "closed"
        finally:
            if self.active is resp:
                self.active = None
            if resp.input is not None:
                tr.transcript = resp.input.transcript
            self.state.truth.turn(tr)
            if self.deferred_vad and not self.closing and self.active is None:
                self.deferred_vad = False
                self.start_response(time.monotonic_ns(), "vad", None, {})

    async def fault_point(self, resp: Response, i: int, slot: list[int]) -> bool:
        """Apply faults due before delta i. Returns False when the response must stop here."""
        for f in resp.faults.pop(i, ()):
            k = f.kind
            if k == "stall":
                await asyncio.sleep(float(f.params["stall_s"]))
                slot[0] = time.monotonic_ns() - i * slot[1]  # re-anchor: the stall is the gap
            elif k == "malformed_json":
                await self.write(b'{"type":"' + self.names.audio_delta.encode()
                                 + b'","event_id":"' + self.eid().encode() + b'","delta":"AAAA')
            elif k == "oversized":
                n = int(f.params["bytes"]) // 4 * 4
                await self.write(b'{"type":"' + self.names.audio_delta.encode() + b'","event_id":"'
                                 + self.eid().encode() + b'","response_id":"'
                                 + resp.id.encode() + b'","delta":"' + b"A" * n + b'"}')
            elif k == "drop":
                resp.truth.status = "dropped"
                self.info.truth.outcome = "dropped"
                abort_rst(self.ws)
                raise ConnectionClosed(None, None)
            elif k == "close_1011":
                resp.truth.status = "closed"
                self.info.truth.outcome = "closed_1011"
                await self.chan.close(1011, "internal server error")
                raise ConnectionClosed(None, None)
            elif k == "response_failed":
                wait = slot[0] + i * slot[1] - time.monotonic_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                await self.finish(resp, "failed", {"type": "failed", "error": {
                    "type": "server_error" if f.params["code"] == "server_error" else
                    "invalid_request_error", "code": f.params["code"],
                    "message": "The server had an error while processing your request."}})
                return False
        return True

    async def response_body(self, resp: Response) -> None:
        tr = resp.truth
        names = self.names
        prof = self.profile
        for f in resp.faults.get(0, ()):
            if f.kind == "error_event":
                code = f.params["code"]
                etype = "server_error" if code == "server_error" else (
                    "tokens" if code == "rate_limit_exceeded" else "invalid_request_error")
                tr.status = "error"
                await self.error(code, "Rate limit reached. Please try again in 6.946s."
                                 if code == "rate_limit_exceeded" else
                                 "The server had an error while processing your request.",
                                 etype=etype, event_id=resp.event_id)
                return
        ttfa_ms = prof.ttfa_ms.sample(self.rng) * prof.ttfa_scale
        tr.injected_ttfa_ms = round(ttfa_ms, 3)
        first_ns = resp.trigger_ns + int(ttfa_ms * 1e6)
        rid = resp.id
        resp_obj = {"object": "realtime.response", "id": rid, "status": "in_progress",
                    "status_details": None, "output": [], "conversation_id": self.conversation_id,
                    "usage": None, "metadata": None}
        tr.response_created_ns = await self.send({"type": "response.created", "response": resp_obj})
        call = self._tool_call(resp)
        if call is not None:
            await self.tool_call_body(resp, call, first_ns)
            return
        item_id = self.new_id("item")
        resp.item_id = item_id
        part_type = names.out_text_part if resp.text_only else names.out_audio_part
        item = {"id": item_id, "object": "realtime.item", "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": 0, "item": item})
        if self.ga:
            await self.send({"type": "conversation.item.added", "previous_item_id": self.last_item_id,
                             "item": item})
        self.last_item_id, self.last_item_type = item_id, "message"
        part = {"type": part_type, "transcript": ""} if not resp.text_only else {
            "type": part_type, "text": ""}
        await self.send({"type": "response.content_part.added", "response_id": rid,
                         "item_id": item_id, "output_index": 0, "content_index": 0, "part": part})
        reply_ms = max(1, round(prof.reply_s.sample(self.rng) * 1000))
        delta_ms = prof.delta_ms
        n = math.ceil(reply_ms / delta_ms)
        tr.planned_audio_ms = reply_ms
        words = markers.reply_text(reply_ms / 1000, prof.reply_text).split()
        # word j goes out with delta floor(j * n / len(words))
        per_delta: list[list[str]] = [[] for _ in range(n)]
        for j, w in enumerate(words):
            per_delta[j * n // len(words)].append(w)
        slot = [first_ns, int(delta_ms * 1e6 / prof.speed)]
        jitter = pacing.jitter_of(prof)
        clip = audio.reply_clip(self.cfg.output_format, delta_ms)
        rate, width = audio.FORMATS[self.cfg.output_format]
        head = (b'{"type":"' + (names.text_delta if resp.text_only else names.audio_delta).encode()
                + b'","event_id":"')
        mid = (b'","response_id":"' + rid.encode() + b'","item_id":"' + item_id.encode()
               + b'","output_index":0,"content_index":0,"delta":"')
        tail = b'"}'
        lateness = self.state.lateness
        offset = self.rng.randrange(len(clip.chunks_b64))
        for i in range(n):
            if i in resp.faults and not await self.fault_point(resp, i, slot):
                return
            deadline = await pacing.until_due(i, slot, jitter, self.rng)
            chunk_ms = delta_ms if i < n - 1 else reply_ms - (n - 1) * delta_ms
            if resp.text_only:
                payload = orjson.dumps(" ".join(per_delta[i]) + " ")[1:-1] if per_delta[i] else b""
                if not payload:
                    continue
                t = await self.write(b"".join((head, self.eid().encode(), mid, payload, tail)))
                if tr.first_text_ns is None:
                    tr.first_text_ns = t
                resp.sent_text.extend(per_delta[i])
            else:
                b64 = clip.chunk(offset + i) if chunk_ms == delta_ms else clip.partial(offset + i,
                                                                                      chunk_ms)
                frame = b"".join((head, self.eid().encode(), mid, b64, tail))
                t = await self.write(frame)
                pacing.audio_sent(tr, lateness, t, deadline, chunk_ms)
                if per_delta[i]:
                    t2 = await self.send({"type": names.transcript_delta, "response_id": rid,
                                          "item_id": item_id, "output_index": 0,
                                          "content_index": 0, "delta": " ".join(per_delta[i]) + " "})
                    if tr.first_text_ns is None:
                        tr.first_text_ns = t2
                    resp.sent_text.extend(per_delta[i])
        for i in sorted(resp.faults):
            if not await self.fault_point(resp, i, slot):
                return
        await self.finish(resp, "completed", None)

    async def finish(self, resp: Response, status: str, details: dict | None) -> int:
        """The closing events of a message response; returns when response.done was written."""
        tr = resp.truth
        rid = resp.id
        item_id = resp.item_id
        text = " ".join(resp.sent_text)
        names = self.names
        output = []
        if item_id is not None:
            base = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
            if resp.text_only:
                await self.send({"type": names.text_done, **base, "text": text})
                part = {"type": names.out_text_part, "text": text}
            else:
                await self.send({"type": names.audio_done, **base})
                await self.send({"type": names.transcript_done, **base, "transcript": text})
                part = {"type": names.out_audio_part, "transcript": text}
            await self.send({"type": "response.content_part.done", **base, "part": part})
            item = {"id": item_id, "object": "realtime.item", "type": "message",
                    "status": "completed" if status == "completed" else "incomplete",
                    "role": "assistant", "content": [part]}
            await self.send({"type": "response.output_item.done", "response_id": rid,
                             "output_index": 0, "item": item})
            if self.ga:
                await self.send({"type": "conversation.item.done", "item": item})
            output = [item]
        usage = self.usage(resp, text_tokens=tokens_for_text(text),
                           audio_tokens=math.ceil(tr.reply_audio_ms / 50))
        t = await self.send_done(resp, status, details, output, usage)
        tr.status = status
        return t

    def usage(self, resp: Response, text_tokens: int, audio_tokens: int) -> dict:
        tr = resp.truth
        in_audio = math.ceil(tr.input_audio_ms / 100)
        in_text = resp.input_text_tokens
        out_details = {"text_tokens": text_tokens, "audio_tokens": audio_tokens}
        in_details = {"text_tokens": in_text, "audio_tokens": in_audio, "cached_tokens": 0}
        if self.ga:
            in_details["image_tokens"] = 0
            in_details["cached_tokens_details"] = {"text_tokens": 0, "audio_tokens": 0,
                                                   "image_tokens": 0}
        u = {"total_tokens": in_text + in_audio + text_tokens + audio_tokens,
             "input_tokens": in_text + in_audio, "output_tokens": text_tokens + audio_tokens,
             "input_token_details": in_details, "output_token_details": out_details}
        tr.usage = u
        return u

    async def send_done(self, resp: Response, status: str, details: dict | None, output: list,
                        usage: dict) -> int:
        r = {"object": "realtime.response", "id": resp.id, "status": status,
             "status_details": details, "output": output, "conversation_id": self.conversation_id,
             "usage": usage, "metadata": None}
        if self.ga:
            r["output_modalities"] = ["text"] if resp.text_only else ["audio"]
            r["max_output_tokens"] = self.cfg.max_output_tokens
            if not resp.text_only:
                r["audio"] = {"output": {"format": {"type": "audio/pcm", "rate": 24000}
                                         if self.cfg.output_format == "pcm16" else
                                         {"type": "audio/" + self.cfg.output_format},
                                         "voice": self.cfg.voice}}
        else:
            r["modalities"] = ["text"] if resp.text_only else ["audio", "text"]
            r["output_audio_format"] = {"pcm16": "pcm16", "pcmu": "g711_ulaw",
                                        "pcma": "g711_alaw"}[self.cfg.output_format]
        if self.active is resp:
            self.active = None  # a new response.create may follow response.done at once
        t = await self.send({"type": "response.done", "response": r})
        resp.truth.response_done_ns = t
        await self.send({"type": "rate_limits.updated", "rate_limits": _RATE_LIMITS})
        return t

    async def tool_call_body(self, resp: Response, call: markers.CallMarker, first_ns: int) -> None:
        tr, rid = resp.truth, resp.id
        item_id, call_id = self.new_id("item"), self.new_id("call")
        item = {"id": item_id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "name": call.name, "call_id": call_id, "arguments": ""}
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": 0, "item": item})
        if self.ga:
            await self.send({"type": "conversation.item.added", "previous_item_id": self.last_item_id,
                             "item": item})
        self.last_item_id, self.last_item_type = item_id, "function_call"
        wait = first_ns - time.monotonic_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        base = {"response_id": rid, "item_id": item_id, "output_index": 0, "call_id": call_id}
        half = len(call.arguments) // 2
        await self.send({"type": "response.function_call_arguments.delta", **base,
                         "delta": call.arguments[:half]})
        await self.send({"type": "response.function_call_arguments.delta", **base,
                         "delta": call.arguments[half:]})
        done = {"type": "response.function_call_arguments.done", **base,
                "arguments": call.arguments}
        if self.ga:
            done["name"] = call.name
        tr.tool_args_done_ns = await self.send(done)
        tr.tool_call = {"name": call.name, "call_id": call_id, "arguments": call.arguments,
                        "broken": call.broken}
        item = dict(item, status="completed", arguments=call.arguments)
        await self.send({"type": "response.output_item.done", "response_id": rid,
                         "output_index": 0, "item": item})
        if self.ga:
            await self.send({"type": "conversation.item.done", "item": item})
        usage = self.usage(resp, text_tokens=tokens_for_text(call.arguments), audio_tokens=0)
        await self.send_done(resp, "completed", None, [item], usage)
        tr.status = "completed"


def abort_rst(ws) -> None:
    """Drop the TCP connection with a reset and no close frame (the client sees 1006)."""
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


# Kinds decided once per session at the upgrade (besides upgrade-time kinds).
SESSION_LEVEL = SESSION_KINDS
