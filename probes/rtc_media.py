"""The media side of the WebRTC transport: the caller's paced Opus track, and what the engine
hears in the RTP stream it receives.

Out: every utterance is Opus-encoded once per process (`encoded()`, cached: 20 ms packets, the
index of the one holding the last speech sample), and `CallerTrack` hands aiortc's sender
pre-encoded `av.Packet`s (aiortc then only packs them: no per-session encoding, the known
aiortc CPU limit). Frame k of the track is due at grid0 + k * 20 ms; an utterance is scheduled
onto the slots from its start on and silence fills every other slot: the track never ends.
Lateness is send lag (the frame went after its due time), never drift; a track that fell far
behind in silence skips the missed silent slots (its RTP timestamps follow the wall clock).

In: `RtpListener` sees every RTP packet on arrival, before aiortc's jitter buffer (the
receiver's packet handler, hooked): it counts it (probes/rtp_stats.py) and turns the stream
into the dialect's normalised events, stamped on arrival. A reply starts at the first packet
whose decoded audio crosses the audible gate (probes/audible.py: some 10 ms window at or above
the gate) after a quiet stretch: that packet is an AudioDelta followed by AudibleOnset, and
every packet after it is reply audio (one AudioDelta each, 20 ms). How the reply ends:
- `marked` (Realtime): the server says so on the data channel (output_audio_buffer.stopped /
  .cleared, or a cancelled response.done); no decoding inside a reply, only between replies;
- `quiet` (GPT-Live): the output stayed below the gate for quiet_ms (a synthesised
  ResponseDone(output_quiet) stamped when it fell), as probes/onset.py's QuietGate does.
`Playout` runs the packets through aiortc's own audio jitter buffer and notes when each reply's
onset frame came out, decoded: `playout_delay_ms` (jitter buffer + decode), kept apart from
TTFA. aiortc's receive decoding (a thread per receiver, every packet) stays idle.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from fractions import Fraction
from time import perf_counter_ns

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from probes import audible, audio
from probes.dialects.base import OUTPUT_QUIET, AudibleOnset, AudioDelta, ResponseDone
from probes.rtc_loop import native_lock
from probes.rtp_stats import RtpStats

RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 960
FRAME_NS = FRAME_MS * 1_000_000
TIME_BASE = Fraction(1, RATE)
#: a track this far behind schedule in silence skips the missed slots instead of bursting
SKIP_NS = 60_000_000
#: quiet packets needed between replies before a new onset counts (a reply's tail is not one)
QUIET_BEFORE_ONSET = 3
WINDOW = RATE * audible.WINDOW_MS // 1000  # 480 samples: the gate's 10 ms window
MAX_CACHE = 256
#: Opus packets this small are an encoder's digital-silence frames (libopus sends 3 bytes for a
#: 20 ms frame of zeros, against hundreds for -60 dBFS noise): decoded, never audible
SILENT_OPUS_BYTES = 3
#: reply packet arrivals handed to the receiving side together (200 ms of audio)
FLUSH_PACKETS = 10


@dataclass(frozen=True, slots=True)
class Encoded:
    """An utterance as Opus packets, one per 20 ms; `last_speech` is the index of the packet that
    carries the last speech sample (-1: no speech)."""

    packets: tuple[bytes, ...]
    last_speech: int


_CACHE: dict = {}
_cache_lock = native_lock()


def _encoder() -> av.CodecContext:
    c = av.CodecContext.create("libopus", "w")
    c.bit_rate, c.format, c.layout = 64000, "s16", "mono"
    c.sample_rate, c.time_base = RATE, TIME_BASE
    c.options = {"application": "voip"}
    return c


def _pcm(utt: audio.Utterance) -> np.ndarray:
    raw = b"".join(base64.b64decode(c) for c in utt.chunks)
    if utt.codec == "pcm16":
        return np.frombuffer(raw[: len(raw) & ~1], dtype="<i2")
    return audio.ulaw_decode(raw) if utt.codec == "g711_ulaw" else audio.alaw_decode(raw)


def _encode_pcm(pcm: np.ndarray, rate: int) -> tuple[list[bytes], int]:
    """Opus packets of mono int16 `pcm` at `rate`, and the encoder's delay (48 kHz samples)."""
    rs = av.AudioResampler(format="s16", layout="mono", rate=RATE, frame_size=FRAME_SAMPLES)
    f = av.AudioFrame(format="s16", layout="mono", samples=len(pcm))
    f.planes[0].update(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    f.sample_rate, f.pts, f.time_base = rate, 0, Fraction(1, rate)
    enc = _encoder()
    packets = []
    for fr in [*rs.resample(f), *rs.resample(None)]:
        packets += enc.encode(fr)
    packets += enc.encode(None)
    delay = -packets[0].pts if packets and packets[0].pts is not None else 0
    return [bytes(p) for p in packets], max(0, delay)


def encoded(utt: audio.Utterance) -> Encoded:
    """The utterance's Opus packets (encoded once per process, then shared by every session)."""
    got = _CACHE.get(utt)
    if got is not None:
        return got
    pcm = _pcm(utt)
    packets, delay = _encode_pcm(pcm, utt.rate)
    n = len(pcm) * RATE // utt.rate
    packets = packets[: max(1, -(-n // FRAME_SAMPLES))]  # whole frames of the utterance only
    n_speech = int(round(utt.speech_s * RATE)) if utt.speech_chunks else 0
    last = min(len(packets) - 1, (n_speech - 1 + delay) // FRAME_SAMPLES) if n_speech else -1
    got = Encoded(tuple(packets), last)
    with _cache_lock:
        if len(_CACHE) > MAX_CACHE:
            _CACHE.clear()
        _CACHE[utt] = got
    return got


_SILENCE: list[bytes] = []


def silence_packet() -> bytes:
    """One 20 ms Opus packet of digital silence, from an encoder in its steady state."""
    if not _SILENCE:
        packets, _ = _encode_pcm(np.zeros(FRAME_SAMPLES * 10, dtype=np.int16), RATE)
        _SILENCE.append(packets[-3])
    return _SILENCE[0]


class Scheduled:
    """One utterance on the track: its slots, and what the sender recorded while playing it."""

    __slots__ = ("enc", "start", "j", "lags", "last_sent_ns", "done")

    def __init__(self, enc: Encoded, start: int, lags: list[int] | None) -> None:
        self.enc, self.start, self.j = enc, start, 0
        self.lags = lags  # the turn's send lags (ns), appended by the loop thread
        self.last_sent_ns: int | None = None  # when the last speech packet went
        self.done = False


class CallerTrack(MediaStreamTrack):
    """The caller's microphone: pre-encoded Opus packets, paced on a 20 ms grid, never ending."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.silence = silence_packet()
        self.grid0: int | None = None  # when slot 0 was due (perf_counter_ns)
        self.k = 0  # the next slot to send
        self.free = 0  # the first slot no utterance holds
        self.queue: list[Scheduled] = []
        self._lock = native_lock()
        self.sent = 0

    def slot_ns(self, k: int) -> int:
        return self.grid0 + k * FRAME_NS

    def schedule(self, enc: Encoded, t0_ns: int, lags: list[int] | None) -> Scheduled:
        """Put `enc` on the first free slot due at or after t0 (called from the blocking side)."""
        with self._lock:
            if self.grid0 is None:
                self.grid0 = perf_counter_ns()
            first = max(self.k + 1, self.free, -(-(t0_ns - self.grid0) // FRAME_NS))
            item = Scheduled(enc, first, lags)
            self.free = first + len(enc.packets)
            self.queue.append(item)
        return item

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        with self._lock:
            if self.grid0 is None:
                self.grid0 = perf_counter_ns()
            k = self.k
        due = self.grid0 + k * FRAME_NS
        now = perf_counter_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
            now = perf_counter_ns()
        with self._lock:
            k = self.k
            q = self.queue
            head = q[0] if q else None
            if head is None or head.start > k:
                behind = now - (self.grid0 + k * FRAME_NS)
                if behind > SKIP_NS:  # skip missed silent slots, up to the next utterance
                    k = (now - self.grid0) // FRAME_NS
                    if head is not None:
                        k = min(k, head.start)
                if head is not None and head.start <= k:
                    head = head  # the skip reached it: play it now (late)
                else:
                    head = None
            if head is not None:
                j = head.j
                payload = head.enc.packets[j]
                if head.lags is not None:
                    head.lags.append(now - (self.grid0 + (head.start + j) * FRAME_NS))
                if j == head.enc.last_speech:
                    head.last_sent_ns = now
                head.j = j + 1
                if head.j >= len(head.enc.packets):
                    head.done = True
                    q.pop(0)
            else:
                payload = self.silence
            self.k = k + 1
            self.sent += 1
        pkt = av.Packet(payload)
        pkt.pts, pkt.time_base = k * FRAME_SAMPLES, TIME_BASE
        return pkt

    def clear(self) -> None:
        with self._lock:
            for item in self.queue:
                item.done = True
            self.queue.clear()


class RtpListener:
    """Every received RTP packet, on arrival: counted, and turned into reply events (see the
    module doc). `emit(events, t)` delivers onsets and ends at once; the arrivals of the plain
    reply packets after an onset go to `emit_audio(stamps)` in batches of FLUSH_PACKETS (and
    before any other event, and when the reply ends), since nobody waits on them: one hand-off
    to the receiving side per 200 ms instead of per packet."""

    def __init__(self, emit, emit_audio, *, mode: str, delta_bytes: int, quiet_ms: float,
                 gate_dbfs: float = audible.GATE_DBFS) -> None:
        self.emit, self.emit_audio = emit, emit_audio
        self.held: list[int] = []  # reply packet arrivals not yet handed over
        self.mode = mode  # "marked" | "quiet"
        self.delta = AudioDelta(delta_bytes)
        self.mean_square = audible.threshold(gate_dbfs) * WINDOW
        self.quiet_packets = max(1, int(round(quiet_ms / FRAME_MS)))
        self.stats = RtpStats(RATE)
        self._dec = None
        self.in_reply = False
        self.quiet_run = QUIET_BEFORE_ONSET  # quiet packets since the last audible one
        self.quiet_from: int | None = None
        self.pending: list[int] = []  # quiet packets inside a reply (quiet mode), held
        self.onsets: dict[int, int] = {}  # onset packet's RTP timestamp -> its arrival (ns)
        self.onset_log: list[tuple[int, int]] = []  # (sequence number, arrival ns) per onset
        self.decoded = 0

    def _loud(self, payload: bytes) -> bool:
        # An encoder's digital-silence frame is never audible, but it is decoded all the same:
        # a decoder that skipped it meets the next packet out of step, and its first output
        # (say on GPT-Live's -60 dBFS floor after a silence) comes out loud, a false onset.
        silent = len(payload) <= SILENT_OPUS_BYTES
        if self._dec is None:
            self._dec = av.CodecContext.create("libopus", "r")
            self._dec.format, self._dec.layout, self._dec.sample_rate = "s16", "mono", RATE
        self.decoded += 1
        loud = False
        try:
            for fr in self._dec.decode(av.Packet(payload)):
                x = np.frombuffer(fr.planes[0], dtype="<i2", count=fr.samples)
                n = len(x) // WINDOW * WINDOW
                if n:
                    w = x[:n].astype(np.float32).reshape(-1, WINDOW)
                    if float(np.einsum("ij,ij->i", w, w).max()) >= self.mean_square:
                        loud = True
        except (av.error.FFmpegError, ValueError):
            return False  # a packet we cannot decode is not audible
        return loud and not silent

    def packet(self, seq: int, ts: int, payload: bytes, t: int) -> None:
        self.stats.packet(seq, ts, t / 1e9)
        if self.in_reply and self.mode == "marked":
            self._audio(t)  # inside a marked reply: no decoding
            return
        loud = self._loud(payload)
        if not self.in_reply:
            if loud and self.quiet_run >= QUIET_BEFORE_ONSET:
                self.in_reply, self.pending, self.quiet_from = True, [], None
                self.onsets[ts] = t
                if len(self.onset_log) < 1000:
                    self.onset_log.append((seq, t))
                self.flush()
                self.emit((self.delta, AudibleOnset()), t)
            self.quiet_run = 0 if loud else self.quiet_run + 1
            return
        # quiet mode, inside a reply
        if loud:
            for tp in self.pending:
                self._audio(tp)
            self.pending, self.quiet_from = [], None
            self.quiet_run = 0
            self._audio(t)
            return
        if self.quiet_from is None:
            self.quiet_from = t
        self.pending.append(t)
        self.quiet_run += 1
        if len(self.pending) >= self.quiet_packets:
            self.flush()
            self.emit((ResponseDone("completed", reason=OUTPUT_QUIET),), self.quiet_from)
            self.in_reply, self.pending, self.quiet_from = False, [], None

    def _audio(self, t: int) -> None:
        h = self.held
        h.append(t)
        if len(h) >= FLUSH_PACKETS:
            self.flush()

    def flush(self) -> None:
        if self.held:
            held, self.held = self.held, []
            self.emit_audio(held)

    def reply_ended(self) -> None:
        """The data channel said the reply's audio stopped (marked mode): look for the next
        onset again, after a quiet stretch."""
        self.flush()
        if self.in_reply:
            self.in_reply = False
            self.quiet_run = 0


def hook_receiver(receiver, listener: RtpListener, playout: Playout) -> None:
    """Take over the receiver's RTP handler (the private one aiortc feeds from its DTLS
    transport; gpt-live.md §13): every packet is stamped on arrival, before any buffering,
    counted and gated (`listener`), then goes through the playout model (`playout`). aiortc's
    own decode path (a decoder thread per receiver, decoding every packet) is left idle: the
    engine decodes only what it must, on the loop thread, and runs no thread of its own."""

    async def handle(packet, arrival_time_ms: int) -> None:
        t = perf_counter_ns()
        try:
            listener.packet(packet.sequence_number, packet.timestamp, packet.payload, t)
            playout.packet(packet)
        except Exception:  # never let our accounting break aiortc's receive path
            pass

    receiver._handle_rtp_packet = handle


class Playout:
    """What a player of this stream adds: aiortc's receiver jitter buffer for audio (the same
    class and sizes, capacity 16, prefetch 4) releases each frame once enough later packets
    came; the onset frame is decoded when released. `delays`: onset arrival (ns) -> release +
    decode of that frame (ns), the `playout_delay_ms` of its turn."""

    def __init__(self, listener: RtpListener) -> None:
        self.listener = listener
        self.jb = JitterBuffer(capacity=16, prefetch=4)
        self.delays: dict[int, int] = {}
        self.frames = 0
        self._dec = None

    def packet(self, packet) -> None:
        packet._data = packet.payload  # Opus: the payload is the frame (aiortc's depayload)
        _pli, frame = self.jb.add(packet)
        if frame is None:
            return
        self.frames += 1
        onsets = self.listener.onsets
        if onsets:
            arrived = onsets.pop(frame.timestamp, None)
            if arrived is not None:
                if self._dec is None:
                    self._dec = av.CodecContext.create("libopus", "r")
                    self._dec.format, self._dec.layout, self._dec.sample_rate = (
                        "s16", "stereo", RATE)
                try:
                    self._dec.decode(av.Packet(frame.data))
                except (av.error.FFmpegError, ValueError):
                    return
                self.delays[arrived] = perf_counter_ns() - arrived
