"""The audible gate and the onset/quiet stage, with plain data (probes/audible.py, onset.py)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from probes import audible, audio
from probes.dialects.base import (
    OUTPUT_QUIET,
    AudibleOnset,
    AudioDelta,
    AudioFormat,
    ResponseDone,
    TranscriptDelta,
)
from probes.onset import OnsetGate, QuietGate

PCM = AudioFormat("pcm16", 24000)
MS = 1_000_000


def chunk(dbfs: float | None, ms: int = 100, rate: int = 24000, codec: str = "pcm16",
          seed: int = 3) -> bytes:
    n = rate * ms // 1000
    x = np.zeros(n) if dbfs is None else np.random.default_rng(seed).normal(
        0, 10 ** (dbfs / 20) * 32768, n)
    pcm = np.clip(x, -32768, 32767).astype(np.int16)
    return base64.b64encode(audio.encode(pcm, codec))


def delta(dbfs: float | None, ms: int = 100) -> AudioDelta:
    return AudioDelta(24000 * 2 * ms // 1000, chunk(dbfs, ms))


@pytest.mark.parametrize("codec,rate", [("pcm16", 24000), ("pcm16", 16000),
                                        ("g711_ulaw", 8000), ("g711_alaw", 8000)])
def test_gate_separates_the_quiet_floor_from_speech_in_every_format(codec, rate):
    fmt, ms2 = AudioFormat(codec, rate), audible.threshold()
    assert not audible.audible(chunk(None, rate=rate, codec=codec), fmt, ms2)
    for seed in range(20):  # the simulator's -60 dBFS floor never opens the gate
        assert not audible.audible(chunk(-60, rate=rate, codec=codec, seed=seed), fmt, ms2)
    assert audible.audible(chunk(-40, rate=rate, codec=codec), fmt, ms2)
    assert audible.audible(chunk(-20, rate=rate, codec=codec), fmt, ms2)
    level = audible.loudest_dbfs(audible.samples(chunk(-30, rate=rate, codec=codec), fmt), rate)
    assert level == pytest.approx(-30, abs=1.5)


def test_g711_tables_equal_the_reference_decoders():
    b = bytes(range(256))
    assert np.array_equal(audible._TABLES["g711_ulaw"][np.frombuffer(b, np.uint8)],
                          audio.ulaw_decode(b))
    assert np.array_equal(audible._TABLES["g711_alaw"][np.frombuffer(b, np.uint8)],
                          audio.alaw_decode(b))


def test_ten_ms_of_speech_after_ninety_of_silence_is_audible():
    x = np.concatenate([np.zeros(2160), np.random.default_rng(1).normal(0, 3000, 240)])
    b64 = base64.b64encode(x.astype("<i2").tobytes())
    assert audible.audible(b64, PCM, audible.threshold())
    assert not audible.audible(b64, PCM, audible.threshold(-10))


def test_onset_gate_marks_the_first_audible_delta_once_per_reply():
    g = OnsetGate(PCM)
    assert g.feed((delta(None),), 1) == (((delta(None),), 1),)
    [(evs, t)] = g.feed((delta(-20),), 2)
    assert t == 2 and type(evs[1]) is AudibleOnset
    [(evs, _)] = g.feed((delta(-20),), 3)
    assert len(evs) == 1  # found: no more decoding, no second onset
    g.feed((ResponseDone("completed"),), 4)
    [(evs, _)] = g.feed((delta(-20),), 5)
    assert type(evs[-1]) is AudibleOnset  # the next reply has its own onset


def test_quiet_gate_drops_quiet_between_replies_holds_pauses_and_ends_on_quiet():
    g = QuietGate(PCM, quiet_ms=300)
    assert g.feed((delta(-60),), 0) == []  # between replies: not reply audio
    [(evs, t)] = g.feed((delta(-20),), 100 * MS)
    assert t == 100 * MS and type(evs[1]) is AudibleOnset
    assert g.feed((delta(None),), 200 * MS) == []  # a pause: held
    out = g.feed((delta(-20),), 300 * MS)  # sound again: the pause is passed on, own stamp
    assert [t for _, t in out] == [200 * MS, 300 * MS] and len(out[1][0]) == 1
    assert g.feed((delta(-60),), 400 * MS) == []
    assert g.feed((delta(-60),), 500 * MS) == []
    [(evs, t)] = g.feed((delta(-60),), 600 * MS)  # 300 ms of quiet: the reply ended at 400
    assert evs[0].reason == OUTPUT_QUIET and t == 400 * MS
    assert g.feed((delta(-60),), 700 * MS) == []


def test_quiet_gate_a_transcript_without_sound_opens_a_silent_reply():
    g = QuietGate(PCM, quiet_ms=200)
    g.feed((TranscriptDelta("hello "),), 0)
    assert g.feed((delta(None),), 100 * MS) == []
    out = g.feed((TranscriptDelta("there "),), 150 * MS)  # still talking: the silence was reply
    assert [type(e) for evs, _ in out for e in evs] == [AudioDelta, TranscriptDelta]
    g.feed((delta(None),), 200 * MS)
    [(evs, t)] = g.feed((delta(None),), 300 * MS)
    assert type(evs[0]) is ResponseDone and t == 200 * MS
