"""The audible gate: is there sound in this reply audio, or only silence and a noise floor?

A first audio *byte* says nothing when a server streams silence (GPT-Live's continuous output,
a reply that starts with a pause, a reply of digital silence): what a caller hears is the first
*audible* chunk. A chunk is audible when any 10 ms window of it has an RMS level at or above
`GATE_DBFS` (dBFS: 0 is a full-scale square wave's RMS, i.e. int16 32768).

Calibration (docs/metrics.md "The audible gate"): the default, -45 dBFS, sits 15 dB above the
simulator's quiet floor (-60 dBFS Gaussian noise, the reference's "low noise floor") and 25 dB
below conversational speech rendered at -20 dBFS; a 10 ms window of that floor exceeds -45 dBFS
with probability ~0 (its RMS over 240 samples varies by < 1 dB), while a speech onset's first
10 ms window is at -35 dBFS or more in the simulator's clip. Windows, not the whole chunk, so a
chunk that holds 10 ms of speech after 90 ms of silence still counts (its whole-chunk RMS would
be 10 dB lower).

Pure numpy on one delta's base64 text; the engine calls it only while it looks for an onset
or a quiet stretch (probes/onset.py), so the cost per frame stays flat (~20 µs per 100 ms
delta of PCM16 at 24 kHz; nothing at all once a reply's onset is found).
"""

from __future__ import annotations

import binascii

import numpy as np

from probes.dialects.base import AudioFormat

#: the default gate, dBFS (RMS over a 10 ms window)
GATE_DBFS = -45.0
WINDOW_MS = 10

# G.711 decode tables: byte -> int16 sample (the standard expansions, as probes/audio.py)


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    mag = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exp, mant = (a >> 4) & 0x07, a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


_TABLES = {"g711_ulaw": _ulaw_table(), "g711_alaw": _alaw_table()}


def samples(b64: bytes, fmt: AudioFormat) -> np.ndarray:
    """One delta's samples as int16 (pcm16 little-endian, or G.711 mu-law / A-law expanded).
    Invalid base64 decodes to no samples: a delta we cannot hear is not audible."""
    try:
        raw = binascii.a2b_base64(b64)
    except (binascii.Error, ValueError):
        return np.zeros(0, dtype=np.int16)
    if fmt.codec == "pcm16":
        return np.frombuffer(raw[: len(raw) & ~1], dtype="<i2")
    return _TABLES[fmt.codec][np.frombuffer(raw, dtype=np.uint8)]


def threshold(gate_dbfs: float = GATE_DBFS) -> float:
    """The gate as a mean square of int16 samples (compared without a log per window)."""
    return (10 ** (gate_dbfs / 20) * 32768.0) ** 2


def loudest_dbfs(x: np.ndarray, rate: int) -> float:
    """The RMS level of the loudest 10 ms window (a shorter chunk is one window), dBFS."""
    ms = _window_mean_squares(x, rate)
    top = float(ms.max()) if ms.size else 0.0
    return 20 * np.log10(max(top, 1e-12) ** 0.5 / 32768.0)


def audible(b64: bytes, fmt: AudioFormat, mean_square: float) -> bool:
    """True when some 10 ms window of the delta reaches the gate (`threshold()`)."""
    ms = _window_mean_squares(samples(b64, fmt), fmt.rate)
    return bool(ms.size) and float(ms.max()) >= mean_square


def _window_mean_squares(x: np.ndarray, rate: int) -> np.ndarray:
    n = len(x)
    if not n:
        return np.zeros(0)
    w = max(1, rate * WINDOW_MS // 1000)
    f = x.astype(np.float32)
    full = n // w
    out = []
    if full:
        out.append(np.mean(np.square(f[: full * w].reshape(full, w)), axis=1))
    if n - full * w and not full:  # a delta shorter than one window is its own window
        out.append(np.array([np.mean(np.square(f))]))
    elif n - full * w >= w // 2:  # a tail of half a window or more counts as a window
        out.append(np.array([np.mean(np.square(f[full * w:]))]))
    return np.concatenate(out) if len(out) > 1 else out[0]
