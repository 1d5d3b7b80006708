"""Caller realism as units: noise mixed at an SNR (measured back within 0.5 dB), per-session
caller draws reproducible from a seed, and the simulator's energy VAD under falling SNR."""

import numpy as np
import pytest

from probes import audio, callers, noise
from simulator.vad import EnergyVAD

RATE = 24000


@pytest.fixture(scope="module")
def voice():
    return audio.speech(1.5, RATE, seed=7)  # -20 dBFS active level


@pytest.mark.parametrize("kind", noise.KINDS)
@pytest.mark.parametrize("snr", [0.0, 5.0, 12.5, 20.0, 30.0])
def test_mixed_snr_is_the_asked_one(voice, kind, snr):
    mixed = noise.mix(voice, kind, snr, RATE, seed=3)
    assert mixed.dtype == np.int16 and mixed.size == voice.size
    assert abs(noise.snr_db(voice, mixed, RATE) - snr) <= 0.5


def test_snr_is_on_active_speech_not_diluted_by_pauses(voice):
    padded = np.concatenate([voice, np.zeros(RATE * 2, dtype=np.int16)])  # 2 s of silence
    assert noise.active_power(padded, RATE) == pytest.approx(noise.active_power(voice, RATE),
                                                             rel=1e-9)
    assert abs(noise.snr_db(padded, noise.mix(padded, "white", 10, RATE), RATE) - 10) <= 0.5


def test_noise_kinds_have_their_spectrum():
    n = RATE * 2
    spec = {k: np.abs(np.fft.rfft(noise.noise(k, n, RATE, seed=1))) ** 2 for k in noise.KINDS}
    f = np.fft.rfftfreq(n, 1 / RATE)

    def band(k, lo, hi):
        return spec[k][(f >= lo) & (f < hi)].mean()

    assert band("white", 100, 200) == pytest.approx(band("white", 5000, 5100), rel=0.5)
    assert band("pink", 100, 200) > 20 * band("pink", 5000, 5100)  # 1/f: ~34x
    hum = spec["hum"]
    assert f[np.argmax(hum)] == pytest.approx(50.0, abs=1.0)
    assert band("babble", 100, 1000) > 10 * band("babble", 8000, 11000)  # speech-shaped
    with pytest.raises(ValueError, match="noise kind"):
        noise.noise("traffic", 10, RATE)


def test_babble_is_built_from_the_callers_own_voices():
    mine = [audio.speech(1.0, RATE, seed=s) for s in (11, 12)]
    a = noise.noise("babble", RATE, RATE, seed=5, voices=mine)
    b = noise.noise("babble", RATE, RATE, seed=5, voices=mine)
    c = noise.noise("babble", RATE, RATE, seed=5)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_caller_draws_are_reproducible_from_a_seed():
    spec = callers.parse_callers({"noise_snr_db": [5, 30], "noise": ["pink", "babble"],
                                  "voices": ["en-us", "en-gb", "en-us+f3"],
                                  "rate_wpm": [140, 200], "pitch": [30, 70]})
    run = [callers.draw(spec, i, seed=42) for i in range(200)]
    again = [callers.draw(spec, i, seed=42) for i in reversed(range(200))][::-1]
    assert run == again  # same index, same caller, whatever the order
    assert run != [callers.draw(spec, i, seed=43) for i in range(200)]
    assert all(5 <= c.snr_db <= 30 and 140 <= c.rate_wpm <= 200 and 30 <= c.pitch <= 70
               for c in run)
    assert {c.voice for c in run} == {"en-us", "en-gb", "en-us+f3"}  # a fleet, not one voice
    assert {c.noise for c in run} == {"pink", "babble"}
    assert callers.draw(callers.parse_callers({}), 0) == callers.Caller()
    for bad in ({"noise_snr_db": [30, 5]}, {"noise": ["traffic"]}, {"pitch": [0, 120]},
                {"voice": "en"}):
        with pytest.raises(ValueError, match="callers"):
            callers.parse_callers(bad)


def vad_turn(pcm: np.ndarray) -> tuple[int, int | None]:
    """(speech segments the VAD reported, its last speech end in ms; None: never ended)."""
    vad = EnergyVAD(RATE)  # threshold 0.5 = -40 dBFS, 200 ms of silence ends a turn
    stops, ended = 0, None
    for i in range(0, pcm.size, RATE // 50):  # 20 ms appends, as a client sends them
        for e in vad.feed(pcm[i:i + RATE // 50])[0]:
            if e.kind == "stop":
                stops, ended = stops + 1, e.speech_ms
    return stops, ended if not vad.in_speech else None


def test_energy_vad_ends_speech_later_or_never_as_snr_falls(voice):
    """The documented curve (docs/capacity.md, "Noisy callers"): speech at -20 dBFS active,
    pink noise, the simulator's VAD at -40 dBFS (10 ms frames, 200 ms of silence ends a turn).
    Down to ~30 dB SNR the end is the clean one; near 25 dB the noise's loudest frames cross
    the VAD's level, re-open the turn after its end (a split: a second start) and keep it
    open; from ~20 dB the turn never ends. Asserted: the reported end never comes sooner as
    SNR falls, quiet noise changes nothing, loud noise never lets the turn end."""
    tail = np.zeros(RATE, dtype=np.int16)  # 1 s after the speech
    utter = np.concatenate([voice, tail])
    clean_stops, clean_end = vad_turn(utter)
    assert clean_stops >= 1 and clean_end is not None
    curve = {}
    for snr in (40, 30, 25, 22, 20, 15, 10):
        stops, end = vad_turn(noise.mix(utter, "pink", snr, RATE, seed=9))
        curve[snr] = (stops, end)
    ends = [(end if end is not None else float("inf")) for _s, end in curve.values()]
    assert all(a <= b for a, b in zip(ends, ends[1:], strict=False)), curve  # later, never sooner
    assert curve[40][1] == clean_end  # quiet noise changes nothing
    assert curve[10][1] is None  # a noise floor above the VAD's level: the turn never ends
    trouble = [end != clean_end or stops > 1 for stops, end in curve.values()]
    assert trouble == sorted(trouble), curve  # once noisy enough to matter, always


def _decode(u) -> np.ndarray:
    import base64

    return np.frombuffer(b"".join(base64.b64decode(c) for c in u.chunks), dtype="<i2")


def test_say_steps_take_noise_and_the_player_mixes_it():
    from types import SimpleNamespace

    from probes.play import say_utterance
    from probes.script import Say, StepError, parse_script
    from probes.spec import Scenario

    script = parse_script([{"say": {"duration": 1.2, "noise": {"kind": "babble", "snr_db": 10}}},
                           "wait_reply", {"say": 0.8}, "wait_reply"])
    noisy, quiet = script.says()
    assert (noisy.noise, noisy.snr_db) == ("babble", 10.0) and quiet.noise is None
    for bad, where in (({"kind": "traffic", "snr_db": 5}, "noise.kind"), ({"kind": "pink"},
                                                                        "noise.snr_db")):
        with pytest.raises(StepError, match=where):
            parse_script([{"say": {"duration": 1, "noise": bad}}])
    dialect = SimpleNamespace(input_format=SimpleNamespace(rate=RATE, codec="pcm16"))
    sc = Scenario(script=script)
    clean = say_utterance(dialect, sc, Say("synthetic", 1.2), 5)
    mixed = say_utterance(dialect, sc, noisy, 5)
    assert len(mixed.chunks) == len(clean.chunks) and mixed.speech_chunks == clean.speech_chunks
    n = int(round(clean.speech_s * RATE))
    c, m = _decode(clean), _decode(mixed)
    assert abs(noise.snr_db(c[:n], m[:n], RATE) - 10.0) <= 0.5
    assert np.abs(m[n:].astype(float)).mean() > 10 * max(np.abs(c[n:].astype(float)).mean(), 1)
    assert say_utterance(dialect, sc, noisy, 5) is mixed  # rendered once, shared by sessions


def test_spoken_steps_take_rate_wpm():
    from probes.script import StepError, parse_script

    if not audio.espeak_available():
        pytest.skip("needs espeak-ng")
    (say,) = parse_script([{"say": {"speak": "hello there", "voice": "en-gb", "rate_wpm": 220}},
                           "wait_reply"]).says()
    assert (say.voice, say.wpm) == ("en-gb", 220)
    with pytest.raises(StepError, match="rate_wpm"):
        parse_script([{"say": {"speak": "hi", "wpm": 150, "rate_wpm": 220}}])
    fast = audio.spoken("hello there how are you today", wpm=220)
    slow = audio.spoken("hello there how are you today", wpm=120)
    assert fast.speech_s < 0.75 * slow.speech_s  # the rate is really the caller's speed
