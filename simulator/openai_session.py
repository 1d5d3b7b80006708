"""One simulated OpenAI Realtime session (GA or beta shape) on one WebSocket connection.

The receive loop (session_base.py) handles client events in order; each response runs as its own
task on the shared reply plan (reply.py: TTFA, paced deltas, faults, truth stamps), in the event
shapes of openai_wire.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from . import audio
from .faults import TURN_KINDS, Fault
from .openai_responses import InputTurn, OpenAIResponses, Response
from .openai_wire import APPEND_HEAD, BETA_NAMES, GA_NAMES, MAX_APPEND_BYTES
from .session_base import lifetime_s
from .session_config import ConfigReject, SessionConfig
from .truth import SessionTruth
from .util import rand_id
from .vad import EnergyVAD

if TYPE_CHECKING:
    from .profiles import Profile
    from .state import SimState


@dataclass(slots=True)
class ConnInfo:
    """What the upgrade request told us, plus the faults decided for this connection."""

    model: str
    path: str
    ga: bool
    profile: Profile
    truth: SessionTruth
    faults: list[Fault] = field(default_factory=list)


class OpenAISession(OpenAIResponses):
    def __init__(self, state: SimState, ws, info: ConnInfo):
        super().__init__(state, ws, info)
        self.model = info.model
        self.ga = info.ga
        self.names = GA_NAMES if self.ga else BETA_NAMES
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
        self.expiry_s = lifetime_s(info.profile, info.faults)
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
        self.last_item_id: str | None = None
        self.last_item_type: str | None = None
        self.active: Response | None = None
        self.last_tool_output_ns: int | None = None
        self.deferred_vad = False
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
    def instructions(self) -> str:
        return self.cfg.instructions

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> bool:
        await self.ready_delay()
        self.info.truth.ready_ns = await self.send({"type": "session.created",
                                                    "session": self.render()})
        if not self.ga:
            await self.send({"type": "conversation.created",
                             "conversation": {"id": self.conversation_id,
                                              "object": "realtime.conversation"}})
        self.later(self.expiry_s, self.expire)
        return True

    async def internal_error(self) -> bool:
        await self.error("server_error", "The simulator hit an internal error.",
                         etype="server_error")
        return True

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
        if raw.startswith(APPEND_HEAD) and raw.endswith(b'"}'):
            b64 = raw[len(APPEND_HEAD):-2]
            if b'"' not in b64 and b"\\" not in b64 and len(b64) <= MAX_APPEND_BYTES:
                await self.append_b64(b64, t, None)
                return
        if len(raw) > MAX_APPEND_BYTES + 4096:
            await self.error("invalid_event", "The event is too large: at most 15 MiB of audio "
                             "per input_audio_buffer.append.", param="audio")
            return
        msg = await self.decode_event(raw)
        if msg is None:
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
            self.cancel_later(resp)

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
        text = await self.transcript_text(k, f"{self.id}:{turn.item_id}")
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
