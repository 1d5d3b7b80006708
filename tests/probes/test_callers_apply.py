"""Per-session callers (probes/callers.py): the scenario as one caller plays it, the bounded
pool a load run renders, and the say step's pitch. Fast: synthetic speech, one espeak-ng call."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from probes import audio, noise
from probes.callers import CallerError, CallerPool, apply, draw, parse_callers
from probes.espeak import split_voice, voice_spec
from probes.play import plain_script, say_utterance, silence_utterance
from probes.script import Pause, Say, Silence, StepError, parse_script
from probes.spec import Scenario

SPEC = {"noise_snr_db": [5, 30], "noise": ["pink", "babble", "white"],
        "voices": ["en-us", "en-gb", "en-us+f3"], "rate_wpm": [140, 200], "pitch": [30, 70],
        "pause_ms": [-100, 300], "variants": 6}


def _spoken_script():
    return parse_script([{"say": {"speak": "I would like to check my order", "voice": "en-us"}},
                         "wait_reply", {"silence": 500},
                         {"say": {"duration": 1.0, "noise": {"kind": "hum", "snr_db": 40}}},
                         "wait_reply",
                         {"repeat": {"times": 2, "steps": [{"silence": 200}, {"say": 0.5}]}}])


@pytest.fixture
def openai_dialect():
    from probes.dialects import dialect_for
    from probes.spec import Target

    return dialect_for(Target("t", "ws://127.0.0.1:9/v1/realtime", "sim-fast"))


def _pcm(u) -> np.ndarray:
    return np.frombuffer(b"".join(base64.b64decode(c) for c in u.chunks), dtype="<i2")


def test_apply_gives_speak_steps_the_callers_voice_and_every_say_its_noise():
    sc = Scenario(name="calls", script=_spoken_script(), callers=SPEC)
    c = draw(parse_callers(SPEC), 3, seed=7)
    out = apply(sc, c)
    says = out.script.says()
    spoken = says[0]
    assert split_voice(spoken.voice) == (c.voice, c.pitch) and spoken.wpm == c.rate_wpm
    assert (spoken.noise, spoken.snr_db) == (c.noise, c.snr_db)
    assert (says[1].noise, says[1].snr_db) == ("hum", 40.0)  # a step's own noise wins
    assert says[1].voice == "en-us" and says[1].wpm == 165  # synthetic: no voice to change
    assert all(s.noise == c.noise for s in says[2:])  # inside the repeat too
    assert out.seed == c.seed and out.name == "calls" and out.callers is None
    assert apply(sc, c) == out  # pure: the same caller, the same scenario
    assert sc.script.says()[0].voice == "en-us"  # the original is untouched


def test_pause_jitter_moves_each_pause_within_the_range_and_apart():
    sc = Scenario(script=_spoken_script())
    c = draw(parse_callers({"pause_ms": [-100, 300]}), 0, seed=1)
    steps = apply(sc, c).script.steps
    silences = [steps[2].ms] + [s.ms for s in steps[5].steps if isinstance(s, Silence)]
    assert 400 <= silences[0] <= 800 and 100 <= silences[1] <= 500
    assert silences[0] - 500 != silences[1] - 200  # each pause has its own offset
    # a plain `turns: N` scenario is compiled as the player does, pauses included
    plain = Scenario(turns=4, pause_s=0.3)
    pauses = [s.s for s in apply(plain, c).script.steps if isinstance(s, Pause)]
    assert len(pauses) == 3 and all(0.2 <= p <= 0.6 for p in pauses) and len(set(pauses)) == 3
    assert len(apply(plain, c).script.says()) == len(plain_script(plain).says()) == 4
    # no pause_ms: pauses as written
    quiet = draw(parse_callers({"noise_snr_db": 20}), 0, seed=1)
    assert apply(sc, quiet).script.steps[2] == Silence(500.0)


def test_the_rendered_audio_carries_the_drawn_noise_and_pause(openai_dialect):
    c = draw(parse_callers({"noise_snr_db": [10, 20], "pause_ms": [200, 200]}), 5, seed=3)
    sc = apply(Scenario(turns=1, utterance_s=1.0, trailing_silence_s=0.4), c)
    say = sc.script.says()[0]
    noisy = say_utterance(openai_dialect, sc, say, sc.seed)
    clean = say_utterance(openai_dialect, sc, Say("synthetic", 1.0), sc.seed)
    n = int(clean.speech_s * clean.rate)
    measured = noise.snr_db(_pcm(clean)[:n], _pcm(noisy)[:n], clean.rate)
    assert abs(measured - c.snr_db) <= 0.5, (measured, c.snr_db)
    jittered = apply(Scenario(script=parse_script([{"say": 0.5}, {"silence": 300}])), c)
    gap = silence_utterance(openai_dialect, jittered, jittered.script.steps[1].ms)
    assert gap.duration_s == pytest.approx(0.5, abs=0.011)  # 300 ms + the 200 ms drawn


def test_the_pool_is_bounded_and_each_session_picks_from_seed_and_index():
    sc = Scenario(turns=1, callers={"noise_snr_db": [5, 30], "variants": 4})
    a, b = CallerPool(sc, seed=11), CallerPool(sc, seed=11)
    picks = [a.pick(i)[0] for i in range(200)]
    assert picks == [b.pick(i)[0] for i in reversed(range(200))][::-1]  # any order, same
    assert len(set(picks)) == 4 and set(picks) == set(a.callers)  # bounded, all used
    assert {p.snr_db for p in picks} != {p.snr_db for p in (CallerPool(sc, 12).pick(i)[0]
                                                            for i in range(200))}
    caller, played = a.pick(17)
    assert played == apply(sc, caller) and played.script.says()[0].snr_db == caller.snr_db
    assert caller.label == f"pink@{caller.snr_db:g}dB" and caller.kind == "default/pink"


@pytest.mark.parametrize("bad, key", [
    ({"pitch": [30, 170]}, "pitch"), ({"pause_ms": "long"}, "pause_ms"),
    ({"variants": 0}, "variants"), ({"variants": 65}, "variants"),
    ({"voices": ["en-us:p3"]}, "voices"), ({"noise": ["traffic"]}, "noise"), ({"x": 1}, "x"),
])
def test_bad_callers_name_their_key(bad, key):
    with pytest.raises(CallerError) as e:
        parse_callers(bad)
    assert e.value.key == key and str(e.value).startswith(f"callers.{key}: ")


def test_a_say_steps_pitch_travels_in_its_voice_string():
    if not audio.espeak_available():
        pytest.skip("espeak-ng not installed")
    say = parse_script([{"say": {"speak": "hello", "voice": "en-gb", "pitch": 80}}]).steps[0]
    assert say.voice == "en-gb:p80" and split_voice(say.voice) == ("en-gb", 80)
    assert voice_spec("en-gb:p80", 20) == "en-gb:p20" and voice_spec("en-gb", None) == "en-gb"
    for raw, key, msg in (
            ({"speak": "hi", "pitch": 100}, "steps[0].say.pitch", "expected 0..99"),
            ({"speak": "hi", "voice": "en-gb:p3"}, "steps[0].say.voice", "pitch"),
    ):
        with pytest.raises(StepError) as e:
            parse_script([{"say": raw}])
        assert e.value.key == key and msg in e.value.message


def test_spoken_pitch_raises_the_voices_f0():
    """espeak-ng's pitch, through the say step's voice string: F0 (autocorrelation over voiced
    40 ms frames, median) rises from pitch 10 to 90 (measured 72 -> 150 Hz)."""
    if not audio.espeak_available():
        pytest.skip("espeak-ng not installed")

    def f0(pitch: int) -> float:
        u = audio.spoken("hello there, how are you today", voice=voice_spec("en-us", pitch))
        x, r = _pcm(u).astype(np.float64), u.rate
        fr, est = int(0.04 * r), []
        for i in range(0, x.size - fr, fr):
            w = x[i:i + fr]
            if np.sqrt(np.mean(w * w)) < 300:
                continue
            ac = np.correlate(w, w, "full")[fr - 1:]
            lo, hi = r // 400, r // 60
            est.append(r / (lo + int(np.argmax(ac[lo:hi]))))
        return float(np.median(est))

    low, high = f0(10), f0(90)
    assert high > low * 1.5, (low, high)


def test_a_pools_renderings_all_stay_cached(openai_dialect):
    """What a worker renders before the run (every variant) is what its sessions then find: a
    second pass over every variant renders and encodes nothing (no cache miss, no new message
    list), at the most renderings callers allow ((24 variants + the scenario) x 8)."""
    from probes import messages
    from probes.callers import MAX_RENDERINGS
    from probes.play import render

    steps = [{"say": 0.3}, "wait_reply", {"silence": 100}] * 4
    sc = Scenario(turns=1, trailing_silence_s=0.2, script=parse_script(steps),
                  callers={"noise_snr_db": [10, 30], "pause_ms": [0, 50], "variants": 24})
    pool = CallerPool(sc, seed=4)
    assert 25 * (len(sc.script.says()) + 4) == MAX_RENDERINGS
    caches = (audio.utterance, audio.silent, noise.noisy_utterance)
    for c in caches:
        c.cache_clear()
    messages._MESSAGES.clear()
    for v in (sc, *pool.scenarios):
        render(openai_dialect, v)
    misses = [c.cache_info().misses for c in caches]
    wire = dict(messages._MESSAGES)
    for v in (sc, *pool.scenarios):
        render(openai_dialect, v)
    assert [c.cache_info().misses for c in caches] == misses
    assert messages._MESSAGES.keys() == wire.keys()
    with pytest.raises(CallerError, match="variants"):
        CallerPool(Scenario(script=sc.script, callers={**sc.callers, "variants": 25}), seed=4)
