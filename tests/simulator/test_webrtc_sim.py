"""An independent WebRTC client (aiortc directly, not the engine) against the simulator's
WebRTC routes: offer -> 201 answer -> ICE/DTLS over loopback -> a spoken turn on a paced track,
events on `oai-events`, the reply's audio decoded, and the simulator's truth checked against it.

Every peer is built under simulator.webrtc.loopback (no STUN server, candidates on 127.0.0.1
only), and every offer and answer is checked to carry loopback candidates only.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import aiohttp
import av
import numpy as np
import orjson
import pytest
from aiortc import MediaStreamTrack, RTCSessionDescription

from simulator.webrtc import loopback
from tests.sim_server import SimProcess
from tests.timing import bounded

pytestmark = pytest.mark.slow
loopback.restrict("127.0.0.1")

RATE = 24000
FRAME = 480  # 20 ms
TURN_TIMEOUT_S = 20


def tone(ms: int, amp: float = 0.3, hz: float = 440.0) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return (amp * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


class Caller(MediaStreamTrack):
    """Paced 20 ms frames: silence, one utterance, then silence for ever (the track never ends).
    `speech_end_ns` is when the frame holding the last speech sample was due."""

    kind = "audio"

    def __init__(self, lead_ms: int = 400, speech_ms: int = 800):
        super().__init__()
        self.pcm = bytes(RATE * lead_ms // 500) + tone(speech_ms)
        self.speech_frames = len(self.pcm) // (FRAME * 2)
        self.pts = 0
        self.t0 = None
        self.speech_end_ns = None

    async def recv(self):
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self.pts / RATE
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        i = self.pts // FRAME
        chunk = self.pcm[i * FRAME * 2:(i + 1) * FRAME * 2] or bytes(FRAME * 2)
        chunk += bytes(FRAME * 2 - len(chunk))
        if i == self.speech_frames - 1:
            self.speech_end_ns = int(due * 1e9)
        f = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        f.planes[0].update(chunk)
        f.pts, f.sample_rate, f.time_base = self.pts, RATE, Fraction(1, RATE)
        self.pts += FRAME
        return f


class Listener:
    """Decodes the simulator's track; notes when the first audible frame came out."""

    def __init__(self, track):
        self.track = track
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self.audible_ms = 0
        self.first_audible_ns = None
        self.frames = 0

    async def run(self):
        while True:
            frame = await self.track.recv()
            for f in self.resampler.resample(frame):
                x = np.frombuffer(bytes(f.planes[0])[: f.samples * 2], "<i2").astype(np.float32)
                self.frames += 1
                if x.size and np.sqrt(np.mean(x * x)) > 32768 * 10 ** (-40 / 20):
                    self.audible_ms += f.samples * 1000 // RATE
                    if self.first_audible_ns is None:
                        self.first_audible_ns = time.monotonic_ns()


@pytest.fixture(scope="module")
def rtc_sim():
    with SimProcess(["--http-port", "0", "--ttfa-ms", "150", "--reply-s", "0.8"]) as s:
        assert s.http_url.startswith("http://127.0.0.1:")
        yield s


async def _wait_event(events: list, name: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events:
            if e["type"] == name:
                return e
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {name} within {timeout} s; got {[e['type'] for e in events]}")


async def _turn(sim: SimProcess, api: str) -> dict:
    pc = loopback.peer()
    caller = Caller()
    pc.addTrack(caller)
    dc = pc.createDataChannel("oai-events")
    events: list[dict] = []
    dc.on("message", lambda m: events.append(orjson.loads(m)))
    listener: list[Listener] = []
    tasks = []

    @pc.on("track")
    def on_track(track):
        listener.append(Listener(track))
        tasks.append(asyncio.ensure_future(listener[0].run()))

    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        assert loopback.candidate_hosts(offer) and set(loopback.candidate_hosts(offer)) == {
            "127.0.0.1"}
        headers = {"Authorization": "Bearer sk-test"}
        if api == "realtime":
            form = aiohttp.FormData()
            form.add_field("sdp", offer, content_type="application/sdp")
            form.add_field("session", orjson.dumps({"type": "realtime", "model": "sim-fast"})
                           .decode(), content_type="application/json")
            async with http.post(sim.http_url + "/v1/realtime/calls", data=form,
                                 headers={**headers, "Accept": "application/sdp"}) as r:
                assert r.status == 201, await r.text()
                answer, call_id = await r.text(), r.headers["Location"].rsplit("/", 1)[-1]
        else:
            body = {"session": {"model": "gpt-live-1", "delegation": {"type": "client"}},
                    "transport": {"type": "webrtc", "sdp": offer}}
            async with http.post(sim.http_url + "/v1/live/sessions", json=body,
                                 headers=headers) as r:
                assert r.status == 201, await r.text()
                doc = await r.json()
                answer, call_id = doc["transport"]["sdp"], doc["session"]["id"]
        assert loopback.candidate_hosts(answer) and set(loopback.candidate_hosts(answer)) == {
            "127.0.0.1"}
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        ready = "session.created" if api == "realtime" else "session.started"
        await _wait_event(events, ready, 10)
        if api == "realtime":
            done = await _wait_event(events, "response.done", TURN_TIMEOUT_S)
            assert done["response"]["status"] == "completed"
            await _wait_event(events, "output_audio_buffer.stopped", 5)
        else:
            await _wait_event(events, "session.output_transcript.delta", TURN_TIMEOUT_S)
            await asyncio.sleep(1.2)  # the reply plays out in real time
        async with http.get(sim.http_url + "/truth/webrtc", params={"session_id": call_id}) as r:
            onsets = (await r.json())["onsets"]
        if api == "realtime":
            async with http.post(sim.http_url + f"/v1/realtime/calls/{call_id}/hangup",
                                 headers=headers) as r:
                assert r.status == 200
        return {"events": events, "listener": listener[0] if listener else None,
                "caller": caller, "onsets": onsets, "call_id": call_id}
    finally:
        for t in tasks:
            t.cancel()
        await pc.close()
        await http.close()


def _realtime_timing(rtc_sim, out) -> list[str]:
    """The turn's timing bounds (misses as text): what a CPU-starved peer can miss."""
    lis, caller = out["listener"], out["caller"]
    onsets = [o for o in out["onsets"] if o["response_id"]]
    if lis is None or lis.first_audible_ns is None or len(onsets) != 1:
        return []  # not a timing question: the asserts below say what is wrong
    (turn,) = rtc_sim.turns(out["call_id"])
    lag_ms = (lis.first_audible_ns - onsets[0]["rtp_send_ns"]) / 1e6
    tick_ms = (onsets[0]["rtp_send_ns"] - turn["first_audio_ns"]) / 1e6
    heard_ms = (turn["speech_end_ns"] - caller.speech_end_ns) / 1e6
    bad = []
    if not 0 < lag_ms < 250:  # loopback + aiortc's jitter buffer and decode
        bad.append(f"RTP send -> first audible decode {lag_ms:.1f} ms, not in (0, 250)")
    if not 0 <= tick_ms < 40:  # within a track tick (20 ms) of the delta the session wrote
        bad.append(f"delta written -> onset's RTP send {tick_ms:.1f} ms, not in [0, 40)")
    if not 0 < heard_ms < 70:  # the codecs' and resamplers' delay only, not the jitter buffer
        bad.append(f"caller's speech end -> heard {heard_ms:.1f} ms, not in (0, 70)")
    return bad


def test_realtime_turn_over_webrtc(rtc_sim):
    out = bounded(lambda: asyncio.run(asyncio.wait_for(_turn(rtc_sim, "realtime"), 40)),
                  lambda o: _realtime_timing(rtc_sim, o), pids=[rtc_sim.pid], budget_ms=20,
                  what="WebRTC turn timing")
    types = [e["type"] for e in out["events"]]
    # the WebSocket dialect's events, on the data channel, in order; no audio deltas on it
    for a, b in [("session.created", "session.updated"),
                 ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"),
                 ("input_audio_buffer.speech_stopped", "response.created"),
                 ("response.created", "output_audio_buffer.started"),
                 ("output_audio_buffer.started", "response.done")]:
        assert a in types and b in types and types.index(a) < types.index(b), (a, b, types)
    assert "response.output_audio.delta" not in types
    lis, caller = out["listener"], out["caller"]
    # the 0.8 s reply, decoded: most of it above -40 dBFS, and never more than was sent
    assert lis is not None and 400 <= lis.audible_ms <= 900, lis.audible_ms
    # truth: the RTP send of the first audible frame, before the client decoded it
    (onset,) = [o for o in out["onsets"] if o["response_id"]]
    assert onset["response_id"] == next(e for e in out["events"]
                                        if e["type"] == "response.created")["response"]["id"]
    lag_ms = (lis.first_audible_ns - onset["rtp_send_ns"]) / 1e6
    assert 0 < lag_ms < 250, lag_ms  # loopback + aiortc's jitter buffer and decode
    (turn,) = rtc_sim.turns(out["call_id"])
    # the onset's RTP packet left within a track tick (20 ms) of the delta the session wrote
    assert 0 <= onset["rtp_send_ns"] - turn["first_audio_ns"] < 40e6
    # speech end heard is stamped on RTP arrival, not after the jitter buffer (~80 ms more):
    # it trails the caller's last speech frame by the codecs' and resamplers' delay only
    heard_ms = (turn["speech_end_ns"] - caller.speech_end_ns) / 1e6
    assert 0 < heard_ms < 70, heard_ms


def test_live_turn_over_webrtc(rtc_sim):
    out = asyncio.run(asyncio.wait_for(_turn(rtc_sim, "live"), 40))
    types = [e["type"] for e in out["events"]]
    assert types[0] == "session.started" and "session.output_audio.delta" not in types
    assert "session.input_transcript.delta" in types
    lis = out["listener"]
    assert lis is not None and 400 <= lis.audible_ms <= 900 and out["onsets"], lis.audible_ms
    lag_ms = (lis.first_audible_ns - out["onsets"][0]["rtp_send_ns"]) / 1e6
    assert 0 < lag_ms < 250, lag_ms
