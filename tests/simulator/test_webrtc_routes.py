"""The simulator's WebRTC routes off the happy path, in process: auth, bad bodies, unknown calls,
a call whose ICE never completes; and the loopback restriction every peer is built under."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import aioice.ice
import orjson
import pytest
from aioice.candidate import Candidate

from simulator.profiles import ProfileBook
from simulator.state import SimOptions, SimState
from simulator.truth import TruthLog
from simulator.webrtc import app as rtc_app
from simulator.webrtc import loopback

loopback.restrict("127.0.0.1")


async def _served(keys=(), **body):
    st = SimState(ProfileBook(), SimOptions(list(keys)), TruthLog())
    runner, rtc, port = await rtc_app.http_serve(st, "127.0.0.1", 0)
    return st, runner, rtc, f"http://127.0.0.1:{port}"


def test_restriction_gathers_and_accepts_loopback_only():
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]

    async def go():
        conn = aioice.ice.Connection(ice_controlling=True)
        far = Candidate("1", 1, "udp", 100, "10.1.2.3", 5000, "host")
        mdns = Candidate("2", 1, "udp", 100, "abc.local", 5000, "host")
        near = Candidate("3", 1, "udp", 100, "127.0.0.1", 5000, "host")
        for c in (far, mdns, near):
            await conn.add_remote_candidate(c)
        hosts = [c.host for c in conn.remote_candidates]
        await conn.close()
        return hosts

    assert asyncio.run(go()) == ["127.0.0.1"]


def test_peer_never_asks_the_default_stun_server(monkeypatch):
    """aiortc falls back to a public STUN server when a peer has no ICE servers configured:
    make that fallback fail loudly and gather candidates with a peer() peer."""
    from aiortc.rtcicetransport import RTCIceGatherer

    def no_default(cls):
        raise AssertionError("the default (public) STUN server was asked for")

    monkeypatch.setattr(RTCIceGatherer, "getDefaultIceServers", classmethod(no_default))

    async def go():
        pc = loopback.peer()
        pc.addTransceiver("audio")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            return loopback.candidate_hosts(pc.localDescription.sdp)
        finally:
            await pc.close()

    hosts = asyncio.run(asyncio.wait_for(go(), 10))
    assert hosts and set(hosts) == {"127.0.0.1"}


def test_auth_bad_bodies_unknown_call():
    async def go():
        st, runner, rtc, base = await _served(keys=["good"])
        out = {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                for name, path, kw in [
                    ("nokey", "/v1/realtime/calls", {"data": b"v=0"}),
                    ("badkey", "/v1/live/sessions", {"json": {}, "headers": {
                        "Authorization": "Bearer wrong"}}),
                    ("nosdp", "/v1/realtime/calls", {"data": b"", "headers": {
                        "Authorization": "Bearer good"}}),
                    ("livebad", "/v1/live/sessions", {"json": {"transport": {"type": "sip"}},
                                                      "headers": {"api-key": "good"}}),
                    ("hangup404", "/v1/realtime/calls/rtc_nope/hangup", {"headers": {
                        "Authorization": "Bearer good"}}),
                ]:
                    async with http.post(base + path, **kw) as r:
                        out[name] = (r.status, (await r.json())["error"]["code"])
        finally:
            await runner.cleanup()
        return out

    out = asyncio.run(asyncio.wait_for(go(), 20))
    assert out == {"nokey": (401, "missing_api_key"), "badkey": (401, "invalid_api_key"),
                   "nosdp": (400, "invalid_request"), "livebad": (400, "invalid_request"),
                   "hangup404": (404, "not_found")}


@pytest.mark.slow
def test_unconnected_call_ends_ice_failed(monkeypatch):
    """An offer answered but never connected: the call ends `ice_failed` after the timeout."""
    monkeypatch.setattr(rtc_app, "CONNECT_TIMEOUT_S", 0.5)
    async def go():
        st, runner, rtc, base = await _served()
        pc = loopback.peer()
        pc.addTransceiver("audio")
        pc.createDataChannel("oai-events")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            async with aiohttp.ClientSession() as http:
                async with http.post(base + "/v1/live/sessions", headers={
                        "Authorization": "Bearer x"}, json={
                        "session": {"model": "gpt-live-1"},
                        "transport": {"type": "webrtc", "sdp": pc.localDescription.sdp}}) as r:
                    assert r.status == 201
                    sid = (await r.json())["session"]["id"]
            # the client never applies the answer: no ICE checks ever reach the simulator
            await asyncio.sleep(1.0)
            return sid, list(st.truth.sessions)
        finally:
            await pc.close()
            await runner.cleanup()

    sid, sessions = asyncio.run(asyncio.wait_for(go(), 20))
    (rec,) = [s for s in sessions if s["session_id"] == sid]
    assert rec["outcome"] == "ice_failed"


@pytest.mark.parametrize("sdp, hosts", [
    ("v=0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"
     "a=candidate:2 1 udp 1 10.0.0.2 5001 typ host\r\n", ["127.0.0.1", "10.0.0.2"]),
    ("v=0\r\n", []),
])
def test_candidate_hosts(sdp, hosts):
    assert loopback.candidate_hosts(sdp) == hosts


def test_cancelled_reply_clears_the_track():
    """response.done cancelled drops the audio not yet played and says so (cleared, no stopped);
    audio deltas never go on the data channel."""
    from simulator.webrtc.media import OutTrack

    class DC:
        readyState = "open"

        def __init__(self):
            self.sent = []

        def send(self, m):
            self.sent.append(orjson.loads(m))

    stopped = []
    track = OutTrack(on_stopped=stopped.append)
    chan = rtc_app.RtcChannel(pc=None, track=track)
    chan.dc = DC()
    delta = (b'{"type":"response.output_audio.delta","event_id":"e1","response_id":"resp_1",'
             b'"item_id":"i","output_index":0,"content_index":0,"delta":"'
             + base64.b64encode(bytes(9600)) + b'"}')

    async def go():
        await chan.write(delta)
        assert len(track.buf) == 9600 and chan.dc.sent == []
        await track.recv()  # playing now
        await chan.write(orjson.dumps({"type": "response.done", "event_id": "e2", "response": {
            "object": "realtime.response", "id": "resp_1", "status": "cancelled"}}))
        await track.recv()

    asyncio.run(go())
    assert [m["type"] for m in chan.dc.sent] == ["response.done", "output_audio_buffer.cleared"]
    assert chan.dc.sent[1]["response_id"] == "resp_1"
    assert not track.buf and stopped == []


def test_an_onset_counts_the_quiet_sound_before_it():
    """A reply that starts in a pause between words plays frames of sound under the gate before
    its audible onset: the onset record says how many (`lead_frames`), digital silence before
    them not counted; a reply that starts loud has none. 40 ms of pacing per reply."""
    import numpy as np

    from simulator.webrtc.media import FRAME_BYTES, SAMPLES, OutTrack

    def frames(dbfs: float, n: int) -> bytes:
        amp = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)  # a sine's RMS is amp / sqrt(2)
        x = amp * np.sin(2 * np.pi * 440 * np.arange(SAMPLES * n) / 24000)
        return x.astype("<i2").tobytes()

    track = OutTrack()

    async def onset_after(pcm: bytes) -> dict:
        track.push(pcm, "r")
        recs = []
        for _ in range(len(pcm) // FRAME_BYTES):
            await track.recv()
            if track.pending_onset is not None:
                recs.append(track.pending_onset)
                track.pending_onset = None
        (rec,) = recs
        return rec

    async def go():
        quiet = await onset_after(frames(-52, 3) + frames(-20, 2))
        for _ in range(16):  # 320 ms of digital silence: the next loud frame is an onset again
            await track.recv()
        loud = await onset_after(frames(-20, 2))
        return quiet, loud

    quiet, loud = asyncio.run(go())
    assert quiet["lead_frames"] == 3 and quiet["level_dbfs"] == pytest.approx(-20, abs=0.1)
    assert loud["lead_frames"] == 0
    assert track.frames == 3 + 2 + 16 + 2 and track.audible_frames == 4
