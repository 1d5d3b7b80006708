"""The simulator's WebRTC signalling routes (aiohttp), with aiortc as the answering peer.

- `POST /v1/realtime/calls` (and Azure's `/openai/v1/realtime/calls`): multipart `sdp` +
  `session` (or a bare `application/sdp` body) -> `201` SDP answer, `Location` = the call.
  `POST .../calls/{id}/hangup` ends it.
- `POST /v1/live/sessions` (and `/openai/v1/live/sessions`): JSON `{session, transport}` ->
  `201 {session: {id}, transport: {type, sdp}}`.

Each call runs the very WebSocket session of its API (OpenAISession / LiveSession) over an
`RtcChannel`: events in and out on the `oai-events` data channel, audio deltas out to the paced
track, decoded input in as appends. So replies, VAD, faults and truth are the WebSocket
dialect's by construction. WebRTC-only here: Realtime's output_audio_buffer.started/.stopped/
.cleared, and `rtc_onset` truth records (RTP send time of each audible onset) in the truth file
and at `GET /truth/webrtc`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time

import orjson
from aiohttp import web
from aiortc import RTCSessionDescription
from websockets.exceptions import ConnectionClosed

from .. import live_wire, openai_wire
from ..faults import RTC_KINDS
from ..live_session import LiveConnInfo, LiveSession
from ..openai_session import ConnInfo, OpenAISession
from ..truth import SessionTruth
from ..util import rand_id
from . import impair, loopback, media

log = logging.getLogger("simulator.webrtc")
#: ICE + DTLS + SCTP must bring the data channel up within this, or the call is an ice_failed
CONNECT_TIMEOUT_S = 10.0
#: after a dc_close the peer connection (and its track) stays up this long, or until hangup,
#: so a client sees the data channel close on its own, not as the call's end
DC_LINGER_S = 2.0
_AUDIO_HEADS = (b'{"type":"response.output_audio.delta"', b'{"type":"response.audio.delta"',
                b'{"type":"session.output_audio.delta"')
_DELTA = b'"delta":"'
_DONE = b'{"type":"response.done"'
_RID = b'"response_id":"'


def _field(payload: bytes, key: bytes) -> bytes | None:
    i = payload.find(key)
    if i < 0:
        return None
    i += len(key)
    return payload[i:payload.index(b'"', i)]


class RtcChannel:
    """A session's frame I/O over WebRTC, with the interface of simulator/channel.py's."""

    def __init__(self, pc, track: media.OutTrack) -> None:
        self.pc, self.track = pc, track
        self.dc = None
        self.q: asyncio.Queue = asyncio.Queue()
        self.open = True
        self.close_code: int | None = None
        self.dc_close_after: int | None = None  # the dc_close fault: audio deltas before it
        self.deltas = 0
        self.dc_closed_ns: int | None = None
        self.hung_up = asyncio.Event()
        self.rec: tuple[dict, impair.Impairment | None] | None = None  # for the truth

    def feed(self, raw: bytes, t: int) -> None:
        self.q.put_nowait((raw, t))

    def lost(self) -> None:
        """The peer went away (or closed): the session's receive loop ends."""
        if self.open:
            self.open = False
            self.close_code = self.close_code or 1006
            self.q.put_nowait(None)

    async def recv(self) -> tuple[bytes, int]:
        item = await self.q.get()
        if item is None:
            self.q.put_nowait(None)
            raise ConnectionClosed(None, None)
        return item

    def send_event(self, obj: dict) -> None:
        if self.dc is not None and self.dc.readyState == "open":
            obj["event_id"] = "event_" + rand_id(21)
            self.dc.send(orjson.dumps(obj).decode())

    async def write(self, payload: bytes) -> int:
        t = time.monotonic_ns()
        if not self.open or self.dc is None or self.dc.readyState != "open":
            raise ConnectionClosed(None, None)
        if payload.startswith(_AUDIO_HEADS):
            if self.dc_close_after is not None and self.deltas >= self.dc_close_after:
                self.close_dc()
                raise ConnectionClosed(None, None)
            self.deltas += 1
            b64 = _field(payload, _DELTA)
            rid = _field(payload, _RID)
            if b64:
                self.track.push(base64.b64decode(b64), rid.decode() if rid else None)
            return t
        self.dc.send(payload.decode())
        if payload.startswith(_DONE) and b'"status":"cancelled"' in payload:
            # a barge-in or a cancel: the server drops what it had not played yet
            rid = _field(payload, b'"id":"')
            if self.track.clear():
                self.send_event({"type": "output_audio_buffer.cleared",
                                 "response_id": rid.decode() if rid else None})
        return t

    def close_dc(self) -> None:
        """The dc_close fault: the data channel closes mid-reply (an SCTP stream reset); the
        session ends with it, the peer connection lingers (DC_LINGER_S)."""
        self.dc_closed_ns = time.monotonic_ns()
        self.close_code = self.close_code or 1006
        self.dc.close()
        self.lost()

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        self.lost()
        self.hung_up.set()
        await self.pc.close()


class _Given:
    """Stands in for Session.CHANNELS: the 'connection' handed over already is the channel."""

    take_over = staticmethod(lambda ws, _max: ws)

    def __new__(cls, ws, _max):
        return ws


class RtcOpenAISession(OpenAISession):
    CHANNELS = (_Given, _Given)

    async def on_output_audio_clear(self, msg: dict, t: int) -> None:
        self.chan.track.clear()
        await self.send({"type": "output_audio_buffer.cleared",
                         "response_id": getattr(self.active, "id", None)})


class RtcLiveSession(LiveSession):
    CHANNELS = (_Given, _Given)


def _key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return request.headers.get("api-key") or None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "code": code,
                                        "message": message, "param": None}}, status=status)


class WebRtcApp:
    """The routes and the calls in progress (by call id)."""

    def __init__(self, state) -> None:
        self.state = state
        self.calls: dict[str, RtcChannel] = {}
        self.onsets: collections.deque[dict] = collections.deque(maxlen=100_000)
        #: per call: its WebRTC faults and (live) RTP counters, for GET /truth/webrtc
        self.call_recs: collections.deque[tuple[dict, impair.Impairment | None]] = \
            collections.deque(maxlen=100_000)
        self.tasks: set[asyncio.Task] = set()
        self._blackhole = None  # the ice_fail fault's UDP socket that answers nothing

    def app(self) -> web.Application:
        a = web.Application(client_max_size=4 * 1024 * 1024)
        for prefix in ("/v1", "/openai/v1"):
            a.router.add_post(prefix + "/realtime/calls", self.realtime_call)
            a.router.add_post(prefix + "/realtime/calls/{call_id}/hangup", self.hangup)
            a.router.add_post(prefix + "/live/sessions", self.live_session)
        a.router.add_get("/truth/webrtc", self.truth)
        a.on_shutdown.append(self.shutdown)
        return a

    def _check_key(self, request: web.Request) -> web.Response | None:
        key, keys = _key(request), self.state.options.api_keys
        if key is None:
            return _error(401, "missing_api_key", "You didn't provide an API key.")
        if keys and key not in keys:
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        return None

    # ---- routes -------------------------------------------------------------------------------

    async def realtime_call(self, request: web.Request) -> web.Response:
        t0 = time.monotonic_ns()
        if (refused := self._check_key(request)) is not None:
            return refused
        sdp, session = None, {}
        if request.content_type == "application/sdp":
            sdp = await request.text()
        elif request.content_type == "multipart/form-data":
            async for part in await request.multipart():
                if part.name == "sdp":
                    sdp = (await part.read()).decode()
                elif part.name == "session":
                    try:
                        session = orjson.loads(await part.read())
                    except orjson.JSONDecodeError:
                        return _error(400, "invalid_json", "The session part is not JSON.")
        if not sdp or not isinstance(session, dict):
            return _error(400, "invalid_request", "An SDP offer (part 'sdp') is required.")
        model = str(session.pop("model", None) or "gpt-realtime")
        profile = self.state.profiles.for_model(model)
        truth = SessionTruth(None, model, request.path, "webrtc", t0)
        info = ConnInfo(model, request.path, True, profile, truth, [])
        faults = self._faults(profile, model, truth)

        def make(chan):
            s = RtcOpenAISession(self.state, chan, info)
            chan.track.on_started = lambda rid: chan.send_event(
                {"type": "output_audio_buffer.started", "response_id": rid})
            chan.track.on_stopped = lambda rid: chan.send_event(
                {"type": "output_audio_buffer.stopped", "response_id": rid})
            if session:
                chan.feed(orjson.dumps({"type": "session.update", "session": session}), t0)
            return s

        answer, call_id = await self._answer(sdp, truth, make, faults)
        loc = f"{request.path}/{call_id}"
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": loc})

    async def live_session(self, request: web.Request) -> web.Response:
        t0 = time.monotonic_ns()
        if (refused := self._check_key(request)) is not None:
            return refused
        try:
            doc = orjson.loads(await request.read())
            transport, session = doc["transport"], doc.get("session") or {}
            sdp = transport["sdp"]
            if transport.get("type") != "webrtc" or not isinstance(sdp, str):
                raise TypeError
            session = dict(session)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _error(400, "invalid_request", "Expected {session, transport: {type: "
                          "webrtc, sdp}}.")
        audio = dict(session.get("audio") or {})
        audio["format"] = {"type": "audio/pcm", "rate": media.RATE}  # the track's own PCM
        session["audio"] = audio
        profile = self.state.profiles.for_model(None)
        truth = SessionTruth(None, "", request.path, "webrtc-live", t0)
        info = LiveConnInfo(request.path, profile, truth)
        faults = self._faults(profile, "", truth)

        def make(chan):
            chan.feed(orjson.dumps({"type": "session.start", "session": session}), t0)
            return RtcLiveSession(self.state, chan, info)

        answer, call_id = await self._answer(sdp, truth, make, faults)
        return web.json_response({"session": {"id": call_id, "object": "live.session"},
                                  "transport": {"type": "webrtc", "sdp": answer}}, status=201)

    async def hangup(self, request: web.Request) -> web.Response:
        if (refused := self._check_key(request)) is not None:
            return refused
        chan = self.calls.get(request.match_info["call_id"])
        if chan is None:
            return _error(404, "not_found", "No such call.")
        await chan.close(1000, "hangup")
        return web.json_response({}, status=200)

    async def truth(self, request: web.Request) -> web.Response:
        sid = request.query.get("session_id")
        calls = [_call_json(rec, imp) for rec, imp in self.call_recs
                 if sid is None or rec["session_id"] == sid]
        return web.json_response({"onsets": [r for r in self.onsets
                                             if sid is None or r["session_id"] == sid],
                                  "calls": calls})

    def _faults(self, profile, model: str, truth: SessionTruth) -> list:
        faults = self.state.faults.pick(profile, model, RTC_KINDS)
        truth.faults = [f.record() for f in faults]
        return faults

    async def _blackhole_port(self) -> int:
        """A UDP socket on the ICE address that reads and drops everything (a firewalled
        candidate): the ice_fail fault's answers point their candidates at it."""
        if self._blackhole is None:
            self._blackhole, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(loopback.restricted_to(), 0))
        return self._blackhole.get_extra_info("sockname")[1]

    # ---- the answering peer -------------------------------------------------------------------

    async def _answer(self, offer_sdp: str, truth: SessionTruth, make,
                      faults: list) -> tuple[str, str]:
        """Answer the offer; the session starts once the data channel is open."""
        pc = loopback.peer()
        track = media.OutTrack()
        chan = RtcChannel(pc, track)
        arrivals = media.Arrivals()
        dc_open: asyncio.Future = asyncio.get_running_loop().create_future()
        session = make(chan)
        call_id = session.id
        truth.session_id = call_id
        kinds = {f.kind: f for f in faults}
        imp = impair.from_faults(faults, self.state.faults.rng)
        chan.rec = ({"session_id": call_id, "faults": truth.faults}, imp)
        self.call_recs.append(chan.rec)
        if "ice_fail" in kinds:
            return await self._ice_fail(pc, offer_sdp, truth), call_id
        if "dc_close" in kinds:
            chan.dc_close_after = int(kinds["dc_close"].params["after_deltas"])

        @pc.on("datachannel")
        def on_dc(dc):
            if dc.label != "oai-events" or chan.dc is not None:
                return
            chan.dc = dc
            dc.on("message", lambda m: chan.feed(m.encode() if isinstance(m, str) else m,
                                                 time.monotonic_ns()))
            dc.on("close", chan.lost)
            if not dc_open.done():
                dc_open.set_result(None)

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                chan.lost()
                if not dc_open.done():
                    dc_open.set_exception(ConnectionError(f"connection {pc.connectionState}"))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        appended = (openai_wire.APPEND_HEAD if isinstance(session, OpenAISession)
                    else live_wire.APPEND_HEAD)
        for tr in pc.getTransceivers():
            if tr.kind == "audio":
                pc.addTrack(track)
                if tr.receiver.track is not None:  # None: a receive-only caller sends nothing
                    media.hook_arrivals(tr.receiver, arrivals)
                    self._spawn(media.read_input(
                        tr.receiver.track, arrivals,
                        lambda pcm, t: chan.feed(appended + base64.b64encode(pcm) + b'"}', t)))
                break
        await pc.setLocalDescription(await pc.createAnswer())
        for tr in pc.getTransceivers():
            if tr.sender.track is track:
                media.hook_send(tr.sender.transport, track, imp)

        def onset(rec: dict) -> None:
            rec["session_id"] = call_id
            self.onsets.append(rec)
            self.state.truth._write("rtc_onset", rec)

        track.on_onset = onset
        self.calls[call_id] = chan
        self._spawn(self._run(session, chan, dc_open, truth))
        return pc.localDescription.sdp, call_id

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(self, session, chan: RtcChannel, dc_open, truth: SessionTruth) -> None:
        st = self.state
        try:
            try:
                await asyncio.wait_for(dc_open, CONNECT_TIMEOUT_S)
            except (TimeoutError, ConnectionError):
                truth.outcome = "ice_failed"
                return
            st.active_sessions += 1
            st.total_sessions += 1
            try:
                await session.run()
            finally:
                st.active_sessions -= 1
        except Exception:
            log.exception("simulator: WebRTC session crashed")
        finally:
            chan.lost()
            if chan.dc_closed_ns is not None:
                truth.outcome = "dc_closed"
                try:
                    await asyncio.wait_for(chan.hung_up.wait(), DC_LINGER_S)
                except TimeoutError:
                    pass
            self.calls.pop(truth.session_id, None)
            await chan.pc.close()
            if chan.rec is not None and chan.rec[0]["faults"]:
                st.truth._write("rtc_call", _call_json(*chan.rec))
            if truth.closed_ns is None:
                truth.closed_ns = time.monotonic_ns()
            st.truth.session(truth)

    async def _ice_fail(self, pc, offer_sdp: str, truth: SessionTruth) -> str:
        """The ice_fail fault: a well-formed answer (ufrag, fingerprint, codecs) whose every
        candidate is a UDP port that never answers; our own peer is closed before it could
        send a check (whose source the client would learn as a peer-reflexive candidate)."""
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        sdp = pc.localDescription.sdp
        await pc.close()
        port = await self._blackhole_port()
        lines = []
        for line in sdp.split("\r\n"):
            if line.startswith("a=candidate:"):
                parts = line.split(" ")
                parts[5] = str(port)
                line = " ".join(parts)
            lines.append(line)
        truth.outcome = "ice_failed"
        truth.closed_ns = time.monotonic_ns()
        self.state.truth.session(truth)
        return "\r\n".join(lines)

    async def shutdown(self, _app=None) -> None:
        for chan in list(self.calls.values()):
            await chan.close(1001, "server shutting down")
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)
        if self._blackhole is not None:
            self._blackhole.close()


def _call_json(rec: dict, imp: impair.Impairment | None) -> dict:
    return {**rec, **(imp.record() if imp is not None else {})}


async def http_serve(state, host: str, port: int) -> tuple[web.AppRunner, WebRtcApp, int]:
    """Start the HTTP side; returns the runner (await .cleanup() to stop), the app and the port."""
    loopback.restrict(host if host not in ("0.0.0.0", "localhost") else "127.0.0.1")
    rtc = WebRtcApp(state)
    runner = web.AppRunner(rtc.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, rtc, site._server.sockets[0].getsockname()[1]
