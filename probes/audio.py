"""Synthetic speech-like audio and the codecs it is sent in (PCM16, G.711 mu-law / A-law).

Real server VADs ignore tones and white noise; they fire on energy that looks like speech. So an
utterance here is a run of voiced "syllables": a glottal-like harmonic series on a pitch
contour (declining across the phrase, wobbling per syllable), shaped by a raised-cosine envelope
at a syllable rate of ~4-5 Hz, separated by short pauses (well under a VAD's silence window, so
the turn does not end early), with a little breath noise, then digital silence.

Everything is rendered parametrically in time, so 16 kHz (Gemini input) and 8 kHz (G.711) are
native renderings of the same utterance, not decimations of a 24 kHz buffer. A seed makes it
deterministic. Chunks are base64-encoded once per utterance and cached: a load generator with
a thousand sessions sends the same immutable strings.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DEFAULT_RATE = 24000
SYLLABLE_S = (0.12, 0.26)  # voiced syllable length range
PAUSE_S = (0.03, 0.11)  # gap between syllables: shorter than any VAD silence window (>= 200 ms)
F0_HZ = (105.0, 210.0)  # speaker's base pitch range


def speech(
    duration_s: float,
    rate: int = DEFAULT_RATE,
    *,
    seed: int = 1,
    loudness_dbfs: float = -20.0,
) -> np.ndarray:
    """`duration_s` of speech-like PCM16 (int16) at `rate`; voiced up to its last sample.

    loudness_dbfs is the RMS level of the voiced parts relative to full scale.
    """
    n = max(int(round(duration_s * rate)), 1)
    rng = np.random.default_rng(seed)
    # 1. syllable layout in seconds: [(start, end)], last syllable ends exactly at duration
    segs: list[tuple[float, float]] = []
    t = 0.0
    while True:
        syl = rng.uniform(*SYLLABLE_S)
        pause = rng.uniform(*PAUSE_S)
        if t + syl + pause + SYLLABLE_S[0] >= duration_s:
            segs.append((t, duration_s))
            break
        segs.append((t, t + syl))
        t += syl + pause
    # 2. pitch contour: phrase declination plus per-syllable rise/fall, smooth in time
    tt = np.arange(n, dtype=np.float64) / rate
    f0_base = rng.uniform(*F0_HZ)
    f0 = f0_base * (1.1 - 0.2 * tt / max(duration_s, 1e-3))
    env = np.zeros(n)
    for s, e in segs:
        i0, i1 = int(s * rate), min(int(round(e * rate)), n)
        if i1 <= i0:
            continue
        m = i1 - i0
        x = np.linspace(0.0, 1.0, m, endpoint=False) + 0.5 / m
        # raised-cosine-ish envelope with a quick attack and slower decay
        env[i0:i1] = np.sin(np.pi * x) ** 0.6
        f0[i0:i1] *= 1.0 + rng.uniform(-0.08, 0.12) * np.sin(np.pi * x)
    # 3. harmonic series on that contour (glottal-like 1/k^1.2 rolloff, below Nyquist)
    phase = 2.0 * np.pi * np.cumsum(f0) / rate
    nyq = 0.45 * rate
    sig = np.zeros(n)
    kmax = int(nyq // f0.max())
    formant = rng.uniform(500.0, 900.0)
    for k in range(1, max(kmax, 1) + 1):
        # a crude first formant bump so the spectrum is not a plain sawtooth
        amp = k**-1.2 * (1.0 + 1.5 * np.exp(-(((k * f0_base) - formant) / 300.0) ** 2))
        sig += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    sig += 0.02 * rng.standard_normal(n)  # breath
    sig *= env
    voiced = env > 0.1
    rms = float(np.sqrt(np.mean(sig[voiced] ** 2))) if voiced.any() else 1.0
    target = 32767.0 * 10.0 ** (loudness_dbfs / 20.0)
    sig *= target / max(rms, 1e-12)
    return np.clip(np.round(sig), -32768, 32767).astype(np.int16)


def silence(duration_s: float, rate: int = DEFAULT_RATE) -> np.ndarray:
    return np.zeros(int(round(duration_s * rate)), dtype=np.int16)


# ---- G.711 (ITU-T G.711, the reference segment tables in vectorised form) -------------------

_ULAW_BIAS = 0x84


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """PCM16 -> G.711 mu-law bytes (the reference g711.c algorithm on the 14-bit sample)."""
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), 8159) + 33
    seg = np.searchsorted(_ULAW_SEG_END, x)  # first segment whose end >= x
    u = np.where(seg >= 8, 0x7F, (seg << 4) | ((x >> (seg + 1)) & 0x0F))
    return ((u ^ mask) & 0xFF).astype(np.uint8).tobytes()


_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    mag = (((mant << 3) + _ULAW_BIAS) << exp) - _ULAW_BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def alaw_encode(pcm: np.ndarray) -> bytes:
    """PCM16 -> G.711 A-law bytes (13-bit magnitude, even bits inverted)."""
    x = pcm.astype(np.int32) >> 3  # 13-bit
    sign = np.where(x >= 0, 0x80, 0x00)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0x0FFF)
    exp = np.where(mag >= 32, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4, 0)
    exp = np.clip(exp, 0, 7)
    mant = np.where(exp == 0, mag >> 1, mag >> exp) & 0x0F
    return ((sign | (exp << 4) | mant) ^ 0x55).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exp = (a >> 4) & 0x07
    mant = a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


CODECS = ("pcm16", "g711_ulaw", "g711_alaw")


def encode(pcm: np.ndarray, codec: str) -> bytes:
    if codec == "pcm16":
        return pcm.astype("<i2").tobytes()
    if codec == "g711_ulaw":
        return ulaw_encode(pcm)
    if codec == "g711_alaw":
        return alaw_encode(pcm)
    raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")


def bytes_per_sample(codec: str) -> int:
    return 2 if codec == "pcm16" else 1


# ---- pre-encoded utterances -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Utterance:
    """One utterance cut into fixed-duration chunks, each already base64-encoded.

    The last speech sample is in chunk `speech_chunks - 1`; the chunks after it are silence.
    """

    rate: int
    codec: str
    chunk_ms: int
    speech_s: float
    chunks: tuple[str, ...]
    speech_chunks: int

    @property
    def duration_s(self) -> float:
        return len(self.chunks) * self.chunk_ms / 1000.0


@lru_cache(maxsize=128)
def utterance(
    speech_s: float,
    trailing_silence_s: float = 0.0,
    *,
    rate: int = DEFAULT_RATE,
    codec: str = "pcm16",
    chunk_ms: int = 100,
    seed: int = 1,
    loudness_dbfs: float = -20.0,
) -> Utterance:
    """Render, encode and chunk once; cached, so every session shares the same strings."""
    if chunk_ms <= 0:
        raise ValueError("chunk_ms must be positive")
    pcm = np.concatenate(
        [speech(speech_s, rate, seed=seed, loudness_dbfs=loudness_dbfs), silence(trailing_silence_s, rate)]
    )
    per = rate * chunk_ms // 1000
    n_speech = int(round(speech_s * rate))
    n_chunks = -(-len(pcm) // per)
    pcm = np.concatenate([pcm, np.zeros(n_chunks * per - len(pcm), dtype=np.int16)])
    raw = encode(pcm, codec)
    bps = bytes_per_sample(codec)
    step = per * bps
    chunks = tuple(
        base64.b64encode(raw[i : i + step]).decode("ascii") for i in range(0, len(raw), step)
    )
    return Utterance(
        rate=rate,
        codec=codec,
        chunk_ms=chunk_ms,
        speech_s=speech_s,
        chunks=chunks,
        speech_chunks=-(-n_speech // per),
    )
