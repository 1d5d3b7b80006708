"""Speech audio for probes: synthetic, espeak-ng or WAV; and its codecs (PCM16, G.711).

Real server VADs ignore tones and white noise; they fire on energy that looks like speech. So an
utterance here is a run of voiced "syllables": a glottal-like harmonic series on a pitch
contour (declining across the phrase, wobbling per syllable), shaped by a raised-cosine envelope
at a syllable rate of ~4-5 Hz, separated by short pauses (well under a VAD's silence window, so
the turn does not end early), with a little breath noise, then digital silence.

Everything is rendered parametrically in time, so 16 kHz (Gemini input) and 8 kHz (G.711) are
native renderings of the same utterance, not decimations of a 24 kHz buffer. A seed makes it
deterministic. Chunks are base64-encoded once per utterance and cached: a load generator with
a thousand sessions sends the same immutable strings.

Real speech (`spoken()` renders text with espeak-ng through `probes.espeak`, `from_wav()`
reads a recording) is resampled to the wire rate and trimmed to its voiced span by
`voiced_bounds()`, so that `speech_s` / `speech_chunks` mark where the speech really ends: the
engine times every latency from that point.
"""

from __future__ import annotations

import base64
import io
import math
import os
import wave
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from probes import espeak

DEFAULT_RATE = 24000
FRAME_S = 0.01  # energy frame for speech detection
VOICED_REL_DB = -40.0  # a frame is voiced within this many dB of the loudest frame...
VOICED_FLOOR_DBFS = -60.0  # ...and above this absolute level (so hiss never counts)
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


class AudioSourceError(ValueError):
    """Real-speech audio could not be produced: espeak-ng missing or failing, or a bad WAV."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One utterance cut into fixed-duration chunks, each already base64-encoded.

    The last speech sample is in chunk `speech_chunks - 1`; the chunks after it are silence.
    `text` is the known transcript, when there is one (espeak-ng renderings).
    """

    rate: int
    codec: str
    chunk_ms: int
    speech_s: float
    chunks: tuple[str, ...]
    speech_chunks: int
    text: str | None = None

    @property
    def duration_s(self) -> float:
        return len(self.chunks) * self.chunk_ms / 1000.0


def _check_params(codec: str, chunk_ms: int) -> None:
    """Fail on bad parameters before any rendering work."""
    if chunk_ms <= 0:
        raise ValueError("chunk_ms must be positive")
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")


def _pack(
    pcm: np.ndarray,
    n_speech: int,
    *,
    rate: int,
    codec: str,
    chunk_ms: int,
    speech_s: float | None = None,
    text: str | None = None,
) -> Utterance:
    """Pad `pcm` (speech in its first `n_speech` samples) to whole chunks, encode, base64.

    The one chunking code path for every source, so they all mean the same by speech_chunks.
    """
    _check_params(codec, chunk_ms)
    per = rate * chunk_ms // 1000
    n_chunks = -(-len(pcm) // per)
    pcm = np.concatenate([pcm, np.zeros(n_chunks * per - len(pcm), dtype=np.int16)])
    raw = encode(pcm, codec)
    step = per * bytes_per_sample(codec)
    chunks = tuple(
        base64.b64encode(raw[i : i + step]).decode("ascii") for i in range(0, len(raw), step)
    )
    return Utterance(
        rate=rate,
        codec=codec,
        chunk_ms=chunk_ms,
        speech_s=n_speech / rate if speech_s is None else speech_s,
        chunks=chunks,
        speech_chunks=-(-n_speech // per),
        text=text,
    )


@lru_cache(maxsize=256)  # room for a run's callers (probes/callers.MAX_RENDERINGS)
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
    _check_params(codec, chunk_ms)
    pcm = np.concatenate(
        [speech(speech_s, rate, seed=seed, loudness_dbfs=loudness_dbfs), silence(trailing_silence_s, rate)]
    )
    n_speech = int(round(speech_s * rate))
    return _pack(pcm, n_speech, rate=rate, codec=codec, chunk_ms=chunk_ms, speech_s=speech_s)


@lru_cache(maxsize=256)  # a run's callers (probes/callers.py) jitter silences per caller
def silent(duration_s: float, *, rate: int = DEFAULT_RATE, codec: str = "pcm16",
           chunk_ms: int = 100) -> Utterance:
    """Digital silence, chunked like an utterance (no speech chunks): an open mic."""
    return _pack(silence(duration_s, rate), 0, rate=rate, codec=codec, chunk_ms=chunk_ms)


# ---- real speech: speech detection, resampling, trimming -------------------------------------


def _frame_db(pcm: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """RMS level (dBFS) of each 10 ms frame (the last one may be partial), and the frame length."""
    w = max(int(round(rate * FRAME_S)), 1)
    x = np.asarray(pcm, dtype=np.float64)
    n = -(-len(x) // w)
    padded = np.zeros(n * w)
    padded[: len(x)] = x
    frames = padded.reshape(n, w)
    counts = np.full(n, w, dtype=np.float64)
    if n:
        counts[-1] = len(x) - (n - 1) * w
    rms = np.sqrt((frames**2).sum(axis=1) / counts)
    return 20.0 * np.log10(np.maximum(rms, 1e-9) / 32767.0), w


def _voiced_frames(pcm: np.ndarray, rate: int) -> tuple[np.ndarray, int, float]:
    """Mask of voiced frames, the frame length and the threshold (dBFS) they passed.

    Voiced: within VOICED_REL_DB of the loudest frame and above VOICED_FLOOR_DBFS.
    """
    db, w = _frame_db(pcm, rate)
    threshold = max(float(db.max()) + VOICED_REL_DB, VOICED_FLOOR_DBFS) if len(db) else 0.0
    return db >= threshold, w, threshold


def voiced_bounds(pcm: np.ndarray, rate: int) -> tuple[int, int]:
    """Sample indices [start, end) of the speech in `pcm`; (0, 0) if nothing is voiced.

    Found on 10 ms frame energy relative to the loudest frame (any recording level works),
    then refined inside the first and last voiced frames to the first and last sample reaching
    the threshold level. This end is the end of speech that latencies are measured from.
    """
    voiced, w, threshold = _voiced_frames(pcm, rate)
    idx = np.flatnonzero(voiced)
    if not len(idx):
        return 0, 0
    loud = np.abs(np.asarray(pcm, dtype=np.float64)) >= 32767.0 * 10.0 ** (threshold / 20.0)
    first, last = int(idx[0]) * w, int(idx[-1]) * w
    # a frame whose RMS reaches the threshold has a sample that does, so both searches hit
    start = first + int(np.argmax(loud[first : first + w]))
    end = last + int(np.flatnonzero(loud[last : last + w])[-1]) + 1
    return start, end


def _resample(x: np.ndarray, src_rate: int, rate: int) -> np.ndarray:
    """Float samples at src_rate -> rate (polyphase, anti-aliased)."""
    if src_rate == rate:
        return x
    from scipy.signal import resample_poly  # ~0.5 s to import: only for real-speech sources

    g = math.gcd(src_rate, rate)
    return resample_poly(x, rate // g, src_rate // g)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def _normalise(pcm: np.ndarray, rate: int, loudness_dbfs: float) -> np.ndarray:
    """Scale so the RMS of the voiced frames is loudness_dbfs (as speech() levels its output)."""
    voiced, w, _ = _voiced_frames(pcm, rate)
    mask = np.repeat(voiced, w)[: len(pcm)]
    x = pcm.astype(np.float64)
    rms = float(np.sqrt(np.mean(x[mask] ** 2))) if mask.any() else 0.0
    if rms <= 0.0:
        return pcm
    return _to_int16(x * (32767.0 * 10.0 ** (loudness_dbfs / 20.0) / rms))


def _prepare(
    samples: np.ndarray,
    src_rate: int,
    origin: str,
    *,
    rate: int,
    codec: str,
    chunk_ms: int,
    trailing_silence_s: float,
    loudness_dbfs: float | None = None,
    text: str | None = None,
) -> Utterance:
    """Resample, trim to the voiced span, level, add trailing silence and pack."""
    pcm = _to_int16(_resample(samples, src_rate, rate))
    start, end = voiced_bounds(pcm, rate)
    if end <= start:
        raise AudioSourceError(f"{origin}: no speech found (silent audio)")
    pcm = pcm[start:end]
    if loudness_dbfs is not None:
        pcm = _normalise(pcm, rate, loudness_dbfs)
    pcm = np.concatenate([pcm, silence(trailing_silence_s, rate)])
    return _pack(pcm, end - start, rate=rate, codec=codec, chunk_ms=chunk_ms, text=text)


# ---- WAV decoding ----------------------------------------------------------------------------


def _wav_samples(data: bytes, origin: str) -> tuple[np.ndarray, int]:
    """WAV bytes -> (mono float samples on the int16 scale, sample rate).

    Read from memory so the header's frame count may be a streaming placeholder (espeak-ng
    writes 0x7fffffff-ish when it writes to a pipe).
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, src_rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise AudioSourceError(f"{origin}: not a PCM WAV file ({_wave_reason(e)})") from None
    if width not in (1, 2, 3, 4):
        raise AudioSourceError(f"{origin}: unsupported sample width of {width} bytes")
    n = len(raw) // (width * channels)
    if n == 0:
        raise AudioSourceError(f"{origin}: the WAV file holds no audio")
    x = _pcm_to_float(raw[: n * width * channels], width)
    return x.reshape(n, channels).mean(axis=1), src_rate


def _wave_reason(e: Exception) -> str:
    """wave's message, with the one case people hit spelled out (Python < 3.12)."""
    msg = str(e) or type(e).__name__
    if "65534" in msg:
        return "WAVE_FORMAT_EXTENSIBLE needs Python 3.12+; re-save it as plain PCM"
    return msg


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM of any width -> float on the int16 scale (8-bit WAV is unsigned)."""
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / 256.0
    dtype = "<i2" if width == 2 else "<i4"
    return np.frombuffer(raw, dtype=dtype).astype(np.float64) / (1 << (8 * width - 16))


# ---- sources: espeak-ng text and WAV files ---------------------------------------------------


def espeak_available() -> bool:
    """True when spoken() can render: espeak-ng on PATH, or the espeakng-loader wheel."""
    return espeak.backend() is not None


@lru_cache(maxsize=256)  # room for a run's callers (probes/callers.MAX_RENDERINGS)
def spoken(
    text: str,
    *,
    voice: str = "en-us",
    wpm: int = 165,
    rate: int = DEFAULT_RATE,
    codec: str = "pcm16",
    chunk_ms: int = 100,
    trailing_silence_s: float = 0.0,
    loudness_dbfs: float | None = None,
) -> Utterance:
    """`text` spoken by espeak-ng (the binary, else the wheel's library), trimmed to its
    speech; cached like utterance().

    A real voice with a known transcript, for scenarios where the server has to understand
    what was said. loudness_dbfs, when given, levels the voiced RMS as speech() does.
    """
    _check_params(codec, chunk_ms)
    if not text.strip():
        raise AudioSourceError("spoken(): text is empty")
    try:
        data = espeak.wav(text, voice, wpm)
    except espeak.EspeakError as e:
        raise AudioSourceError(str(e)) from None
    samples, src_rate = _wav_samples(data, "espeak-ng output")
    return _prepare(
        samples,
        src_rate,
        f"espeak-ng rendering of {text!r}",
        rate=rate,
        codec=codec,
        chunk_ms=chunk_ms,
        trailing_silence_s=trailing_silence_s,
        loudness_dbfs=loudness_dbfs,
        text=text,
    )


def from_wav(
    path: str | os.PathLike[str],
    *,
    rate: int = DEFAULT_RATE,
    codec: str = "pcm16",
    chunk_ms: int = 100,
    trailing_silence_s: float = 0.0,
) -> Utterance:
    """A recorded WAV (PCM 8/16/24/32-bit, mono or stereo) as an utterance, trimmed to its speech.

    Cached on the file's path, mtime and size, so an edited file is read again.
    """
    _check_params(codec, chunk_ms)
    p = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError as e:
        raise AudioSourceError(f"{p}: cannot read WAV file ({e.strerror or e})") from None
    return _from_wav_cached(p, st.st_mtime_ns, st.st_size, rate, codec, chunk_ms, trailing_silence_s)


@lru_cache(maxsize=128)
def _from_wav_cached(
    path: str, mtime_ns: int, size: int, rate: int, codec: str, chunk_ms: int, trailing_silence_s: float
) -> Utterance:
    """from_wav() behind a cache keyed on the file's identity (mtime_ns and size are the key)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise AudioSourceError(f"{path}: cannot read WAV file ({e.strerror or e})") from None
    samples, src_rate = _wav_samples(data, path)
    return _prepare(
        samples, src_rate, path, rate=rate, codec=codec, chunk_ms=chunk_ms, trailing_silence_s=trailing_silence_s
    )
