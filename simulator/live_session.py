"""One simulated GPT-Live session (`/v1/live/sessions`, Azure `/openai/v1/live/sessions`).

Written from the protocol reference (gpt-live.md) and the openai package's schema, independent
of the client codec. What makes it unlike the Realtime and Gemini sessions:

- The client must open with `session.start` (strict config, live_wire.parse_start); an unknown
  field is refused with `unknown_parameter` and the connection closes. A missing or wrong key is
  an admission `error` after the upgrade (`invalid_api_key`), not an HTTP 401.
- Output is continuous and paced in real time from `session.started` on: one
  `session.output_audio.delta` of `delta_ms` after another, quiet frames (the profile's
  `quiet_dbfs` noise floor, or digital silence) between replies. A reply's onset lands on its
  due sample: the quiet frame before it is cut short. Every reply starts on a loud chunk
  (live_wire.ONSET_DBFS), so its first delta is its first audible one.
- The model owns turn-taking: an energy VAD (vad.py, SILENCE_MS) on the input decides when the
  user spoke; the TTFA (the profile's) runs from the append holding the last speech frame it
  heard. Speech over a playing reply is a barge-in: the output turns quiet at the first frame
  boundary after the profile's cancel delay. No event says so.
- Transcripts: `session.input_transcript.delta` (the [transcript:] markers, after the profile's
  transcription delay) and `session.output_transcript.delta`, both with start_ms/end_ms on the
  session timeline (ms since session.started; input audio is placed on it by the arrival of the
  first append).
- Delegation, driven by the per-input call markers (markers.py): client mode sends
  `session.delegation.created` and speaks once `session.commentary.append` brings the result;
  Responses mode (function tools declared) streams the nested function call in `response.event`s
  and continues after `response.item.create` + `response.create`.
- `session.usage.updated{seconds}` (cumulative, whole seconds since session.started) after every
  reply; `session.closed` with `close_requested` on session.close and `expired` at the profile's
  session limit (or a session_expiry fault), then a 1000 close.

Ground truth per reply (TurnTruth): speech_end_ns = the append holding the last speech frame
heard, speech_stopped_ns = the VAD's decision, first_audio_ns = the first (audible) reply delta
written, response_done_ns = the first quiet frame written after it (the output went quiet),
cancel_ns = that quiet frame when a barge-in stopped the reply.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import orjson
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from . import audio, markers, pacing, reply
from .faults import Fault
from .live_delegation import Delegations
from .live_wire import (
    APPEND_HEAD,
    MAX_APPEND_BYTES,
    SILENCE_MS,
    ConfigReject,
    Events,
    LiveConfig,
    live_clip,
    parse_start,
    updated_delegation,
)
from .session_base import HeardTurn, Session
from .truth import SessionTruth, TurnTruth
from .util import abort_rst, rand_id
from .vad import EnergyVAD

if TYPE_CHECKING:
    from .profiles import Profile
    from .state import SimState

START_TIMEOUT_S = 30.0
REANCHOR_NS = 1_000_000_000  # output this late (a stall, an overloaded loop) restarts its clock


@dataclass(slots=True)
class LiveConnInfo:
    path: str
    profile: Profile  # the default profile until session.start names the model
    truth: SessionTruth
    admission: tuple[str, str] | None = None  # (code, message): an error right after the upgrade
    faults: list[Fault] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class InputTurn(HeardTurn):
    start_ms: int = 0  # first speech frame, input timeline
    end_ms: int = 0


@dataclass(slots=True, kw_only=True)
class LiveReply(reply.Reply):
    onset_ns: int = 0  # when its first sample is due
    state: str = "planned"  # planned | playing | ending | stopped
    left: int = 0  # samples still to play
    i: int = 0  # next chunk
    offset: int = 0  # clip chunk it starts at
    words: list[list[str]] = field(default_factory=list)
    cancel_at_ns: int | None = None  # barge-in: quiet from the first frame boundary after this
    end_status: str = "completed"
    mute: str = ""  # empty_reply: no speech frame written; silent_reply: digital silence


async def live_admit(sim, connection, request, key: str | None, t0: int) -> Response | None:
    """The upgrade of a GPT-Live path (server.py routes here): upgrade-time faults as for every
    protocol, but a bad key is admitted and answered with an `error` once upgraded."""
    st = sim.state
    profile, path, truth, faults = sim.modelless_upgrade(connection, request, "live", t0)
    refusal = await sim.admit(connection, profile, faults, truth, key, check_key=False)
    if refusal is not None:  # a refuse fault already reset the socket: nothing is written
        return _http_error(503 if refusal == "refused" else int(refusal))
    keys = st.options.api_keys
    admission = None
    if key is None:
        admission = ("missing_api_key", "You didn't provide an API key. Send it in an "
                     "Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY).")
    elif keys and key not in keys:
        admission = ("invalid_api_key", "Incorrect API key provided.")
    connection.sim_info = LiveConnInfo(path, profile, truth, admission)
    connection.sim_shape = "live"
    return None


def _http_error(status: int) -> Response:
    """An injected HTTP status on the upgrade (a gateway in front of the service)."""
    body = orjson.dumps({"error": {"type": "server_error", "code": str(status), "message":
                                   "The server is temporarily unable to handle the request.",
                                   "param": None}})
    h = Headers()
    h["Content-Type"] = "application/json"
    h["Content-Length"] = str(len(body))
    h["Connection"] = "close"
    if status in (429, 503):
        h["Retry-After"] = "1"
    return Response(status, "Error", h, body)


class LiveSession(Session):
    BAD_JSON_CODE = "invalid_json"

    def __init__(self, state: SimState, ws, info: LiveConnInfo):
        super().__init__(state, ws, info)
        self.id = "sess_" + rand_id(24)
        self.ev = Events(rand_id(10))
        self.model = ""
        self.cfg = LiveConfig("")
        self.t0 = 0  # session timeline zero: session.started written
        self.expires_at = 0
        self.turn_faults: list[Fault] = []
        self.vad: EnergyVAD | None = None
        self.in_samples = 0
        self.in_t0_ms: float | None = None  # the input timeline's zero on the session timeline
        self.muted = False
        self.input: InputTurn | None = None
        self.active: LiveReply | None = None  # the reply the output plays (or will)
        self.queued: LiveReply | None = None  # the next one, once the active one is over
        self.out_pos = 0  # output samples written (the output timeline)
        self._wake: asyncio.Future | None = None
        self.delegations = Delegations(self)

    @property
    def instructions(self) -> str:
        return self.cfg.instructions

    def ms(self, t_ns: int) -> int:
        """A monotonic time on the session timeline (ms since session.started)."""
        return max(0, (t_ns - self.t0) // 1_000_000)

    async def send(self, obj: dict) -> int:
        return await self.chan.write(self.ev.dumps(obj))

    async def error(self, code: str, message: str, etype: str = "invalid_request_error",
                    param: str | None = None, client_event_id: str | None = None) -> int:
        return await self.chan.write(self.ev.error(code, message, etype, param, client_event_id))

    async def refuse(self, code: str, message: str, outcome: str, param: str | None = None,
                     client_event_id: str | None = None) -> bool:
        """A startup error: the error event, then the close (no session.started)."""
        self.info.truth.outcome = outcome
        try:
            await self.error(code, message, param=param, client_event_id=client_event_id)
            await self.chan.close(1008, code)
        except ConnectionClosed:
            pass
        return False

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> bool:
        info = self.info
        if info.admission is not None:
            return await self.refuse(*info.admission, "auth_error")
        try:
            raw, _t = await asyncio.wait_for(self.chan.recv(), START_TIMEOUT_S)
        except TimeoutError:
            return await self.refuse("session_not_started", "No session.start received.",
                                     "no_start")
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return await self.refuse("invalid_json", "We could not parse the JSON body of your "
                                     "request.", "bad_start")
        eid = msg.get("event_id") if isinstance(msg, dict) else None
        eid = eid if isinstance(eid, str) else None
        if not isinstance(msg, dict) or msg.get("type") != "session.start":
            return await self.refuse("session_not_started", "The first event must be "
                                     "session.start.", "bad_start", "type", eid)
        try:
            self.cfg = parse_start(msg.get("session"))
        except ConfigReject as e:
            return await self.refuse(e.code, str(e), "bad_start", e.param, eid)
        self.model = self.cfg.model
        st = info.truth
        st.model = self.model
        prof = self.profile
        self.lifetime = self.arm_faults(st)
        self.vad = EnergyVAD(self.cfg.rate, 0.5, 0, SILENCE_MS)
        self.clip = live_clip(self.cfg.codec, self.cfg.rate, prof.delta_ms, prof.quiet_dbfs)
        await self.ready_delay()
        self.expires_at = int(time.time() + self.lifetime)
        self.t0 = st.ready_ns = await self.send({"type": "session.started",
                                                 "client_event_id": eid,
                                                 "session": self.resource()})
        self._spawn(self.output())
        self.later(self.lifetime, self.expire)
        return True

    def resource(self) -> dict:
        return self.cfg.resource(self.id, self.expires_at)

    def usage(self) -> dict:
        return {"seconds": float(round((time.monotonic_ns() - self.t0) / 1e9))}

    async def internal_error(self) -> bool:
        await self.error("server_error", "The simulator hit an internal error.", "server_error")
        return True

    async def closed(self, reason: str, outcome: str) -> None:
        """session.closed (reason, final usage), then the close: the output stops first."""
        self.closing = True
        self.kick()
        st = self.info.truth
        if st.outcome == "open":
            st.outcome = outcome
        for r in (self.active, self.queued):
            if r is not None:
                r.truth.status = "closed"
                self.reply_ended(r)
        self.active = self.queued = None
        try:
            await self.send({"type": "session.closed", "reason": reason,
                             "session": self.resource(), "usage": self.usage()})
            await self.chan.close(1000, reason)
        except ConnectionClosed:
            pass

    async def clean_up(self) -> None:
        """Replies the connection's end cut off keep their truth (dropped, closed...)."""
        self.closing = True
        for r in (self.active, self.queued):
            if r is not None:
                if r.truth.status == "in_progress":
                    r.truth.status = "closed"
                self.reply_ended(r)
        self.active = self.queued = None
        await super().clean_up()

    async def expire(self) -> None:
        self.info.truth.faults.append({"kind": "session_expiry", "after_s": self.lifetime})
        await self.closed("expired", "expired")

    # ---- client events ----------------------------------------------------------------------

    async def dispatch(self, raw: bytes, t: int) -> None:
        if self.closing:
            return
        if raw.startswith(APPEND_HEAD) and raw.endswith(b'"}'):  # the bulk: plain audio
            b64 = raw[len(APPEND_HEAD):-2]
            if b'"' not in b64 and b"\\" not in b64:
                await self.on_audio(b64, t, None)
                return
        if len(raw) > MAX_APPEND_BYTES + 4096:
            await self.error("invalid_event", "The event is too large.")
            return
        msg = await self.decode_event(raw)
        if msg is None:
            return
        typ = msg.get("type")
        eid = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
        if typ == "session.input_audio.append":
            a = msg.get("audio")
            if not isinstance(a, str) or not a.isascii():
                await self.error("invalid_value", "Missing or invalid 'audio' (base64 string).",
                                 param="audio", client_event_id=eid)
                return
            await self.on_audio(a.encode(), t, eid)
        elif typ in ("session.input_audio.mute", "session.input_audio.unmute"):
            self.muted = typ.endswith(".mute")
            await self.send({"type": typ + "d", "client_event_id": eid})
        elif typ in ("session.instructions.append", "session.thinking.append",
                     "session.commentary.append"):
            await self.delegations.on_append(typ, msg, eid, t)
        elif typ == "session.update":
            try:
                self.cfg.delegation, self.cfg.tools = updated_delegation(self.cfg,
                                                                         msg.get("session"))
            except ConfigReject as e:
                await self.error(e.code, str(e), param=e.param, client_event_id=eid)
                return
            await self.send({"type": "session.updated", "client_event_id": eid,
                             "session": self.resource()})
        elif typ == "response.item.create":
            await self.delegations.on_item_create(msg, eid, t)
        elif typ == "response.create":
            await self.delegations.on_response_create(eid, t)
        elif typ == "session.close":
            await self.closed("close_requested", "closed")
        elif typ == "session.start":
            await self.error("session_already_started", "session.start may be sent only once.",
                             param="type", client_event_id=eid)
        else:
            await self.error("invalid_event", f"Invalid value: '{str(typ)[:80]}'. Unknown or "
                             "unsupported event type.", param="type", client_event_id=eid)

    async def on_audio(self, b64: bytes, t: int, eid: str | None) -> None:
        cfg, vad = self.cfg, self.vad
        try:
            raw = audio.b64decode(b64)
        except ValueError:
            await self.error("invalid_value", "Invalid base64 in 'audio'.", param="audio",
                             client_event_id=eid)
            return
        if not raw:
            await self.error("invalid_value", "Empty audio.", param="audio", client_event_id=eid)
            return
        if len(raw) > MAX_APPEND_BYTES:
            await self.error("invalid_value", "Audio chunk too large.", param="audio",
                             client_event_id=eid)
            return
        if self.in_t0_ms is None:
            self.in_t0_ms = (t - self.t0) / 1e6
        n = len(raw) // cfg.width
        self.in_samples += n
        if self.muted:  # the model hears silence
            res = vad.feed(np.zeros(n, dtype=np.int16))
        elif cfg.codec == "pcm16" and cfg.rate == 24000:
            res = vad.feed_pcm16_b64(b64) or vad.feed(audio.decode_to_int16(raw, "pcm16"))
        else:
            res = vad.feed(audio.decode_to_int16(raw, cfg.codec))
        events, voiced = res
        for ev in events:
            if ev.kind == "start":
                self.speech_started(ev.speech_ms, t)
            else:
                self.speech_stopped(ev.speech_ms, t)
        if voiced and self.input is not None:
            self.input.speech_end_ns = t

    def speech_started(self, speech_ms: int, t: int) -> None:
        self.input = InputTurn(start_ms=speech_ms, speech_start_ns=t)
        r = self.active
        if r is None:
            return
        if r.state == "playing" and r.cancel_at_ns is None:  # barge-in: the model yields
            r.truth.barge_in_speech_ns = t
            r.cancel_at_ns = t + int(self.profile.cancel_delay_ms.sample(self.rng) * 1e6)
            self.kick()
        elif r.state == "planned":  # not started yet: the model drops it
            r.truth.status, r.truth.cancel_ns = "cancelled", t
            self.finish(r)

    def speech_stopped(self, speech_ms: int, t: int) -> None:
        turn = self.input or InputTurn(start_ms=speech_ms)
        self.input = None
        turn.end_ms = speech_ms
        self.user_inputs += 1
        r = self.plan(turn.speech_end_ns or t, "vad", turn=turn, stopped_ns=t,
                      input_index=self.user_inputs - 1)
        self._spawn(self.transcribe(turn, self.transcribed, r.truth))
        self.transcribed += 1

    async def transcribe(self, turn: InputTurn, k: int, tr: TurnTruth) -> None:
        text = await self.transcript_text(k, f"{self.id}:{tr.turn_index}")
        tr.transcript = text
        off = self.in_t0_ms or 0.0
        try:
            await self.chan.write(self.ev.transcript("input", text, round(off + turn.start_ms),
                                                     round(off + turn.end_ms)))
        except ConnectionClosed:
            pass

    # ---- replies ------------------------------------------------------------------------------

    def plan(self, trigger_ns: int, trigger: str, *, turn: InputTurn | None = None,
             stopped_ns: int | None = None, input_index: int | None = None,
             tool_output_ns: int | None = None) -> LiveReply:
        """A reply to what the model heard (or was given): spoken, or a delegation."""
        prof = self.profile
        tr = TurnTruth(self.id, self.turn_index, self.model, "resp_" + rand_id(16),
                       trigger=trigger)
        self.turn_index += 1
        tr.speech_stopped_ns, tr.tool_output_ns = stopped_ns, tool_output_ns
        off = self.in_t0_ms or 0.0
        if turn is not None:
            tr.speech_start_ns, tr.speech_end_ns = turn.speech_start_ns, turn.speech_end_ns
            tr.audio_start_ms, tr.audio_end_ms = round(off + turn.start_ms), round(off + turn.end_ms)
            tr.input_audio_ms = turn.end_ms - turn.start_ms
        r = LiveReply(truth=tr, trigger_ns=trigger_ns, input_index=input_index)
        onset = reply.first_delta_ns(prof, self.rng, trigger_ns, tr, self.state.active_sessions)
        # the model cannot answer before it knew (its VAD waits SILENCE_MS), nor inside the
        # frame already written: then the onset is the next frame boundary
        soonest = max(time.monotonic_ns(),
                      self.t0 + self.out_pos * 1_000_000_000 // self.cfg.rate)
        if onset < soonest:
            onset = soonest
            tr.injected_ttfa_ms = round((onset - trigger_ns) / 1e6, 3)
        r.onset_ns = onset
        call = None if input_index is None else markers.call_for(self.cfg.instructions,
                                                                 input_index)
        if call is not None and self.delegations.handles(call):
            r.task = self._spawn(self.delegations.delegate(r, call))
            return r
        r.faults = reply.schedule_faults(self.turn_faults, self.state.faults, prof, self.model,
                                         tr)
        r.mute = reply.take_mute(r.faults)
        plan = reply.ReplyPlan(prof, self.rng, onset, tr, "pcm16")
        r.left = plan.reply_ms * self.cfg.rate // 1000
        r.words = plan.per_delta
        r.offset = self.rng.choice(self.clip.loud)
        if self.active is None:
            self.active = r
            self.kick()
        else:
            if self.queued is not None:
                self.queued.truth.status = "superseded"
                self.reply_ended(self.queued)
            self.queued = r
        return r

    def finish(self, r: LiveReply) -> None:
        """The reply is over (its truth is final): the queued one, if any, is next."""
        if self.active is r:
            self.active, self.queued = self.queued, None
            self.kick()
        self.reply_ended(r)
        if not self.closing:
            self._spawn(self.send_usage())

    async def send_usage(self) -> None:
        try:
            await self.send({"type": "session.usage.updated", "usage": self.usage()})
        except ConnectionClosed:
            pass

    def kick(self) -> None:
        """Wake the output loop to plan its next frame again (a reply came or went)."""
        w = self._wake
        if w is not None and not w.done():
            w.set_result(True)

    async def _wait_until(self, at_ns: int) -> bool:
        """Sleep until at_ns; True when kicked before it."""
        delay = (at_ns - time.monotonic_ns()) / 1e9
        if delay <= 0:
            return False
        loop = asyncio.get_running_loop()
        self._wake = fut = loop.create_future()
        h = loop.call_later(delay, lambda: fut.done() or fut.set_result(False))
        try:
            return await fut
        finally:
            h.cancel()
            self._wake = None

    async def output(self) -> None:
        """The continuous, real-time output: reply speech or quiet, frame after frame."""
        clip, rate = self.clip, self.cfg.rate
        d = clip.samples
        quiet_k = 0
        write = self.chan.write
        try:
            while not self.closing:
                at = self.t0 + self.out_pos * 1_000_000_000 // rate
                now = time.monotonic_ns()
                if now - at > REANCHOR_NS:  # far behind: restart the clock rather than burst
                    self.out_pos = (now - self.t0) * rate // 1_000_000_000
                    continue
                r, n, speech = self.active, d, False
                if r is not None and r.state == "planned":
                    if r.onset_ns <= at:
                        r.state = "playing"
                    elif r.onset_ns < at + d * 1_000_000_000 // rate:
                        n = max(1, (r.onset_ns - at) * rate // 1_000_000_000)
                if r is not None and r.state == "playing":
                    if r.cancel_at_ns is not None and at >= r.cancel_at_ns:
                        r.state, r.end_status = "stopped", "cancelled"
                    else:
                        speech, n = True, min(d, r.left)
                if await self._wait_until(at):
                    continue  # kicked: plan this frame again
                if self.closing:
                    return
                if speech:
                    if r.i in r.faults and not await self.apply_faults(r, r.i):
                        continue
                    if r.mute == "silent_reply":
                        t = await write(self.ev.audio(reply.silence_b64(self.cfg.codec, n)))
                        pacing.audio_sent(r.truth, self.state.lateness, t, at, n * 1000 / rate)
                    elif not r.mute:
                        t = await write(self.ev.audio(clip.speech(r.offset + r.i, n)))
                        pacing.audio_sent(r.truth, self.state.lateness, t, at, n * 1000 / rate)
                    words = r.words[r.i] if r.i < len(r.words) else ()
                    if words:
                        t_ms = self.out_pos * 1000 // rate
                        frame = self.ev.transcript("output", " ".join(words) + " ", t_ms,
                                                   t_ms + n * 1000 // rate)
                        t2 = await write(frame)
                        if r.truth.first_text_ns is None:
                            r.truth.first_text_ns = t2
                        r.sent.extend(words)
                    r.i += 1
                    r.left -= n
                    if r.left <= 0:
                        r.state = "ending"
                else:
                    if r is not None and r.state == "ending" and r.faults:
                        if not await self.late_faults(r):
                            continue
                    t = await write(self.ev.audio(clip.quiet_frame(quiet_k, n)))
                    quiet_k += 1
                    if r is not None and r.state in ("ending", "stopped"):
                        tr = r.truth
                        tr.response_done_ns = t
                        tr.status = r.end_status
                        if r.end_status == "cancelled":
                            tr.cancel_ns = t
                        self.finish(r)
                self.out_pos += n
        except ConnectionClosed:
            pass

    async def late_faults(self, r: LiveReply) -> bool:
        """Faults set after the reply's last chunk, applied before the quiet that follows."""
        for i in sorted(r.faults):
            if not await self.apply_faults(r, i):
                return False
        return True

    async def apply_faults(self, r: LiveReply, i: int) -> bool:
        """The reply's faults due before chunk i; False when they ended the reply."""
        for f in r.faults.pop(i, ()):
            k = f.kind
            if k == "stall":  # nothing at all for stall_s, then the clock restarts
                await asyncio.sleep(float(f.params["stall_s"]))
                self.out_pos = (time.monotonic_ns() - self.t0) * self.cfg.rate // 1_000_000_000
            elif k == "malformed_json":
                await self.chan.write(self.ev.malformed())
            elif k == "oversized":
                await self.chan.write(self.ev.oversized(int(f.params["bytes"]) // 4 * 4))
            elif k == "drop":
                r.truth.status = "dropped"
                self.info.truth.outcome = "dropped"
                abort_rst(self.ws)
                raise ConnectionClosed(None, None)
            elif k == "close_1011":
                r.truth.status = "closed"
                self.info.truth.outcome = "closed_1011"
                await self.chan.close(1011, "internal server error")
                raise ConnectionClosed(None, None)
            elif k in ("error_event", "response_failed"):
                code = f.params["code"]
                await self.error(code, "Rate limit reached." if code == "rate_limit_exceeded"
                                 else "The server had an error while processing your request.",
                                 "server_error" if code == "server_error" else
                                 "invalid_request_error")
                r.state, r.end_status = "stopped", "error" if k == "error_event" else "failed"
                return False
        return True

    # the skeleton's reply-task hooks: spoken replies are played by output(), not by tasks
    def cancel_wanted(self, r) -> bool:
        return False

    async def send_cancelled(self, r) -> int:
        return time.monotonic_ns()
