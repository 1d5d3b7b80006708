"""Real-speech sources: espeak-ng text and WAV files, trimmed so speech_chunks marks the real end."""

from __future__ import annotations

import base64
import io
import math
import struct
import subprocess
import wave

import numpy as np
import pytest

from probes import audio, espeak

#: tests that run the espeak-ng binary themselves (as an independent reference); the others
#: render through whichever backend is there: the binary, else the espeakng-loader wheel
needs_espeak = pytest.mark.needs_tool("espeak-ng")

SHORT = "Hi."
MEDIUM = "Hello there, how are you today?"
LONG = "Hello there, how are you today? I would like to book a table for four people at seven."


def decoded(u: audio.Utterance) -> list[np.ndarray]:
    """Each chunk back to int16 PCM, whatever the codec."""
    raw = [base64.b64decode(c) for c in u.chunks]
    if u.codec == "g711_ulaw":
        return [audio.ulaw_decode(r) for r in raw]
    if u.codec == "g711_alaw":
        return [audio.alaw_decode(r) for r in raw]
    return [np.frombuffer(r, dtype="<i2") for r in raw]


def espeak_span_s(text: str) -> float:
    """Independent reference: espeak-ng run here, first to last sample above 1% of the peak."""
    out = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "165", "--stdout"], input=text.encode(), capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
        rate = w.getframerate()
    a = np.abs(x)
    idx = np.flatnonzero(a > 0.01 * a.max())
    return (idx[-1] + 1 - idx[0]) / rate


def write_wav(path, frames: np.ndarray, rate: int, width: int) -> None:
    """frames: (n, channels) int16-scale ints, written at `width` bytes per sample."""
    frames = np.atleast_2d(frames.T).T.astype(np.int32)
    if width == 1:
        raw = ((frames >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = frames.astype("<i2").tobytes()
    elif width == 3:
        v = (frames << 8).astype("<i4").tobytes()
        raw = b"".join(v[i : i + 3] for i in range(0, len(v), 4))
    else:
        raw = (frames.astype(np.int64) << 16).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def padded_speech(speech_s: float, rate: int, lead_s: float, tail_s: float, *, hiss: float = 0.0) -> np.ndarray:
    """Silence (or faint hiss) + speech() + silence, as int16-scale ints."""
    rng = np.random.default_rng(0)
    s = audio.speech(speech_s, rate, seed=3).astype(np.int64)
    lead = np.round(hiss * rng.standard_normal(int(round(lead_s * rate)))).astype(np.int64)
    tail = np.round(hiss * rng.standard_normal(int(round(tail_s * rate)))).astype(np.int64)
    return np.concatenate([lead, s, tail])


# ---- speech detection --------------------------------------------------------------------------


def test_voiced_bounds_finds_a_burst_to_the_sample():
    rate = 16000
    x = np.zeros(rate * 2, dtype=np.int16)
    t = np.arange(8000) / rate
    x[5005:13005] = (3000 * np.cos(2 * np.pi * 200 * t)).astype(np.int16)  # not frame-aligned
    assert audio.voiced_bounds(x, rate) == (5005, 13005)
    x[5005:13005] = (3000 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)  # first sample is 0
    assert audio.voiced_bounds(x, rate) == (5006, 13005)
    assert audio.voiced_bounds(np.zeros(1000, np.int16), rate) == (0, 0)


def test_voiced_bounds_threshold_is_relative_to_the_loudest_frame_with_a_floor():
    rate = 8000
    t = np.arange(4000) / rate
    loud = 10000 * np.cos(2 * np.pi * 300 * t)
    quiet = loud / 1000.0  # -60 dB under the loud part: not speech
    x = np.concatenate([quiet, loud, quiet]).astype(np.int16)
    assert audio.voiced_bounds(x, rate) == (4000, 8000)
    # a whole file at -75 dBFS is below the absolute floor: nothing voiced
    assert audio.voiced_bounds((6 * np.cos(2 * np.pi * 300 * t)).astype(np.int16), rate) == (0, 0)


# ---- espeak-ng ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_spoken_duration_grows_with_the_text():
    a, b, c = (audio.spoken(t) for t in (SHORT, MEDIUM, LONG))
    assert 0.1 < a.speech_s < b.speech_s < c.speech_s
    assert c.speech_s > 2 * b.speech_s > 4 * a.speech_s / 2
    assert (a.text, c.text) == (SHORT, LONG)
    assert audio.spoken(MEDIUM) is b  # cached


@pytest.mark.parametrize(
    "rate, codec, bps", [(24000, "pcm16", 2), (16000, "pcm16", 2), (8000, "g711_ulaw", 1), (8000, "g711_alaw", 1)]
)
def test_spoken_renders_at_the_wire_rate_and_codec(rate, codec, bps):
    u = audio.spoken(MEDIUM, rate=rate, codec=codec, chunk_ms=20, trailing_silence_s=0.4)
    ref = audio.spoken(MEDIUM, chunk_ms=20)
    assert (u.rate, u.codec) == (rate, codec)
    assert {len(base64.b64decode(c)) for c in u.chunks} == {rate * 20 // 1000 * bps}
    assert abs(u.speech_chunks - ref.speech_chunks) <= 1  # the same speech at every rate
    assert len(u.chunks) - u.speech_chunks in (20, 21)  # 0.4 s of trailing silence
    pcm = decoded(u)
    assert np.abs(pcm[0]).max() > 300  # leading silence trimmed: speech from the first chunk
    assert np.abs(pcm[u.speech_chunks - 1]).max() > 0
    zero = audio.encode(np.zeros(rate * 20 // 1000, np.int16), codec)  # A-law has no 0 code
    assert all(base64.b64decode(c) == zero for c in u.chunks[u.speech_chunks :])  # silence after


@needs_espeak
@pytest.mark.parametrize("text", [SHORT, MEDIUM, LONG])
def test_spoken_speech_end_is_within_a_chunk_of_the_real_end(text):
    chunk_s = 0.02
    u = audio.spoken(text, chunk_ms=20, trailing_silence_s=0.5)
    truth = espeak_span_s(text)  # seconds from the first to the last audible sample
    assert abs(u.speech_s - truth) <= 0.01
    assert abs(u.speech_chunks - math.ceil(truth / chunk_s)) <= 1
    pcm = decoded(u)
    assert np.abs(pcm[u.speech_chunks - 1]).max() > 0 and not np.any(pcm[u.speech_chunks])


@pytest.mark.parametrize("dbfs", [-30.0, -14.0])
def test_spoken_loudness_levels_the_voiced_rms(dbfs):
    u = audio.spoken(MEDIUM, loudness_dbfs=dbfs)
    x = np.concatenate(decoded(u)[: u.speech_chunks]).astype(np.float64)
    frames = x[: len(x) // 240 * 240].reshape(-1, 240)
    rms = np.sqrt((frames**2).mean(axis=1))
    voiced = frames[rms > rms.max() * 0.01]
    level = 20 * np.log10(np.sqrt(np.mean(voiced**2)) / 32767)
    assert abs(level - dbfs) < 1.5
    quiet, loud = audio.spoken(MEDIUM, loudness_dbfs=-30.0), audio.spoken(MEDIUM, loudness_dbfs=-14.0)
    assert quiet.speech_chunks == loud.speech_chunks


def test_spoken_without_espeak_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no espeak-ng on PATH
    monkeypatch.setattr(espeak, "_wheel_paths", lambda: None)  # and no espeakng-loader wheel
    assert not audio.espeak_available()
    with pytest.raises(audio.AudioSourceError, match=r"^espeak-ng is not installed "
                       r"\(pip install espeakng-loader, or apt-get install espeak-ng\)$"):
        audio.spoken("a sentence nothing else renders, so the cache cannot answer")


def test_spoken_unknown_voice_and_empty_text_are_clear_errors():
    with pytest.raises(audio.AudioSourceError, match="nosuchvoice"):
        audio.spoken(SHORT, voice="nosuchvoice")
    with pytest.raises(audio.AudioSourceError, match="empty"):
        audio.spoken("   ")
    with pytest.raises(ValueError, match="codec"):
        audio.spoken(SHORT, codec="opus")


def test_spoken_text_with_shell_and_option_syntax_is_just_spoken(tmp_path):
    marker = tmp_path / "pwned"
    u = audio.spoken(f"-v xx --stdout; touch {marker} $(touch {marker})")
    assert u.speech_s > 1.0 and not marker.exists()


# ---- WAV files ---------------------------------------------------------------------------------


def test_from_wav_44k_stereo_16bit_keeps_duration_and_speech_end(tmp_path):
    rate, speech_s = 44100, 1.3
    mono = padded_speech(speech_s, rate, 0.4, 0.6, hiss=2.0)  # -84 dBFS hiss in the "silence"
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([mono, mono // 2], axis=1), rate, 2)
    u = audio.from_wav(path, rate=24000, chunk_ms=20, trailing_silence_s=0.3)
    assert abs(u.speech_s - speech_s) <= 0.02
    assert abs(u.speech_chunks - math.ceil(speech_s / 0.02)) <= 1
    assert abs(u.duration_s - (speech_s + 0.3)) <= 0.02  # both files' silences trimmed
    pcm = decoded(u)
    assert np.abs(pcm[0]).max() > 300  # speech starts in the first chunk
    assert all(not np.any(p) for p in pcm[u.speech_chunks :])
    assert u.text is None


def test_from_wav_8k_8bit_to_g711(tmp_path):
    rate, speech_s = 8000, 1.0
    path = tmp_path / "phone.wav"
    write_wav(path, padded_speech(speech_s, rate, 0.25, 0.5), rate, 1)
    u = audio.from_wav(path, rate=8000, codec="g711_ulaw", chunk_ms=20, trailing_silence_s=0.2)
    assert {len(base64.b64decode(c)) for c in u.chunks} == {160}
    assert abs(u.speech_s - speech_s) <= 0.02
    assert abs(u.speech_chunks - 50) <= 1
    assert abs(u.duration_s - 1.2) <= 0.02


@pytest.mark.parametrize("width", [2, 3, 4])
def test_from_wav_at_the_wire_rate_is_sample_exact(tmp_path, width):
    rate = 24000
    lead, speech_s = 0.25, 1.2
    x = padded_speech(speech_s, rate, lead, 0.5)
    path = tmp_path / f"w{width}.wav"
    write_wav(path, x, rate, width)
    u = audio.from_wav(path, rate=rate, chunk_ms=100)
    got = np.concatenate(decoded(u))
    n = int(round(u.speech_s * rate))
    assert abs(u.speech_s - speech_s) <= 0.001 and u.speech_chunks == 12  # speech() fades to ~0
    at = int(lead * rate)  # the speech, bit for bit, starting within 1 ms of where it was written
    assert any(np.array_equal(got[:n], x[k : k + n]) for k in range(at - 24, at + 25))
    assert not np.any(got[n:])


@needs_espeak
def test_from_wav_of_an_espeak_file_matches_spoken(tmp_path):
    out = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "--stdout"], input=MEDIUM.encode(), capture_output=True, check=True).stdout
    path = tmp_path / "espeak.wav"
    path.write_bytes(out)  # a streaming header: the frame count is a placeholder
    w = audio.from_wav(path, rate=16000, codec="g711_alaw", chunk_ms=20)
    s = audio.spoken(MEDIUM, rate=16000, codec="g711_alaw", chunk_ms=20)
    assert w.chunks == s.chunks and w.speech_s == s.speech_s


def test_from_wav_cache_follows_the_file(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, padded_speech(0.8, 16000, 0.1, 0.1), 16000, 2)
    a = audio.from_wav(path, rate=16000)
    assert audio.from_wav(str(path), rate=16000) is a
    write_wav(path, padded_speech(1.6, 16000, 0.1, 0.1), 16000, 2)
    b = audio.from_wav(path, rate=16000)
    assert b is not a and b.speech_s > a.speech_s + 0.7


def test_from_wav_errors_name_the_path_and_the_problem(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(audio.AudioSourceError, match="cannot read") as e:
        audio.from_wav(missing)
    assert str(missing) in str(e.value)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(audio.AudioSourceError, match="not a PCM WAV") as e:
        audio.from_wav(text)
    assert str(text) in str(e.value)
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(8000, np.int64), 8000, 2)
    with pytest.raises(audio.AudioSourceError, match="no speech") as e:
        audio.from_wav(silent)
    assert str(silent) in str(e.value)
    assert issubclass(audio.AudioSourceError, ValueError)


def extensible_wav(pcm: np.ndarray, rate: int) -> bytes:
    """A mono 16-bit PCM WAV with a WAVE_FORMAT_EXTENSIBLE header (KSDATAFORMAT_SUBTYPE_PCM)."""
    data = pcm.astype("<i2").tobytes()
    guid = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, rate, rate * 2, 2, 16, 22, 16, 4) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_from_wav_extensible_is_read_or_refused_clearly(tmp_path):
    rate = 16000
    x = padded_speech(1.0, rate, 0.2, 0.2)
    path = tmp_path / "ext.wav"
    path.write_bytes(extensible_wav(x, rate))
    try:
        wave.open(str(path)).close()
        readable = True
    except wave.Error:
        readable = False
    if readable:  # Python 3.12+
        u = audio.from_wav(path, rate=rate)
        assert u.speech_s == 1.0
    else:
        with pytest.raises(audio.AudioSourceError, match="WAVE_FORMAT_EXTENSIBLE") as e:
            audio.from_wav(path, rate=rate)
        assert str(path) in str(e.value)
