"""Synthetic speech: deterministic, speech-like (syllable envelope, pitch), silent tail, G.711."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from probes import audio


def frame_rms(x: np.ndarray, rate: int, win_s: float = 0.01) -> np.ndarray:
    w = int(rate * win_s)
    n = len(x) // w
    f = x[: n * w].astype(np.float64).reshape(n, w)
    return np.sqrt((f**2).mean(axis=1))


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = audio.speech(1.5, seed=7)
    assert np.array_equal(a, audio.speech(1.5, seed=7))
    assert not np.array_equal(a, audio.speech(1.5, seed=8))
    assert a.dtype == np.int16 and len(a) == 36000


@pytest.mark.parametrize("dbfs", [-30.0, -20.0, -12.0])
def test_loudness_is_the_voiced_rms(dbfs):
    x = audio.speech(2.0, seed=3, loudness_dbfs=dbfs).astype(np.float64)
    env = frame_rms(x, 24000)
    voiced = np.repeat(env > env.max() * 0.2, 240)[: len(x)]
    level = 20 * np.log10(np.sqrt(np.mean(x[: len(voiced)][voiced] ** 2)) / 32767)
    assert abs(level - dbfs) < 2.0


def test_energy_envelope_moves_at_syllable_rate():
    rate = 24000
    x = audio.speech(3.0, rate, seed=5)
    env = frame_rms(x, rate)  # 100 Hz envelope
    env = env - env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(len(env))))
    freqs = np.fft.rfftfreq(len(env), d=0.01)
    band = (freqs >= 0.5) & (freqs <= 20)
    peak = freqs[band][np.argmax(spec[band])]
    assert 2.0 <= peak <= 8.0, peak  # syllables, not a steady tone
    # and real pauses between syllables: some 10 ms frames are near-silent mid-utterance
    mid = frame_rms(x, rate)[10:-10]
    assert (mid < mid.max() * 0.05).sum() >= 5


def test_pitch_is_present_in_the_speech_range():
    rate = 24000
    x = audio.speech(1.5, rate, seed=2).astype(np.float64)
    env = frame_rms(x, rate, 0.04)
    i = int(np.argmax(env))  # the loudest 40 ms
    seg = x[i * 960 : (i + 1) * 960]
    seg = seg - seg.mean()
    ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
    lo, hi = rate // 400, rate // 80  # lags for 400..80 Hz
    lag = lo + int(np.argmax(ac[lo:hi]))
    assert ac[lag] > 0.3 * ac[0]  # clearly periodic
    assert 80 <= rate / lag <= 400


def test_sixteen_khz_is_a_native_rendering():
    a16 = audio.speech(1.0, 16000, seed=4)
    a24 = audio.speech(1.0, 24000, seed=4)
    assert len(a16) == 16000
    # same syllable timing at both rates
    e16, e24 = frame_rms(a16, 16000), frame_rms(a24, 24000)
    assert np.corrcoef(e16, e24)[0, 1] > 0.95
    # and content up to its own Nyquist (a decimated 8 kHz-band copy would not have 6-7 kHz)
    spec = np.abs(np.fft.rfft(a16.astype(np.float64)))
    f = np.fft.rfftfreq(len(a16), 1 / 16000)
    assert spec[(f > 5000) & (f < 7200)].max() > 0


def test_utterance_chunks_and_trailing_silence():
    u = audio.utterance(1.25, 0.8, chunk_ms=100, seed=9)
    assert u.speech_chunks == 13  # 1.25 s -> the 13th chunk holds the last speech sample
    assert len(u.chunks) == 21  # 2.05 s rounded up to whole chunks
    raw = [base64.b64decode(c) for c in u.chunks]
    assert all(len(r) == 4800 for r in raw)
    last_speech = np.frombuffer(raw[12], dtype="<i2")
    assert np.abs(last_speech[:1200]).max() > 0  # voiced up to 1.25 s
    assert not np.any(last_speech[1200:])  # then digital silence
    assert all(not any(r) for r in raw[13:])  # the trailing silence is silent
    assert audio.utterance(1.25, 0.8, chunk_ms=100, seed=9) is u  # cached


def test_g711_round_trip_and_reference_values():
    x = audio.speech(0.5, 8000, seed=1)
    for enc, dec in ((audio.ulaw_encode, audio.ulaw_decode), (audio.alaw_encode, audio.alaw_decode)):
        b = enc(x)
        assert len(b) == len(x)
        y = dec(b).astype(np.int32)
        err = np.abs(y - x.astype(np.int32))
        # G.711 is ~13-bit: error within half a quantisation step of the segment
        assert np.all(err <= np.maximum(np.abs(x.astype(np.int32)) // 16, 16) + 8)
        snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum(err.astype(float) ** 2))
        assert snr > 30
    # reference codes from ITU-T G.711 tables: silence and full scale
    assert audio.ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert audio.ulaw_encode(np.array([32767, -32768], np.int16)) == b"\x80\x00"
    assert audio.alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert audio.alaw_encode(np.array([32767, -32768], np.int16)) == b"\xaa\x2a"


def test_g711_matches_audioop_bit_for_bit():
    audioop = pytest.importorskip("audioop")  # stdlib until 3.13: an independent reference
    every = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    assert audio.ulaw_encode(every) == audioop.lin2ulaw(every.tobytes(), 2)
    assert audio.alaw_encode(every) == audioop.lin2alaw(every.tobytes(), 2)
    codes = bytes(range(256))
    assert audio.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert audio.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_g711_utterance_is_8khz_one_byte_per_sample():
    u = audio.utterance(0.5, 0.2, rate=8000, codec="g711_ulaw", chunk_ms=20, seed=1)
    assert all(len(base64.b64decode(c)) == 160 for c in u.chunks)
    with pytest.raises(ValueError):
        audio.encode(np.zeros(4, np.int16), "opus")
