"""What a WebRTC call costs the simulator, and how late its onset truth is at the client.

Runs the simulator (`--http-port`) as a child process and N concurrent Realtime calls from this
process, each an aiortc peer over loopback. Per level it prints:

- simulator CPU per call (ms of CPU per call-second, from /proc/PID/stat over the steady window),
  and this client process's, for comparison;
- the RFC 3550 interarrival jitter the clients see with no fault (probes/rtp_stats.py, on packet
  arrival);
- with `--talk`, each call speaks (a 1 s tone every 4 s, paced 20 ms frames) so the simulator
  decodes input, runs its VAD and replies; otherwise the clients are receive-only and the
  simulator's track sends silence, plus one `response.create` reply per call every 4 s;
- onset lag: from each reply onset's `carrier_send_ns` (the simulator's truth: the RTP packet
  carrying the onset's sound handed to DTLS) to that packet's arrival at the client (matched
  by sequence number), and to the first decoded frame above -40 dBFS (after aiortc's jitter
  buffer and decoder).

    python benchmarks/webrtc_sim.py --levels 1,10,20 --steady 10
    python benchmarks/webrtc_sim.py --levels 10 --talk
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from aiortc import MediaStreamTrack, RTCSessionDescription  # noqa: E402

from probes.rtp_stats import RtpStats  # noqa: E402
from simulator.process import SimProcess  # noqa: E402
from simulator.webrtc import loopback  # noqa: E402

RATE, FRAME = 24000, 480
KEY = {"Authorization": "Bearer sk-bench"}
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / _TICK


class Talker(MediaStreamTrack):
    """Paced 20 ms frames: 1 s of a 220 Hz tone every `period_s`, silence otherwise."""

    kind = "audio"

    def __init__(self, period_s: float = 4.0):
        super().__init__()
        t = np.arange(FRAME) / RATE
        self.tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
        self.quiet = bytes(FRAME * 2)
        self.period = int(period_s * 50)
        self.pts, self.t0 = 0, None

    async def recv(self):
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self.pts / RATE
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        i = (self.pts // FRAME) % self.period
        f = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        f.planes[0].update(self.tone if 25 <= i < 75 else self.quiet)
        f.pts, f.sample_rate, f.time_base = self.pts, RATE, Fraction(1, RATE)
        self.pts += FRAME
        return f


class Call:
    def __init__(self, talk: bool):
        self.pc = loopback.peer()
        if talk:
            self.pc.addTrack(Talker())
            self.tr = self.pc.getTransceivers()[0]
        else:
            self.tr = self.pc.addTransceiver("audio", direction="recvonly")
        self.dc = self.pc.createDataChannel("oai-events")
        self.events: list[dict] = []
        self.dc.on("message", lambda m: self.events.append(orjson.loads(m)))
        self.stats = RtpStats(48000)
        self.jit: list[float] = []
        self.arrival: dict[int, int] = {}  # RTP sequence number -> arrival (monotonic ns)
        self.audible_ns: list[int] = []  # decoded frames above -40 dBFS after quiet
        self.call_id = ""
        self.tasks: list[asyncio.Task] = []
        orig = self.tr.receiver._handle_rtp_packet

        async def on_rtp(packet, arrival_time_ms):
            now = time.monotonic_ns()
            self.arrival[packet.sequence_number] = now
            self.stats.packet(packet.sequence_number, packet.timestamp, now / 1e9)
            self.jit.append(self.stats.jitter_ms)
            await orig(packet, arrival_time_ms)

        self.tr.receiver._handle_rtp_packet = on_rtp

        @self.pc.on("track")
        def on_track(track):
            self.tasks.append(asyncio.ensure_future(self.listen(track)))

    async def listen(self, track):
        rs = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        quiet = True
        gate = (32768 * 10 ** (-40 / 20)) ** 2
        while True:
            frame = await track.recv()
            for f in rs.resample(frame):
                x = np.frombuffer(bytes(f.planes[0])[: f.samples * 2], "<i2").astype(np.float32)
                loud = bool(x.size) and float(np.mean(x * x)) > gate
                if loud and quiet:
                    self.audible_ns.append(time.monotonic_ns())
                quiet = not loud

    async def start(self, http, base: str):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        form = aiohttp.FormData()
        form.add_field("sdp", self.pc.localDescription.sdp, content_type="application/sdp")
        form.add_field("session", orjson.dumps({"type": "realtime", "model": "sim-fast"}).decode(),
                       content_type="application/json")
        async with http.post(base + "/v1/realtime/calls", data=form, headers=KEY) as r:
            assert r.status == 201, await r.text()
            answer = await r.text()
            self.call_id = r.headers["Location"].rsplit("/", 1)[-1]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def ready(self, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while not any(e["type"] == "session.created" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError("no session.created")
            await asyncio.sleep(0.02)

    async def stop(self, http, base: str):
        for t in self.tasks:
            t.cancel()
        async with http.post(f"{base}/v1/realtime/calls/{self.call_id}/hangup", headers=KEY):
            pass
        await self.pc.close()


def pct(xs, p):
    return float(np.percentile(xs, p)) if len(xs) else float("nan")


async def level(sim: SimProcess, n: int, steady: float, talk: bool) -> dict:
    base = sim.http_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        calls = [Call(talk) for _ in range(n)]
        for c in calls:
            await c.start(http, base)
        await asyncio.gather(*(c.ready() for c in calls))
        await asyncio.sleep(1.0)
        s0, c0, t0 = cpu_s(sim.pid), cpu_s(os.getpid()), time.monotonic()
        k = 0
        while time.monotonic() - t0 < steady:
            if not talk:  # one reply per call every 4 s, spread over the calls
                for c in calls[k % 4::4]:
                    c.dc.send('{"type":"response.create"}')
                k += 1
            await asyncio.sleep(1.0)
        dt = time.monotonic() - t0
        s1, c1 = cpu_s(sim.pid), cpu_s(os.getpid())
        await asyncio.sleep(2.0)  # the last replies play out
        async with http.get(base + "/truth/webrtc") as r:
            onsets = (await r.json())["onsets"]
        for c in calls:
            await c.stop(http, base)
    arrive, decode = [], []
    by_id = {c.call_id: c for c in calls}
    for o in onsets:
        c = by_id.get(o["session_id"])
        seq, sent = o.get("carrier_seq", o["rtp_seq"]), o.get("carrier_send_ns", o["rtp_send_ns"])
        if c is None or not o.get("response_id") or seq not in c.arrival:
            continue
        arrive.append((c.arrival[seq] - sent) / 1e6)
        after = [t for t in c.audible_ns if t > sent]
        if after:
            decode.append((after[0] - sent) / 1e6)
    jit = [float(np.mean(c.jit[50:])) for c in calls if len(c.jit) > 50]
    return {"calls": n, "sim_cpu_ms_per_call_s": 1000 * (s1 - s0) / dt / n,
            "sim_cpu_pct": 100 * (s1 - s0) / dt,
            "client_cpu_ms_per_call_s": 1000 * (c1 - c0) / dt / n,
            "jitter_ms": float(np.mean(jit)) if jit else float("nan"),
            "onsets": len(arrive), "arrive_p50": pct(arrive, 50), "arrive_p99": pct(arrive, 99),
            "decode_p50": pct(decode, 50), "decode_p99": pct(decode, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,10,20")
    ap.add_argument("--steady", type=float, default=10.0)
    ap.add_argument("--talk", action="store_true")
    a = ap.parse_args()
    loopback.restrict("127.0.0.1")
    print(f"mode: {'talk (client sends speech)' if a.talk else 'listen (receive-only)'}")
    print("calls  sim CPU ms/call-s  sim CPU %  client CPU ms/call-s  jitter ms  onsets  "
          "RTP send->arrival p50/p99 ms  ->audible decode p50/p99 ms")
    with SimProcess(["--http-port", "0", "--ttfa-ms", "150", "--reply-s", "1.0"]) as sim:
        for n in [int(x) for x in a.levels.split(",")]:
            r = asyncio.run(level(sim, n, a.steady, a.talk))
            print(f"{r['calls']:5d}  {r['sim_cpu_ms_per_call_s']:17.1f}  {r['sim_cpu_pct']:9.1f}"
                  f"  {r['client_cpu_ms_per_call_s']:20.1f}  {r['jitter_ms']:9.2f}  "
                  f"{r['onsets']:6d}  {r['arrive_p50']:13.2f} / {r['arrive_p99']:6.2f}"
                  f"  {r['decode_p50']:14.1f} / {r['decode_p99']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
