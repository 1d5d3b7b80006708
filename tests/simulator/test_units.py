"""Pure unit tests: distributions, profiles, VAD, markers, audio, G.711, fault specs."""

from __future__ import annotations

import base64
import math
import random

import numpy as np
import pytest

from simulator import audio, markers
from simulator.faults import Fault, FaultError
from simulator.profiles import Dist, ProfileBook, ProfileError
from simulator.session_config import ConfigReject, SessionConfig
from simulator.vad import EnergyVAD, threshold_level


def test_dists():
    rng = random.Random(1)
    assert Dist.parse(250, "x").sample(rng) == 250
    ln = Dist.parse({"dist": "lognormal", "median": 250, "sigma": 0.3, "floor": 120}, "x")
    xs = sorted(ln.sample(rng) for _ in range(20000))
    assert 240 < xs[10000] < 260 and xs[0] >= 120
    nd = Dist.parse({"dist": "normal", "mean": 100, "sd": 10, "floor": 95, "cap": 130}, "x")
    ys = [nd.sample(rng) for _ in range(5000)]
    assert min(ys) == 95 and max(ys) <= 130 and 100 < np.mean(ys) < 106


def test_builtin_profiles_and_update():
    book = ProfileBook()
    assert book.for_model("sim-fast").ttfa_ms.median == 250
    assert book.for_model("sim-fast").ttfa_ms.floor == 120
    assert book.for_model("sim-slow").ttfa_ms.median == 800
    assert book.for_model("gpt-realtime").name == "default"
    book.update({"model": "sim-fast", "ttfa_scale": 1.4})
    assert book.for_model("sim-fast").ttfa_scale == 1.4 and book.for_model("sim-slow").ttfa_scale == 1
    book.update({"speed": 1.0})  # no model: every profile
    assert all(p.speed == 1.0 for p in book.profiles.values())
    with pytest.raises(ProfileError, match="wer"):
        book.update({"model": "sim-fast", "wer": 2})


def _frames(levels_db, rate=24000):
    """10 ms frames of a 200 Hz tone at the given dBFS RMS (None = digital silence)."""
    out = []
    t = np.arange(rate // 100) / rate
    for db in levels_db:
        if db is None:
            out.append(np.zeros(rate // 100))
        else:
            out.append(np.sin(2 * np.pi * 200 * t) * math.sqrt(2) * 32768 * 10 ** (db / 20))
    return np.concatenate(out).astype(np.int16)


def test_vad_levels_and_timeline():
    assert threshold_level(0.5) == pytest.approx((32768 * 10 ** (-40 / 20)) ** 2)
    vad = EnergyVAD(24000, threshold=0.5, prefix_padding_ms=300, silence_duration_ms=200)
    ev, voiced = vad.feed(_frames([None] * 50))
    assert ev == [] and not voiced
    ev, voiced = vad.feed(_frames([-20] * 30 + [-45] * 19))  # -45 dBFS is below -40: silence
    assert voiced and [(e.kind, e.audio_ms, e.speech_ms) for e in ev] == [("start", 200, 500)]
    ev, _ = vad.feed(_frames([None] * 2))  # 19 + 1 = 20 frames = 200 ms: stop fires
    assert [(e.kind, e.audio_ms, e.speech_ms) for e in ev] == [("stop", 1000, 800)]


def test_vad_fast_path_agrees_with_full_decode():
    pcm = np.concatenate([_frames([None] * 40), _frames([-25] * 70), _frames([None] * 40)])
    chunks = [pcm[i:i + 2400] for i in range(0, len(pcm), 2400)]
    a, b = EnergyVAD(24000), EnergyVAD(24000)
    ea, eb = [], []
    for c in chunks:
        ea += a.feed(c)[0]
        r = b.feed_pcm16_b64(base64.b64encode(c.tobytes()))
        assert r is not None
        eb += r[0]
    assert [(e.kind, e.audio_ms) for e in ea] == [(e.kind, e.audio_ms) for e in eb]
    assert [e.kind for e in ea] == ["start", "stop"]
    assert EnergyVAD(24000).feed_pcm16_b64(base64.b64encode(bytes(1000))) is None  # odd size


def test_call_marker():
    m = markers.find_call('Please [call:get_weather {"city": "Paris", "n": [1, 2]}] now')
    assert m.name == "get_weather" and m.arguments == '{"city":"Paris","n":[1,2]}' and not m.broken
    bad = markers.find_call('[call!:lookup {"id": 7}]')
    assert bad.broken and bad.arguments == '{"id":7'
    with pytest.raises(ValueError):
        __import__("json").loads(bad.arguments)
    assert markers.find_call("[call:noargs]").arguments == "{}"
    assert markers.find_call("no marker here") is None


def test_transcript_marker_and_wer_injection():
    text = " ".join(f"w{i}" for i in range(50))
    assert markers.find_transcript(f"Be nice. [transcript: {text}] ok") == text
    out = markers.inject_wer(text, 0.2, "s1:item1")
    assert sum(a != b for a, b in zip(text.split(), out.split(), strict=True)) == 10
    assert markers.inject_wer(text, 0.2, "s1:item1") == out  # deterministic
    assert markers.inject_wer(text, 0.0, "k") == text


def test_reply_audio_is_speech_like():
    x = audio.speech(24000)
    rms = np.sqrt(np.mean(x ** 2))
    assert 10 ** (-26 / 20) < rms < 10 ** (-10 / 20)  # audible, not silence, not clipping
    # syllable-rate envelope: 20 ms frame energy varies a lot, at about 3-6 Hz
    fr = x[: len(x) // 480 * 480].reshape(-1, 480)
    env = np.sqrt((fr ** 2).mean(axis=1))
    assert env.max() / np.percentile(env, 10) > 10
    spec = np.abs(np.fft.rfft(env - env.mean()))
    freqs = np.fft.rfftfreq(len(env), 0.02)
    assert 2.5 < freqs[np.argmax(spec[1:]) + 1] < 7
    # voiced and pitched, with harmonics: not a pure tone
    seg = x[24000:24000 + 4800] * np.hanning(4800)
    mag = np.abs(np.fft.rfft(seg))
    f = np.fft.rfftfreq(4800, 1 / 24000)
    peak = f[np.argmax(mag)]
    assert 80 < peak < 1200
    strong = f[mag > mag.max() * 0.1]
    assert len({round(v / 50) for v in strong}) >= 4  # energy at several harmonics


def test_g711_roundtrip_and_known_codes():
    assert audio.ULAW_TO_PCM[0xFF] == 0 and audio.ULAW_TO_PCM[0x00] == -32124
    assert audio.ALAW_TO_PCM[0xD5] == 8 and audio.ALAW_TO_PCM[0x55] == -8
    x = audio.speech(8000)[:8000]
    for fmt in ("pcmu", "pcma"):
        enc = audio.encode(x, fmt)
        assert len(enc) == 8000
        back = audio.decode_to_int16(enc, fmt).astype(float) / 32767
        snr = 10 * np.log10(np.sum(x ** 2) / np.sum((x - back) ** 2))
        assert snr > 30  # G.711 gives ~35-38 dB on speech


def test_reply_clip_chunks():
    c = audio.reply_clip("pcm16", 100)
    assert len(base64.b64decode(c.chunk(0))) == 4800
    assert len(base64.b64decode(c.partial(3, 40))) == 1920
    assert len(base64.b64decode(audio.reply_clip("pcmu", 20).chunk(7))) == 160


def test_fault_specs():
    f = Fault.parse({"kind": "stall", "stall_s": 1.5, "count": 1}, now_ns=0)
    assert f.params == {"after_deltas": 2, "stall_s": 1.5} and f.per == "turn"
    rng = random.Random(0)
    assert f.take("m", rng, 1) and not f.take("m", rng, 2)  # count exhausted
    w = Fault.parse({"kind": "http_status", "status": 429, "start_s": 1, "duration_s": 2}, now_ns=0)
    assert w.per == "session"
    assert not w.active("m", int(0.5e9)) and w.active("m", int(1.5e9)) and not w.active("m", int(3e9))
    for bad, where in (({"kind": "x"}, "kind"), ({"kind": "drop", "probability": 2}, "probability"),
                       ({"kind": "drop", "stall_s": 1}, "stall_s"),
                       ({"kind": "http_status", "status": 200}, "status"),
                       ({"kind": "drop", "models": "m"}, "models")):
        with pytest.raises(FaultError, match=where):
            Fault.parse(bad)


def test_session_config_shapes():
    cfg = SessionConfig()
    ga = cfg.updated({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                              "turn_detection": None}}}, ga=True)
    assert ga.input_format == "pcmu" and ga.turn_detection is None and cfg.input_format == "pcm16"
    beta = cfg.updated({"output_audio_format": "g711_alaw", "modalities": ["text"]}, ga=False)
    assert beta.output_format == "pcma" and beta.text_only
    with pytest.raises(ConfigReject) as e:
        cfg.updated({"type": "realtime", "output_modalities": ["audio", "text"]}, ga=True)
    assert e.value.code == "invalid_value"
    with pytest.raises(ConfigReject):
        cfg.updated({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm",
                                                                         "rate": 16000}}}}, ga=True)
    td = cfg.updated({"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "silence_duration_ms": 700}}}}, ga=True).turn_detection
    assert td["silence_duration_ms"] == 700 and td["threshold"] == 0.5  # merged with defaults


def test_lateness_histogram():
    from simulator.truth import Lateness

    lat = Lateness()
    for v in [400] * 98 + [3000, 250_000]:
        lat.add(v)
    s = lat.summary()
    assert s == {"count": 100, "p50_ms": 0.41, "p99_ms": 3.01, "max_ms": 250.0}
    lat.add(-5)  # clamped to 0
    assert lat.summary(reset=True)["count"] == 101
    assert lat.summary()["count"] == 0
