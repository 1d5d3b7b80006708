"""The response side of a simulated OpenAI Realtime session: creating, cancelling and running
responses (a message on the shared reply plan of reply.py, or a function call), and their closing
events. `OpenAISession` (openai_session.py) adds the connection and the input side; this class
relies on the state its __init__ sets up (cfg, names, ga, ids, the pending input and items).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import orjson
from websockets.exceptions import ConnectionClosed

from . import markers, openai_wire, reply
from .faults import Fault
from .openai_wire import RATE_LIMITS
from .session_base import HeardTurn, Session
from .truth import TurnTruth
from .util import tokens_for_text


@dataclass(slots=True)
class InputTurn(HeardTurn):
    """The user's audio turn being captured (speech start -> stop/commit)."""

    item_id: str
    speech_stopped_ns: int | None = None
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    commit_ns: int | None = None
    audio_ms: int = 0
    transcript: str | None = None


@dataclass(slots=True)
class Response(reply.Reply):
    id: str
    text_only: bool
    instructions: str
    tools: list
    event_id: str | None = None
    cancel_reason: str | None = None
    input_text_tokens: int = 0
    item_id: str | None = None
    input: InputTurn | None = None
    after_tool: bool = False  # follows a function_call_output: never calls
    user_text: str | None = None  # the latest user text item's text, for its call markers


class OpenAIResponses(Session):
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
        self._cancel(resp)

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
        resp = Response(rid, text_only, instructions, tools, event_id, truth=tr,
                        trigger_ns=trigger_ns, input=turn,
                        input_index=self.user_inputs - 1 if self.user_inputs else None,
                        after_tool=after_tool, user_text=self.pending_user_text)
        self.pending_user_text = None
        resp.input_text_tokens = tokens_for_text(instructions) + math.ceil(
            self.pending_text_chars / 4)
        self.pending_text_chars = 0
        resp.faults = reply.schedule_faults(self.turn_faults, self.state.faults, self.profile,
                                            self.model, tr)
        self.active = resp
        resp.task = self._spawn(self.run_reply(resp))

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

    def cancel_wanted(self, resp: Response) -> bool:
        return resp.cancel_reason not in (None, "session_expired")

    async def send_cancelled(self, resp: Response) -> int:
        return await self.finish(resp, "cancelled", {"type": "cancelled",
                                                     "reason": resp.cancel_reason})

    def reply_ended(self, resp: Response) -> None:
        if resp.input is not None:
            resp.truth.transcript = resp.input.transcript
        super().reply_ended(resp)
        if self.deferred_vad and not self.closing and self.active is None:
            self.deferred_vad = False
            self.start_response(time.monotonic_ns(), "vad", None, {})

    async def fault_end(self, resp: Response, f: Fault, due_ns: int) -> bool:
        """close_1011 closes the connection; response_failed fails the response when its next
        delta is due. (An error_event is answered before the response starts.)"""
        if f.kind == "close_1011":
            resp.truth.status = "closed"
            self.info.truth.outcome = "closed_1011"
            await self.chan.close(1011, "internal server error")
            raise ConnectionClosed(None, None)
        if f.kind == "response_failed":
            await reply.sleep_until(due_ns)
            await self.finish(resp, "failed", {"type": "failed", "error": {
                "type": "server_error" if f.params["code"] == "server_error" else
                "invalid_request_error", "code": f.params["code"],
                "message": "The server had an error while processing your request."}})
            return False
        return True

    async def reply_body(self, resp: Response) -> None:
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
        first_ns = reply.first_delta_ns(prof, self.rng, resp.trigger_ns, tr, self.state.active_sessions)
        rid = resp.id
        tr.response_created_ns = await self.send(
            {"type": "response.created", "response": openai_wire.response(rid, self.conversation_id)})
        call = self._tool_call(resp)
        if call is not None:
            await self.tool_call_body(resp, call, first_ns)
            return
        item_id = self.new_id("item")
        resp.item_id = item_id
        await self.item_out(rid, openai_wire.message_item(item_id, "in_progress", []))
        await self.send({"type": "response.content_part.added", "response_id": rid,
                         "item_id": item_id, "output_index": 0, "content_index": 0,
                         "part": openai_wire.content_part(names, resp.text_only, "")})
        plan = reply.ReplyPlan(prof, self.rng, first_ns, tr, self.cfg.output_format, resp.text_only)
        wire = openai_wire.ReplyWire(names, self.eid, rid, item_id, resp.text_only)
        if await plan.play(self, resp, wire, self.state.lateness):
            await self.finish(resp, "completed", None)

    async def item_out(self, rid: str, item: dict) -> None:
        """A response's output item begins (and, GA, joins the conversation)."""
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": 0, "item": item})
        if self.ga:
            await self.send({"type": "conversation.item.added", "previous_item_id": self.last_item_id,
                             "item": item})
        self.last_item_id, self.last_item_type = item["id"], item["type"]

    async def finish(self, resp: Response, status: str, details: dict | None) -> int:
        """The closing events of a message response; returns when response.done was written."""
        tr = resp.truth
        rid = resp.id
        item_id = resp.item_id
        text = " ".join(resp.sent)
        names = self.names
        output = []
        if item_id is not None:
            base = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
            if resp.text_only:
                await self.send({"type": names.text_done, **base, "text": text})
            else:
                await self.send({"type": names.audio_done, **base})
                await self.send({"type": names.transcript_done, **base, "transcript": text})
            part = openai_wire.content_part(names, resp.text_only, text)
            await self.send({"type": "response.content_part.done", **base, "part": part})
            item = openai_wire.message_item(
                item_id, "completed" if status == "completed" else "incomplete", [part])
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
        tr.usage = u = openai_wire.usage(self.ga, resp.input_text_tokens, tr.input_audio_ms,
                                         text_tokens, audio_tokens)
        return u

    async def send_done(self, resp: Response, status: str, details: dict | None, output: list,
                        usage: dict) -> int:
        r = openai_wire.done_response(self.ga, self.cfg, resp.text_only, openai_wire.response(
            resp.id, self.conversation_id, status, details, output, usage))
        if self.active is resp:
            self.active = None  # a new response.create may follow response.done at once
        t = await self.send({"type": "response.done", "response": r})
        resp.truth.response_done_ns = t
        await self.send({"type": "rate_limits.updated", "rate_limits": RATE_LIMITS})
        return t

    async def tool_call_body(self, resp: Response, call: markers.CallMarker, first_ns: int) -> None:
        tr, rid = resp.truth, resp.id
        item_id, call_id = self.new_id("item"), self.new_id("call")
        item = {"id": item_id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "name": call.name, "call_id": call_id, "arguments": ""}
        await self.item_out(rid, item)
        await reply.sleep_until(first_ns)
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

