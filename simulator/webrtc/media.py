"""Media between aiortc and the simulator's WebSocket sessions.

Out: the session's audio deltas (PCM16 24 kHz, sent faster than real time by Realtime, in real
time by GPT-Live) are queued on `OutTrack`, which aiortc's sender pulls one 20 ms frame at a time,
paced on its own clock, digital silence when nothing is queued: the track never ends. The first
audible frame after a quiet spell is stamped when its RTP packet is handed to the DTLS transport
(`hook_send`): the sender loop is recv -> encode -> send, so the next RTP packet after that frame
left `recv()` carries it.

In: decoded input frames are resampled to PCM16 24 kHz mono and handed on with the arrival time
of the RTP packet that carried them (`hook_arrivals`, before the jitter buffer), so the session's
VAD stamps "speech end heard" on packet arrival rather than on decode.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import is_rtcp

RATE = 24000
FRAME_MS = 20
SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = SAMPLES * 2
#: a frame is audible above this RMS level (dBFS); GPT-Live's quiet output is at -60 by default
AUDIBLE_DBFS = -45.0
#: audible after at least this much inaudible output counts as a new onset
ONSET_GAP_MS = 300
#: far behind schedule (a stalled loop): restart the clock rather than burst
REANCHOR_S = 0.2
_LEVEL = (32768.0 * 10 ** (AUDIBLE_DBFS / 20)) ** 2 * SAMPLES  # sum of squares at the gate


class OutTrack(MediaStreamTrack):
    """The simulator's outgoing audio: continuous, paced, silence between replies.

    `on_started(rid)` / `on_stopped(rid)` fire when queued reply audio starts playing and when the
    queue runs dry (Realtime's output_audio_buffer.started/.stopped); `on_onset(rec)` fires with
    the RTP send time of each audible onset."""

    kind = "audio"

    def __init__(self, on_started: Callable[[str | None], None] | None = None,
                 on_stopped: Callable[[str | None], None] | None = None,
                 on_onset: Callable[[dict], None] | None = None) -> None:
        super().__init__()
        self.buf = bytearray()
        self.rids: collections.deque[tuple[int, str | None]] = collections.deque()  # (end, rid)
        self.on_started, self.on_stopped, self.on_onset = on_started, on_stopped, on_onset
        self._t0: float | None = None
        self._pts = 0
        self._playing: str | None | bool = False  # False, or the rid playing
        self._quiet_frames = ONSET_GAP_MS // FRAME_MS  # inaudible frames since the last audible
        self._murmur = 0  # of those, the latest run of frames with sound in them (not zeros)
        self.pending_onset: dict | None = None
        self.frames = self.audible_frames = 0

    def push(self, pcm: bytes, rid: str | None = None) -> None:
        self.buf += pcm
        if self.rids and self.rids[-1][1] == rid:
            self.rids[-1] = (len(self.buf), rid)
        else:
            self.rids.append((len(self.buf), rid))

    def clear(self) -> bool:
        """Drop the queued audio (a cancelled reply, output_audio_buffer.clear); True if any
        was queued. No `stopped` follows: the clear is reported instead."""
        had = bool(self.buf)
        self.buf.clear()
        self.rids.clear()
        self._playing = False
        return had

    def _take(self) -> tuple[bytes, str | None, bool]:
        n = min(len(self.buf), FRAME_BYTES)
        if n == 0:
            return bytes(FRAME_BYTES), None, False
        chunk = bytes(self.buf[:n])
        del self.buf[:n]
        rid = self.rids[0][1]
        while self.rids and self.rids[0][0] <= n:
            self.rids.popleft()
        self.rids = collections.deque((end - n, r) for end, r in self.rids)
        return chunk + bytes(FRAME_BYTES - n), rid, True

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._pts / RATE
        if now - due > REANCHOR_S:
            self._t0, due = now - self._pts / RATE, now
        if due > now:
            await asyncio.sleep(due - now)
        chunk, rid, queued = self._take()
        if queued and self._playing is False:
            self._playing = rid
            if self.on_started:
                self.on_started(rid)
        elif not queued and self._playing is not False:
            was, self._playing = self._playing, False
            if self.on_stopped:
                self.on_stopped(was)
        x = np.frombuffer(chunk, dtype="<i2").astype(np.float32)
        audible = float(x @ x) > _LEVEL
        self.frames += 1
        if audible:
            self.audible_frames += 1
            if self._quiet_frames * FRAME_MS >= ONSET_GAP_MS:
                self.pending_onset = {"response_id": rid, "frame_due_ns": int(due * 1e9),
                                      "level_dbfs": round(10 * math.log10(float(x @ x) / SAMPLES
                                                                          / 32768.0 ** 2), 1),
                                      "lead_frames": self._murmur}
            self._quiet_frames = self._murmur = 0
        else:
            self._quiet_frames += 1
            self._murmur = self._murmur + 1 if x.any() else 0
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(chunk)
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = Fraction(1, RATE)
        self._pts += SAMPLES
        return frame


#: packets between the one stamped for an onset and the one carrying its audio: aiortc's Opus
#: encoder resamples into 960-sample frames and so holds a frame back
CARRIER_LAG = 1


def hook_send(dtls, track: OutTrack, impair=None) -> None:
    """Stamp a pending onset with the time its RTP packet goes to the DTLS transport
    (`rtp_send_ns`, the first packet after the onset frame left the track), and with the packet
    that carries its audio, CARRIER_LAG packets later (`carrier_send_ns`, `carrier_seq`); the
    record goes to `on_onset` then. With an `impair.Impairment` (rtp_loss / rtp_jitter) each
    RTP packet (never RTCP) is dropped or held as it decides; the onset notes what happened to
    its carrier: `dropped: true` or `held_ms`."""
    orig = dtls._send_rtp
    held: set[asyncio.Task] = set()
    waiting: list = []  # [record, packets still to go before its carrier]

    async def later(data: bytes) -> None:
        try:
            await orig(data)
        except ConnectionError:
            pass  # the call ended while the packet was held

    def release(data: bytes) -> None:
        task = asyncio.ensure_future(later(data))
        held.add(task)
        task.add_done_callback(held.discard)

    def stamp(data: bytes, hold: float | None) -> None:
        now = time.monotonic_ns()
        seq = int.from_bytes(data[2:4], "big")
        rec = track.pending_onset
        if rec is not None:
            track.pending_onset = None
            rec["rtp_send_ns"], rec["rtp_seq"] = now, seq
            rec["rtp_ts"] = int.from_bytes(data[4:8], "big")
            waiting[:] = [rec, CARRIER_LAG]
        if not waiting:
            return
        if waiting[1] > 0:
            waiting[1] -= 1
            return
        rec = waiting[0]
        waiting.clear()
        rec["carrier_send_ns"], rec["carrier_seq"] = now, seq
        if hold is None:
            rec["dropped"] = True
        elif hold > 0:
            rec["held_ms"] = round(hold * 1000, 3)
        if track.on_onset:
            track.on_onset(rec)

    async def send(data: bytes) -> None:
        if is_rtcp(data):
            await orig(data)
            return
        hold = 0.0 if impair is None else impair.decide()
        if track.pending_onset is not None or waiting:
            stamp(data, hold)
        if hold is None:
            impair.note_drop(int.from_bytes(data[2:4], "big"))
            return
        if hold > 0:
            asyncio.get_running_loop().call_later(hold, release, data)
            return
        await orig(data)

    dtls._send_rtp = send


class Arrivals:
    """Arrival time (monotonic ns) of recent input RTP packets, keyed as aiortc keys decoded
    frames' pts (the timestamp less the first one, modulo 2^32)."""

    def __init__(self, keep: int = 512) -> None:
        self.origin: int | None = None
        self.times: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.keep = keep
        self.packets = 0

    def add(self, rtp_ts: int, t_ns: int) -> None:
        if self.origin is None:
            self.origin = rtp_ts
        self.packets += 1
        self.times[(rtp_ts - self.origin) % (1 << 32)] = t_ns
        while len(self.times) > self.keep:
            self.times.popitem(last=False)

    def pop(self, pts: int | None) -> int | None:
        return None if pts is None else self.times.pop(pts % (1 << 32), None)


def hook_arrivals(receiver, arrivals: Arrivals) -> None:
    orig = receiver._handle_rtp_packet

    async def handle(packet, arrival_time_ms: int) -> None:
        arrivals.add(packet.timestamp, time.monotonic_ns())
        await orig(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle


async def read_input(track, arrivals: Arrivals, push: Callable[[bytes, int], None]) -> None:
    """Decode the caller's track to PCM16 24 kHz mono, each block with its packet's arrival."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        t = arrivals.pop(frame.pts) or time.monotonic_ns()
        for f in resampler.resample(frame):
            push(bytes(f.planes[0])[: f.samples * 2], t)
