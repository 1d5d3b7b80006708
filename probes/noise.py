"""Background noise for synthetic callers, mixed in at a signal-to-noise ratio.

Real callers are not studio-quiet: a VAD that fails in a noisy street only shows under noise.
Kinds: `white` (flat spectrum), `pink` (1/f power, like most room and street noise), `hum`
(mains at 50 Hz with its odd and even harmonics) and `babble` (other talkers: the caller's own
voices, time-shifted and summed, so babble is speech-shaped by construction).

**SNR** is the speech's *active* power over the noise's power, in dB: the speech's mean square
over its active 10 ms frames (those within ACTIVE_RANGE_DB of its loudest frame; pauses between
words do not dilute it, in the spirit of ITU-T P.56's active speech level), the noise's over
all of it. `mix()` scales the noise to hit the asked SNR exactly on that definition, and
`snr_db()` measures it back from the clean and the mixed signal.
"""

from __future__ import annotations

import base64
from functools import lru_cache

import numpy as np

KINDS = ("white", "pink", "hum", "babble")
FRAME_MS = 10
ACTIVE_RANGE_DB = 30.0
HUM_HZ = 50.0
BABBLE_TALKERS = 4


def active_power(pcm: np.ndarray, rate: int) -> float:
    """Mean square of the active 10 ms frames (module docstring); 0.0 for silence."""
    x = np.asarray(pcm, dtype=np.float64)
    f = max(rate * FRAME_MS // 1000, 1)
    n = x.size // f
    if n == 0:
        return float(np.mean(x * x)) if x.size else 0.0
    ms = np.mean(x[: n * f].reshape(n, f) ** 2, axis=1)
    top = float(ms.max())
    if top <= 0:
        return 0.0
    active = ms >= top * 10 ** (-ACTIVE_RANGE_DB / 10)
    return float(ms[active].mean())


def noise(kind: str, n: int, rate: int, *, seed: int = 0,
          voices: list[np.ndarray] | None = None) -> np.ndarray:
    """`n` samples of unit-power (mean square 1.0) noise of `kind`, float64. `voices` are the
    caller's own utterances (int16) for babble; without them babble uses synthetic speech."""
    if kind not in KINDS:
        raise ValueError(f"noise kind {kind!r}: expected one of {', '.join(KINDS)}")
    if n <= 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / rate)
        f[0] = f[1] if n > 1 else 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n)
    elif kind == "hum":
        t = np.arange(n) / rate
        x = sum((1.0 / k) * np.sin(2 * np.pi * HUM_HZ * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 8) if HUM_HZ * k < rate / 2)
        x = np.asarray(x, dtype=np.float64)
    else:
        x = _babble(n, rate, rng, voices)
    p = float(np.mean(x * x))
    return x / np.sqrt(p) if p > 0 else x


def _babble(n: int, rate: int, rng, voices) -> np.ndarray:
    """BABBLE_TALKERS voices, each looped from a random offset, summed: many talkers at once."""
    if not voices:
        from probes.audio import speech

        voices = [speech(2.0, rate, seed=int(rng.integers(1, 1 << 30)))
                  for _ in range(BABBLE_TALKERS)]
    out = np.zeros(n)
    for i in range(BABBLE_TALKERS):
        v = np.asarray(voices[i % len(voices)], dtype=np.float64)
        if v.size == 0:
            continue
        v = v / max(np.sqrt(np.mean(v * v)), 1e-9)
        reps = -(-(n + v.size) // v.size)
        loop = np.tile(v, reps)
        start = int(rng.integers(0, v.size))
        out += loop[start:start + n]
    return out


def mix(pcm: np.ndarray, kind: str, snr_db: float, rate: int, *, seed: int = 0,
        voices: list[np.ndarray] | None = None) -> np.ndarray:
    """`pcm` (int16) with `kind` noise at `snr_db` (module docstring) over its whole length,
    as int16. The noise is scaled on the speech's active power, so the same SNR means the same
    thing for a loud and a quiet caller; samples past full scale are clipped (at SNRs above
    0 dB for speech at the usual -20 dBFS, none are)."""
    clean = np.asarray(pcm, dtype=np.float64)
    p = active_power(clean, rate)
    if p <= 0 or clean.size == 0:
        return np.asarray(pcm, dtype=np.int16).copy()
    scale = np.sqrt(p / 10 ** (snr_db / 10))
    out = clean + scale * noise(kind, clean.size, rate, seed=seed, voices=voices)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def snr_db(clean: np.ndarray, mixed: np.ndarray, rate: int) -> float:
    """The SNR of `mixed` against the `clean` speech it was made from (module docstring)."""
    c = np.asarray(clean, dtype=np.float64)
    nz = np.asarray(mixed, dtype=np.float64) - c
    pn = float(np.mean(nz * nz))
    return float("inf") if pn == 0 else 10 * np.log10(active_power(c, rate) / pn)


@lru_cache(maxsize=256)  # a run's callers' renderings (probes/callers.MAX_RENDERINGS) fit
def noisy_utterance(utt, kind: str, snr_db: float, seed: int = 0):
    """`utt` (a probes.audio.Utterance) with `kind` noise at `snr_db` over its whole length,
    trailing silence included (a street does not fall quiet when the caller stops): the SNR is
    set on its speech part. Babble is the caller's own voice, looped and shifted. Cached, so
    every session of a run shares one rendering."""
    from probes import audio

    raw = b"".join(base64.b64decode(c) for c in utt.chunks)
    pcm = (np.frombuffer(raw, dtype="<i2").astype(np.int16) if utt.codec == "pcm16"
           else audio.ulaw_decode(raw) if utt.codec == "g711_ulaw" else audio.alaw_decode(raw))
    n_speech = min(int(round(utt.speech_s * utt.rate)), pcm.size) or pcm.size
    speech = pcm[:n_speech]
    p = active_power(speech, utt.rate)
    if p <= 0:
        return utt
    x = noise(kind, pcm.size, utt.rate, seed=seed, voices=[speech] if kind == "babble" else None)
    out = pcm.astype(np.float64) + np.sqrt(p / 10 ** (snr_db / 10)) * x
    mixed = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return audio._pack(mixed, n_speech, rate=utt.rate, codec=utt.codec, chunk_ms=utt.chunk_ms,
                       speech_s=utt.speech_s, text=utt.text)
