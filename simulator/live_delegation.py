"""GPT-Live delegation in the simulator: the call markers (markers.py) decide that the model
delegates a user input; this module acts it out in both modes.

- client: `session.delegation.created{target: client}` (no task text) at the reply's onset;
  the turn's truth ends there (status tool_call). `session.commentary.append{delegation_id,
  content}` is acknowledged (`session.commentary.appended`) and spoken: a new reply whose TTFA
  runs from the append (its truth's tool_output_ns).
- responses (the marker's function is among `delegation.responses.tools`): the delegation,
  then the nested backend stream in `response.event`s: response.created, output_item.added,
  function_call_arguments.done, output_item.done (truth tool_args_done_ns), response.completed.
  The backend then waits for `response.item.create{function_call_output}` and `response.create`
  (one for all calls, as the reference says); the continuation is another nested stream and a
  spoken reply timed from the response.create.

Appends without a delegation (`delegation_id: null`) are acknowledged; a commentary one is
spoken too (the model says it). A non-null delegation_id in Responses mode is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from . import reply
from .live_wire import backend_response, function_call_item
from .util import rand_id, tokens_for_text

if TYPE_CHECKING:
    from .markers import CallMarker

MAX_OPEN = 64  # delegations awaiting an answer per session (oldest dropped beyond)


@dataclass(slots=True)
class Open:
    """A delegation waiting for the app: its calls (Responses mode) and their outputs."""

    target: str
    response_id: str = ""
    calls: dict[str, str] = field(default_factory=dict)  # call_id -> name
    answered: dict[str, int] = field(default_factory=dict)  # call_id -> output received ns


class Delegations:
    def __init__(self, session):
        self.s = session
        self.open: dict[str, Open] = {}

    def handles(self, call: CallMarker) -> bool:
        cfg = self.s.cfg
        return cfg.mode == "client" or (cfg.mode == "responses" and call.name in cfg.tools)

    def _keep(self, did: str, o: Open) -> None:
        if len(self.open) >= MAX_OPEN:
            del self.open[next(iter(self.open))]
        self.open[did] = o

    async def delegate(self, r, call: CallMarker) -> None:
        """At the reply's onset the model delegates instead of speaking."""
        s, tr = self.s, r.truth
        try:
            await reply.sleep_until(r.onset_ns)
            did = "dlg_" + rand_id(16)
            if s.cfg.mode == "client":
                tr.tool_args_done_ns = await s.send({
                    "type": "session.delegation.created", "offset_ms": s.ms(time.monotonic_ns()),
                    "delegation": {"id": did, "type": "delegation", "target": "client"}})
                tr.tool_call = {"mode": "client", "delegation_id": did, "name": call.name,
                                "arguments": call.arguments, "broken": call.broken}
                self._keep(did, Open("client"))
            else:
                rid = "resp_" + rand_id(16)
                call_id = "call_" + rand_id(16)
                await s.send({"type": "session.delegation.created",
                              "offset_ms": s.ms(time.monotonic_ns()),
                              "delegation": {"id": did, "type": "delegation",
                                             "target": "responses", "response_id": rid}})
                ev = s.ev
                item = function_call_item("fc_" + rand_id(16), call_id, call.name, call.arguments)
                w = s.chan.write
                await w(ev.backend(did, {"type": "response.created",
                                         "response": backend_response(rid, "in_progress")}))
                await w(ev.backend(did, {"type": "response.output_item.added", "output_index": 0,
                                         "item": {**item, "arguments": "",
                                                  "status": "in_progress"}}))
                await w(ev.backend(did, {"type": "response.function_call_arguments.done",
                                         "item_id": item["id"], "output_index": 0,
                                         "arguments": call.arguments}))
                tr.tool_args_done_ns = await w(ev.backend(did, {
                    "type": "response.output_item.done", "output_index": 0, "item": item}))
                await w(ev.backend(did, {"type": "response.completed", "response": backend_response(
                    rid, "completed", _usage(s.cfg.instructions, call.arguments))}))
                tr.tool_call = {"mode": "responses", "delegation_id": did, "call_id": call_id,
                                "name": call.name, "arguments": call.arguments,
                                "broken": call.broken}
                self._keep(did, Open("responses", rid, {call_id: call.name}))
            tr.status = "tool_call"  # the turn goes on once the app answers
        except ConnectionClosed:
            tr.status = "closed"
        finally:
            s.reply_ended(r)

    # ---- the app's side -----------------------------------------------------------------------

    async def on_append(self, typ: str, msg: dict, eid: str | None, t: int) -> None:
        s = self.s
        content = msg.get("content")
        if not isinstance(content, str):
            await s.error("invalid_type", "'content' must be a string.", param="content",
                          client_event_id=eid)
            return
        if "delegation_id" not in msg:  # required, nullable
            await s.error("missing_required_parameter", "Missing required parameter: "
                          "'delegation_id'.", param="delegation_id", client_event_id=eid)
            return
        did = msg["delegation_id"]
        if did is not None:
            o = self.open.get(did) if isinstance(did, str) else None
            if s.cfg.mode == "responses" or o is None or o.target != "client":
                await s.error("invalid_value", "delegation_id must name an open client "
                              "delegation (none are accepted with Responses delegation).",
                              param="delegation_id", client_event_id=eid)
                return
        now_ms = s.ms(time.monotonic_ns())
        await s.send({"type": typ[:-len("append")] + "appended", "client_event_id": eid,
                      "start_ms": now_ms, "end_ms": now_ms})
        if typ == "session.commentary.append":
            if did is not None:
                del self.open[did]
            s.plan(t, "commentary", tool_output_ns=t if did is not None else None)

    async def on_item_create(self, msg: dict, eid: str | None, t: int) -> None:
        s = self.s
        if s.cfg.mode != "responses":
            await s.error("invalid_request_error", "response.item.create requires Responses "
                          "delegation.", param="type", client_event_id=eid)
            return
        item = msg.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            await s.error("invalid_value", "'item' must be a Responses input item.",
                          param="item", client_event_id=eid)
            return
        if item["type"] == "function_call_output":
            cid = item.get("call_id")
            o = next((o for o in self.open.values() if cid in o.calls), None)
            if o is None:
                await s.error("invalid_value", f"No function call with call_id '{str(cid)[:64]}'.",
                              param="item.call_id", client_event_id=eid)
                return
            o.answered[cid] = t

    async def on_response_create(self, eid: str | None, t: int) -> None:
        s = self.s
        if s.cfg.mode != "responses":
            await s.error("invalid_request_error", "response.create requires Responses "
                          "delegation.", param="type", client_event_id=eid)
            return
        did = next((d for d, o in self.open.items() if o.answered), None)
        o = self.open.pop(did) if did is not None else None
        answered = max(o.answered.values()) if o is not None else None
        did = did or "dlg_" + rand_id(16)
        rid = "resp_" + rand_id(16)
        try:
            w, ev = s.chan.write, s.ev
            await w(ev.backend(did, {"type": "response.created",
                                     "response": backend_response(rid, "in_progress")}))
            await w(ev.backend(did, {"type": "response.output_text.delta", "item_id": "msg_" + rid,
                                     "output_index": 0, "content_index": 0, "delta": "Done."}))
            await w(ev.backend(did, {"type": "response.completed", "response": backend_response(
                rid, "completed", _usage(s.cfg.instructions, "Done."))}))
        except ConnectionClosed:
            return
        s.plan(t, "response.create", tool_output_ns=answered)


def _usage(instructions: str, out: str) -> dict:
    """Backend tokens, about four characters a token (billed apart from the session)."""
    i, o = tokens_for_text(instructions) + 20, tokens_for_text(out)
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}
