"""The simulator's WebRTC faults, observed by an independent aiortc client over loopback:
`rtp_loss` counted from the RTP sequence numbers the client receives, `rtp_jitter` as the
client's RFC 3550 interarrival jitter (probes/rtp_stats.py, fed on packet arrival, before the
jitter buffer), `ice_fail` (the answer comes, ICE never completes), `dc_close` (the data channel
closes mid-reply). Plus the drop/hold decisions themselves with plain data and a fixed seed.

Loss and jitter run several calls at once, so the ≥ 2,000 packets take a few seconds of
wall time instead of the 40 s one 50 packet/s call would need. The clients offer receive-only
audio: the simulator's track is what is measured, and a client that sends nothing halves the
codec work on this shared machine.
"""

from __future__ import annotations

import asyncio
import math
import random
import time

import aiohttp
import av
import numpy as np
import orjson
import pytest
from aiortc import RTCSessionDescription

from probes.rtp_stats import RtpStats
from simulator.faults import Fault, FaultError
from simulator.webrtc import loopback
from simulator.webrtc.impair import Impairment, burst_start_probability, from_faults
from tests.sim_server import SimProcess
from tests.simulator.test_webrtc_sim import Listener, _wait_event
from tests.timing import bounded

loopback.restrict("127.0.0.1")
KEY = {"Authorization": "Bearer sk-test"}


# ---- the decisions, with plain data ---------------------------------------------------------


def _runs(drops: list[bool]) -> list[int]:
    out, n = [], 0
    for d in drops:
        if d:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out + ([n] if n else [])


@pytest.mark.parametrize("rate, burst", [(0.05, 1), (0.05, 4), (0.2, 3), (0.0, 1), (1.0, 2)])
def test_loss_decisions_drop_the_rate_in_runs_of_burst(rate, burst):
    imp = Impairment(random.Random(1234), loss_rate=rate, burst=burst)
    n = 200_000
    drops = [imp.decide() is None for _ in range(n)]
    assert imp.packets == n and imp.dropped == sum(drops)
    # the long-run fraction is the rate, for any burst length: 4 sigma of the runs' count
    runs = _runs(drops)
    sigma = math.sqrt(rate * (1 - rate) * burst / n)
    assert abs(sum(drops) / n - rate) <= 4 * sigma + 1e-9, (sum(drops) / n, rate)
    if 0 < rate < 1:
        # runs are exactly `burst` long, except where two happen to abut (p = q per packet)
        q = burst_start_probability(rate, burst)
        abutting = sum(1 for r in runs if r != burst)
        assert all(r % burst == 0 for r in runs)
        assert abutting <= 4 * q * len(runs) + 10, (abutting, len(runs))
    # a fixed seed falls the same way
    again = Impairment(random.Random(1234), loss_rate=rate, burst=burst)
    assert [again.decide() is None for _ in range(n)] == drops


def test_hold_decisions_are_uniform_in_the_window():
    imp = Impairment(random.Random(7), min_ms=5.0, max_ms=45.0)
    holds = np.array([imp.decide() for _ in range(100_000)]) * 1000
    assert holds.min() >= 5.0 and holds.max() <= 45.0
    assert abs(holds.mean() - 25.0) < 0.3 and abs(holds.std() - 40 / math.sqrt(12)) < 0.3
    assert imp.held == 100_000 and imp.dropped == 0
    # loss and jitter together: a dropped packet draws no hold
    both = Impairment(random.Random(7), loss_rate=0.1, burst=1, max_ms=20.0)
    out = [both.decide() for _ in range(50_000)]
    assert both.dropped == out.count(None) and both.held == 50_000 - both.dropped


def test_fault_params_are_checked_and_seed_the_call_dice():
    for spec, msg in [({"kind": "rtp_loss", "rate": 1.5}, r"fault\.rate: expected a fraction"),
                      ({"kind": "rtp_loss", "burst": 0}, r"fault\.burst: expected an integer"),
                      ({"kind": "rtp_loss", "burst": 2.5}, r"fault\.burst: expected an integer"),
                      ({"kind": "rtp_jitter", "min_ms": 30, "max_ms": 10},
                       r"fault\.min_ms/max_ms"),
                      ({"kind": "dc_close", "after_deltas": -1}, r"fault\.after_deltas"),
                      ({"kind": "ice_fail", "per": "turn"}, r"fault\.per: ice_fail is decided "
                                                           r"per call")]:
        with pytest.raises(FaultError, match=msg):
            Fault.parse(spec)
    spec = {"kind": "rtp_loss", "rate": 0.1, "burst": 2, "seed": 5}

    def calls(shared_seed):
        f = Fault.parse(spec, now_ns=0)
        shared = random.Random(shared_seed)
        return [[from_faults([f], shared).decide() for _ in range(300)] for _ in range(3)]

    a, b = calls(1), calls(2)
    assert a == b and a[0] != a[1]  # the fault's seed decides, each call its own dice
    assert Fault.parse({"kind": "rtp_jitter"}).params == {"min_ms": 0.0, "max_ms": 30.0}
    assert from_faults([Fault.parse({"kind": "dc_close"})], random.Random()) is None


def _expected_jitter_ms(min_ms: float, max_ms: float, n: int = 40_000) -> float:
    """What RFC 3550 makes of independent uniform holds on a 20 ms packet train: the holds
    reorder packets once the window is wider than 20 ms, so compute it, in arrival order, with
    the same arithmetic the client uses (time-averaged, past the filter's warm-up)."""
    rng = np.random.default_rng(99)
    send = np.arange(n) * 0.020 + rng.uniform(min_ms, max_ms, n) / 1000
    stats, js = RtpStats(48000), []
    for i in np.argsort(send, kind="stable"):
        stats.packet(int(i) & 0xFFFF, int(i) * 960, float(send[i]))
        js.append(stats.jitter_ms)
    return float(np.mean(js[100:]))


def test_expected_jitter_matches_the_closed_form_without_reordering():
    # a window no wider than the packet interval reorders nothing: E|d1 - d2| = width / 3
    assert _expected_jitter_ms(0, 18) == pytest.approx(6.0, rel=0.03)
    assert _expected_jitter_ms(10, 25) == pytest.approx(5.0, rel=0.03)
    # wider, reordering: more than width / 3 (a pair that swapped places has timestamps that run
    # backwards by a packet interval while it arrives close together)
    assert _expected_jitter_ms(0, 60) > 20 * 1.05


# ---- over loopback, against the simulator process --------------------------------------------


class Call:
    """One receive-only Realtime call: events from `oai-events`, every RTP packet of the
    simulator's track noted on arrival (before the jitter buffer). `window()` counts the packets
    whose sequence numbers lie within those that arrived while `counting`, in arrival order,
    late ones included: a packet held past either end of the window is not a gap."""

    def __init__(self) -> None:
        self.pc = loopback.peer()
        self.tr = self.pc.addTransceiver("audio", direction="recvonly")
        self.dc = self.pc.createDataChannel("oai-events")
        self.events: list[dict] = []
        self.dc.on("message", lambda m: self.events.append(orjson.loads(m)))
        self.dc_closed_ns: int | None = None
        self.dc.on("close", self._dc_close)
        self.raw: list[tuple[int, int, float]] = []  # (sequence number, timestamp, arrival s)
        self.payloads: dict[int, bytes] | None = None  # by sequence number, when asked for
        self.marks: list[int] = []  # len(raw) when counting started / stopped
        self.stats = RtpStats(48000)
        self.jitter_ms: list[float] = []
        self.gaps: set[int] = set()
        self.call_id = ""
        self.answer = ""
        orig = self.tr.receiver._handle_rtp_packet

        async def on_rtp(packet, arrival_time_ms):
            self.raw.append((packet.sequence_number, packet.timestamp, time.monotonic()))
            if self.payloads is not None:
                self.payloads[packet.sequence_number] = packet.payload
            await orig(packet, arrival_time_ms)

        self.tr.receiver._handle_rtp_packet = on_rtp
        self.listener: Listener | None = None
        self.tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track):
            self.listener = Listener(track)
            self.tasks.append(asyncio.ensure_future(self.listener.run()))

    def mark(self) -> None:
        self.marks.append(len(self.raw))

    def window(self) -> None:
        """Fill `stats` and `jitter_ms` (J after each packet) from the counting window."""
        seq0 = self.raw[0][0]

        def rel(seq: int) -> int:  # sequence numbers wrap; a call is far shorter than 2^15
            return (seq - seq0 + (1 << 15)) % (1 << 16) - (1 << 15)

        a, b = self.marks
        lo = min(rel(q) for q, _, _ in self.raw[a:b])
        hi = max(rel(q) for q, _, _ in self.raw[a:b])
        got = set()
        for q, ts, t in self.raw:
            if lo <= rel(q) <= hi:
                self.stats.packet(q, ts, t)
                self.jitter_ms.append(self.stats.jitter_ms)
                got.add(rel(q))
        self.gaps = set(range(lo, hi + 1)) - got
        self.rel, self.lo, self.hi = rel, lo, hi

    def injected(self, dropped_seqs: list[int]) -> set[int]:
        """The simulator's drops that fall within the window (as relative sequence numbers)."""
        return {r for r in map(self.rel, dropped_seqs) if self.lo <= r <= self.hi}

    def _dc_close(self) -> None:
        self.dc_closed_ns = self.dc_closed_ns or time.monotonic_ns()

    async def offer(self, http: aiohttp.ClientSession, base: str, model: str = "sim-fast"):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        form = aiohttp.FormData()
        form.add_field("sdp", self.pc.localDescription.sdp, content_type="application/sdp")
        form.add_field("session", orjson.dumps({"type": "realtime", "model": model}).decode(),
                       content_type="application/json")
        async with http.post(base + "/v1/realtime/calls", data=form,
                             headers={**KEY, "Accept": "application/sdp"}) as r:
            assert r.status == 201, await r.text()
            self.answer = await r.text()
            self.call_id = r.headers["Location"].rsplit("/", 1)[-1]
        assert set(loopback.candidate_hosts(self.answer)) == {"127.0.0.1"}
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer, type="answer"))

    async def close(self, http: aiohttp.ClientSession, base: str) -> None:
        for t in self.tasks:
            t.cancel()
        try:
            async with http.post(f"{base}/v1/realtime/calls/{self.call_id}/hangup",
                                 headers=KEY):
                pass
        finally:
            await self.pc.close()


@pytest.fixture(scope="module")
def fault_sim():
    with SimProcess(["--http-port", "0", "--ttfa-ms", "100", "--reply-s", "1.5"]) as s:
        yield s


async def _calls(sim: SimProcess, n: int, seconds: float) -> tuple[list[Call], dict]:
    """n concurrent calls, RTP counted for `seconds` once all are up; the simulator's record of
    each call (faults and what it did to the RTP) after the hangups."""
    base = sim.http_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        calls = [Call() for _ in range(n)]
        try:
            for c in calls:
                await c.offer(http, base)
            await asyncio.gather(*(_wait_event(c.events, "session.created", 10) for c in calls))
            await asyncio.sleep(0.3)  # past the first packets' start-up
            for c in calls:
                c.mark()
            await asyncio.sleep(seconds)
            for c in calls:
                c.mark()
            await asyncio.sleep(0.2)  # packets held past the window's end still arrive
            async with http.get(base + "/truth/webrtc") as r:
                recs = {rec["session_id"]: rec for rec in (await r.json())["calls"]}
        finally:
            for c in calls:
                await c.close(http, base)
    for c in calls:
        c.window()
    return calls, recs


@pytest.mark.slow
@pytest.mark.parametrize("rate, burst", [(0.05, 1), (0.04, 4)])
def test_rtp_loss_counted_by_sequence_numbers(fault_sim, rate, burst):
    n = 10
    fault_sim.clear_faults()
    fault_sim.fault(kind="rtp_loss", rate=rate, burst=burst, seed=31, count=n)
    calls, recs = asyncio.run(asyncio.wait_for(_calls(fault_sim, n, 4.5), 60))
    lost = sum(c.stats.lost for c in calls)
    expected = sum(c.stats.expected for c in calls)
    assert expected >= 2000, expected
    counted = lost / expected
    injected = sum(len(c.injected(recs[c.call_id]["rtp_dropped_seqs"])) for c in calls)
    print(f"\nrtp_loss rate {rate} burst {burst}: client counted {lost}/{expected} = "
          f"{counted:.4f}; the simulator dropped {injected} in those windows")
    # the client's gaps are exactly the packets the simulator dropped in the window ...
    for c in calls:
        rec = recs[c.call_id]
        assert rec["faults"][0]["kind"] == "rtp_loss"
        assert c.gaps == c.injected(rec["rtp_dropped_seqs"])
        assert c.stats.lost == len(c.gaps) and c.stats.late == 0 and c.stats.duplicates == 0
    # ... so the counted loss is the injected loss, and that is the configured rate: within 1 %
    # (a fixed seed; one standard deviation of the sample is sqrt(rate * burst / expected),
    # 0.5 % random and 0.8 % in bursts of 4, so the long-run rate is the unit test's business)
    assert lost == injected
    assert abs(counted - rate) <= 0.01, (counted, rate)


@pytest.mark.slow
def test_rtp_jitter_reported_by_rfc3550(fault_sim):
    n, lo, hi = 6, 0.0, 40.0
    want = _expected_jitter_ms(lo, hi)

    def run():
        fault_sim.clear_faults()
        fault_sim.fault(kind="rtp_jitter", min_ms=lo, max_ms=hi, seed=8, count=n)
        return asyncio.run(asyncio.wait_for(_calls(fault_sim, n, 4.0), 60))

    def misses(out):
        calls, _ = out
        got = float(np.mean([np.mean(c.jitter_ms[32:]) for c in calls]))
        print(f"\nrtp_jitter uniform {lo:g}..{hi:g} ms: RFC 3550 jitter {got:.2f} ms "
              f"(expected {want:.2f} ms); per call "
              f"{[round(float(np.mean(c.jitter_ms[32:])), 2) for c in calls]}")
        return [] if abs(got - want) <= 0.2 * want else [f"jitter {got:.2f} ms vs {want:.2f}"]

    calls, recs = bounded(run, misses, pids=[fault_sim.pid], budget_ms=200,
                          what="RFC 3550 jitter under rtp_jitter")
    assert sum(len(c.jitter_ms) for c in calls) >= 1000
    for c in calls:
        rec = recs[c.call_id]
        assert rec["rtp_held"] > 0 and rec["rtp_dropped"] == 0
        assert abs(rec["rtp_held_ms_mean"] - (lo + hi) / 2) < 3
        assert c.stats.lost == 0  # held, never lost: overtaken packets count as late


def _session_truth(sim: SimProcess, call_id: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        sessions = sim.truth(session_id=call_id)["sessions"]
        if sessions or time.monotonic() > deadline:
            (sess,) = sessions
            return sess
        time.sleep(0.05)


@pytest.mark.slow
def test_ice_fail_answers_but_never_connects(fault_sim):
    fault_sim.clear_faults()
    fault_sim.fault(kind="ice_fail", count=1)

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            c = Call()
            states = []
            c.pc.on("iceconnectionstatechange", lambda: states.append(
                c.pc.iceConnectionState))
            try:
                t0 = time.monotonic()
                await c.offer(http, fault_sim.http_url)  # the 201 answer still comes
                answered_s = time.monotonic() - t0
                await asyncio.sleep(3.0)
                return c, states, answered_s, c.pc.iceConnectionState
            finally:
                await c.pc.close()

    c, states, answered_s, state = asyncio.run(asyncio.wait_for(go(), 30))
    assert answered_s < 2 and loopback.candidate_hosts(c.answer)
    assert state in ("new", "checking") and "completed" not in states, (state, states)
    assert c.dc.readyState != "open" and not c.events
    sess = _session_truth(fault_sim, c.call_id)
    assert sess["outcome"] == "ice_failed" and sess["faults"][0]["kind"] == "ice_fail"


@pytest.mark.slow
def test_onset_truth_names_the_packet_that_carries_the_sound(fault_sim):
    """Each onset's `carrier_seq` carries its sound: the track sends digital silence between
    replies (it decodes to nothing), so the reply's first packet with sound is the carrier, or,
    for a reply cut from its clip in a pause between words, `lead_frames` packets of murmur
    before it (the onset is the first frame over the gate). The stamped packet (`rtp_seq`) just
    before the carrier is then silent, or murmur. The level is not compared with the gate here:
    the codec's 6.5 ms look-ahead moves part of the onset frame into the next packet, so an
    onset over -45 dBFS can decode several dB under it. A receive-only caller."""
    fault_sim.clear_faults()

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            c = Call()
            c.payloads = {}
            try:
                await c.offer(http, fault_sim.http_url)
                await _wait_event(c.events, "session.created", 10)
                for _ in range(2):
                    c.dc.send(orjson.dumps({"type": "response.create"}).decode())
                    await _wait_event(c.events, "output_audio_buffer.stopped", 10)
                    c.events.clear()
                    await asyncio.sleep(0.4)  # quiet, so the next reply is an onset
                async with http.get(fault_sim.http_url + "/truth/webrtc",
                                    params={"session_id": c.call_id}) as r:
                    onsets = (await r.json())["onsets"]
            finally:
                await c.close(http, fault_sim.http_url)
            return c, onsets

    c, onsets = asyncio.run(asyncio.wait_for(go(), 40))
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout, dec.format = 48000, "mono", "s16"
    level = {}
    for seq in sorted(c.payloads):  # one call far from the 16-bit wrap: a plain sort is in order
        for f in dec.decode(av.Packet(c.payloads[seq])):
            x = np.frombuffer(bytes(f.planes[0]), "<i2")[: f.samples].astype(np.float64)
            level[seq] = 10 * math.log10(max(float(np.mean(x * x)), 1e-9) / 32768 ** 2)
    assert len(onsets) == 2, onsets
    for o in onsets:
        lead = o["lead_frames"]
        first = next(s for s in sorted(level) if s > o["rtp_seq"] - 10 - lead and level[s] > -90)
        assert o["carrier_seq"] == (o["rtp_seq"] + 1) % 65536, o
        assert first == o["carrier_seq"] - lead, (o, first, level[first])
        assert level[o["carrier_seq"]] > -60, (o, level[o["carrier_seq"]])
        if lead == 0:
            assert level[o["rtp_seq"]] < -90, (o, level[o["rtp_seq"]])
        else:  # murmur: under the gate before it was encoded
            assert -90 < level[o["rtp_seq"]] < -40, (o, level[o["rtp_seq"]])
        assert 0 < o["carrier_send_ns"] - o["rtp_send_ns"] < 60e6


@pytest.mark.slow
def test_dc_close_closes_the_channel_mid_reply(fault_sim):
    fault_sim.clear_faults()
    fault_sim.fault(kind="dc_close", after_deltas=3, count=1)

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            c = Call()
            try:
                await c.offer(http, fault_sim.http_url)
                await _wait_event(c.events, "session.created", 10)
                c.dc.send(orjson.dumps({"type": "response.create"}).decode())
                created = await _wait_event(c.events, "response.created", 5)
                deadline = time.monotonic() + 5
                while c.dc_closed_ns is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                pc_state = c.pc.connectionState
                return c, created, pc_state
            finally:
                for t in c.tasks:
                    t.cancel()
                await c.pc.close()

    c, created, pc_state = asyncio.run(asyncio.wait_for(go(), 30))
    types = [e["type"] for e in c.events]
    assert c.dc_closed_ns is not None, types
    assert "response.done" not in types and "response.output_audio.done" not in types, types
    assert pc_state == "connected"  # the channel closed, not the call
    (turn,) = fault_sim.turns(c.call_id)
    assert turn["response_id"] == created["response"]["id"]
    assert turn["deltas"] == 3 and turn["status"] != "completed", turn
    sess = _session_truth(fault_sim, c.call_id)  # once the linger after the close is over
    assert sess["outcome"] == "dc_closed" and sess["faults"][0]["kind"] == "dc_close"
