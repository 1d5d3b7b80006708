"""Reply audio and input decoding for the simulator.

Reply audio is speech-like (a pitched harmonic source shaped by moving vowel formants and a
syllable-rate envelope), synthesised once per (format, delta size) and kept as pre-encoded base64
slices, so sending a delta costs a byte splice and no encoding. G.711 mu-law/A-law are done here
with numpy (no `audioop`: it is gone in Python 3.13).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

# wire format name -> (sample rate, bytes per sample)
FORMATS = {"pcm16": (24000, 2), "pcmu": (8000, 1), "pcma": (8000, 1)}

# Vowel formants (F1, F2, F3 in Hz) cycled syllable by syllable.
_VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
           (570, 840, 2410), (440, 1020, 2240), (660, 1720, 2410)]
_SYLLABLE_S = 0.22  # ~4.5 syllables per second
_LOOP_S = 12.0  # length of the synthesised clip that replies are cut from (cycled)


def synth_speech(rate: int, seconds: float = _LOOP_S, seed: int = 7) -> np.ndarray:
    """Voiced, pitched, syllabic audio as float32 in [-1, 1], about -16 dBFS RMS while voiced."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    # Intonation: a slow declining contour with a little vibrato, 95-150 Hz.
    f0 = 125 + 18 * np.sin(2 * np.pi * 0.35 * t) - 6 * (t % 2.5) + 3 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    n_syl = int(np.ceil(seconds / _SYLLABLE_S)) + 1
    vowel_idx = rng.integers(0, len(_VOWELS), n_syl)
    syl = np.minimum((t / _SYLLABLE_S).astype(int), n_syl - 1)
    formants = np.array(_VOWELS, dtype=np.float64)[vowel_idx][syl]  # (n, 3)
    out = np.zeros(n)
    nyq = min(rate / 2 - 200, 3800)
    for k in range(1, 40):
        fk = k * f0
        if np.all(fk > nyq):
            break
        gain = np.zeros(n)
        for j, bw in enumerate((90.0, 110.0, 170.0)):
            gain += (1.0 / (1 + ((fk - formants[:, j]) / bw) ** 2)) / (j + 1)
        gain *= (fk < nyq) / k ** 0.6
        out += gain * np.sin(k * phase)
    # Syllable envelope: a raised-cosine hump per syllable, with a short gap between words.
    pos = (t % _SYLLABLE_S) / _SYLLABLE_S
    env = np.sin(np.pi * pos) ** 1.2
    word_gap = ((t // _SYLLABLE_S).astype(int) % 4 == 3) & (pos > 0.6)
    env[word_gap] *= 0.05
    out *= env
    out += rng.normal(0, 0.002, n)  # a breath of noise so silence is never digital zero
    peak = np.max(np.abs(out))
    return (out / peak * 0.5).astype(np.float32)


def to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


# ---- G.711 ------------------------------------------------------------------------------------

def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exp, mant = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


ULAW_TO_PCM = _ulaw_decode_table()
ALAW_TO_PCM = _alaw_decode_table()


def _encode_by_table(pcm: np.ndarray, table: np.ndarray) -> bytes:
    """Nearest code for each sample, by binary search over the sorted decode table."""
    order = np.argsort(table, kind="stable")
    sorted_vals = table[order].astype(np.int32)
    x = pcm.astype(np.int32)
    idx = np.clip(np.searchsorted(sorted_vals, x), 1, len(sorted_vals) - 1)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    pick = np.where(np.abs(x - left) <= np.abs(right - x), idx - 1, idx)
    return order[pick].astype(np.uint8).tobytes()


def encode(x: np.ndarray, fmt: str) -> bytes:
    """float32 [-1,1] at the format's rate -> wire bytes."""
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    if fmt == "pcm16":
        return pcm.astype("<i2").tobytes()
    return _encode_by_table(pcm, ULAW_TO_PCM if fmt == "pcmu" else ALAW_TO_PCM)


def decode_to_int16(raw: bytes, fmt: str) -> np.ndarray:
    if fmt == "pcm16":
        return np.frombuffer(raw, dtype="<i2", count=len(raw) // 2)
    codes = np.frombuffer(raw, dtype=np.uint8)
    return (ULAW_TO_PCM if fmt == "pcmu" else ALAW_TO_PCM)[codes]


def b64decode(s: str | bytes) -> bytes:
    """Base64 of an append; raises ValueError on bad input."""
    try:
        return binascii.a2b_base64(s)
    except (binascii.Error, TypeError) as e:
        raise ValueError(str(e)) from None


# ---- pre-encoded reply clips -----------------------------------------------------------------

@dataclass(slots=True)
class ReplyClip:
    """A looped speech clip cut into deltas of `delta_ms`, each already base64 (bytes)."""

    fmt: str
    delta_ms: int
    chunks_b64: list[bytes]
    chunk_bytes: int

    def chunk(self, i: int) -> bytes:
        return self.chunks_b64[i % len(self.chunks_b64)]

    def partial(self, i: int, ms: int) -> bytes:
        """A shorter last delta of `ms` milliseconds (base64)."""
        raw = base64.b64decode(self.chunk(i))
        rate, width = FORMATS[self.fmt]
        return base64.b64encode(raw[: int(rate * ms / 1000) * width])


_speech: dict[int, np.ndarray] = {}
_clips: dict[tuple[str, int], ReplyClip] = {}


def speech(rate: int) -> np.ndarray:
    """The looped clip at `rate`; 24 kHz is band-limited 8 kHz speech upsampled by FFT (fast)."""
    if rate not in _speech:
        if rate == 8000:
            _speech[rate] = synth_speech(8000)
        else:
            base = speech(8000)
            spec = np.fft.rfft(base)
            n = len(base) * rate // 8000
            up = np.fft.irfft(spec, n) * (rate / 8000)
            _speech[rate] = up.astype(np.float32)
    return _speech[rate]


def reply_clip(fmt: str, delta_ms: int) -> ReplyClip:
    key = (fmt, delta_ms)
    clip = _clips.get(key)
    if clip is None:
        rate, width = FORMATS[fmt]
        raw = encode(speech(rate), fmt)
        step = int(rate * delta_ms / 1000) * width
        n = len(raw) // step
        chunks = [base64.b64encode(raw[i * step:(i + 1) * step]) for i in range(n)]
        clip = _clips[key] = ReplyClip(fmt, delta_ms, chunks, step)
    return clip
