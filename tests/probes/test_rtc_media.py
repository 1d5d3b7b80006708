"""probes/rtc_media.py with plain data, no network: the Opus cache and where an utterance's last
speech packet lies, the caller track's slots (pacing, scheduling, silence between utterances,
lags), and the RTP listener's reply boundaries in both modes, fed with real Opus packets."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

import numpy as np
import pytest

from probes import audio, rtc_media
from probes.dialects.base import OUTPUT_QUIET, AudibleOnset, AudioDelta, ResponseDone


def _utt(speech_s=0.5, trailing_s=0.2):
    return audio.utterance(speech_s, trailing_s, rate=24000, codec="pcm16", chunk_ms=100)


def test_utterances_are_encoded_once_and_the_last_speech_packet_is_placed():
    u = _utt()
    enc = rtc_media.encoded(u)
    assert rtc_media.encoded(u) is enc  # cached per process
    assert len(enc.packets) == 35  # 0.7 s of 20 ms packets
    # the last speech sample (0.5 s) plus the encoder's 6.5 ms delay lies in packet 25
    assert enc.last_speech == 25
    silent = rtc_media.encoded(audio.silent(0.2, rate=24000, codec="pcm16", chunk_ms=100))
    assert silent.last_speech == -1 and len(silent.packets) == 10
    assert len(rtc_media.silence_packet()) <= rtc_media.SILENT_OPUS_BYTES


def test_the_track_plays_utterances_on_their_slots_and_silence_between():
    async def run():
        track = rtc_media.CallerTrack()
        first = await track.recv()  # starts the grid
        assert bytes(first) == track.silence
        lags: list[int] = []
        enc = rtc_media.encoded(_utt(0.2, 0.0))
        t0 = track.slot_ns(3)
        item = track.schedule(enc, t0, lags)
        assert item.start == 3  # the first free slot due at or after t0
        again = track.schedule(enc, 0, None)
        assert again.start == 3 + len(enc.packets)  # after the first one, never overlapping
        got = [await track.recv() for _ in range(2 + 2 * len(enc.packets) + 2)]
        return track, item, again, lags, got, enc

    track, item, again, lags, got, enc = asyncio.run(asyncio.wait_for(run(), 10))
    payloads = [bytes(p) for p in got]
    assert payloads[:2] == [track.silence] * 2
    assert payloads[2:2 + len(enc.packets)] == list(enc.packets)
    assert payloads[-2:] == [track.silence] * 2
    assert [p.pts for p in got] == [960 * k for k in range(1, len(got) + 1)]  # 48 kHz stamps
    assert item.done and again.done and len(lags) == len(enc.packets)
    assert all(0 <= x < 20_000_000 for x in lags), lags  # paced: each frame near its due
    assert item.last_sent_ns is not None


def _packets(pattern: str) -> list[bytes]:
    """One Opus packet per character: '.' digital silence, '#' a -20 dBFS tone, '-' -60 dBFS
    noise (below the gate)."""
    rng = np.random.default_rng(1)
    frames = []
    for c in pattern:
        if c == "#":
            x = np.sin(np.arange(960) * 0.07) * 3276
        elif c == "-":
            x = rng.normal(0, 32768 * 10 ** (-60 / 20), 960)
        else:
            x = np.zeros(960)
        frames.append(x.astype(np.int16))
    packets, _delay = rtc_media._encode_pcm(np.concatenate(frames), rtc_media.RATE)
    return packets[:len(pattern)]


def _listen(mode: str, pattern: str, quiet_ms: float = 100.0):
    events, audio_stamps = [], []
    lis = rtc_media.RtpListener(lambda ev, t: events.append((ev, t)), audio_stamps.extend,
                                mode=mode, delta_bytes=960, quiet_ms=quiet_ms)
    for i, p in enumerate(_packets(pattern)):
        lis.packet(100 + i, 960 * i, p, 1_000 + i)
    lis.flush()
    return lis, events, audio_stamps


def test_marked_mode_finds_the_onset_then_stops_decoding_until_the_reply_ends():
    lis, events, stamps = _listen("marked", "....########....")
    ((onset, t),) = events
    assert onset == (AudioDelta(960), AudibleOnset())
    # the tone starts in packet 4; the encoder's delay puts its first audible 10 ms in 4 or 5
    assert t in (1_004, 1_005)
    assert stamps == list(range(t + 1, 1_016))  # every packet after it is reply audio
    decoded = lis.decoded
    lis.reply_ended()
    for i, p in enumerate(_packets("....")):
        lis.packet(200 + i, 0, p, 2_000 + i)
    assert lis.decoded == decoded + 4 and events == [((AudioDelta(960), AudibleOnset()), t)]
    assert lis.stats.received == 20  # digital silence is decoded (see below), never audible


@pytest.mark.parametrize("mode", ["marked", "quiet"])
def test_a_noise_floor_after_digital_silence_is_no_onset(mode):
    """A decoder that skipped the silence frames met the first -60 dBFS noise packet out of step
    and heard it above the gate: a false onset (seen over WebRTC on GPT-Live's floor)."""
    lis, events, _ = _listen(mode, "." * 10 + "-" * 20)
    assert events == [] and lis.decoded == 30


def test_quiet_mode_ends_a_reply_after_quiet_ms_stamped_when_it_fell():
    lis, events, stamps = _listen("quiet", "---#####--##------------", quiet_ms=100.0)
    kinds = [tuple(type(e) for e in ev) for ev, _t in events]
    assert kinds == [(AudioDelta, AudibleOnset), (ResponseDone,)]
    (done,), t_done = events[1]
    assert done.reason == OUTPUT_QUIET
    # the pause of 2 packets stayed inside the reply; it ended at the first of 5 quiet ones
    assert t_done in (1_012, 1_013)
    assert not lis.in_reply and all(s < t_done for s in stamps)
    assert lis.decoded == 24


def test_the_gate_counts_what_it_hears():
    lis, events, _ = _listen("marked", "-" * 30)
    assert events == [] and lis.stats.received == 30 and lis.stats.lost == 0


@pytest.mark.parametrize("late_ns", [200_000_000])
def test_a_late_track_skips_missed_silence_but_never_an_utterance(late_ns):
    async def run():
        track = rtc_media.CallerTrack()
        await track.recv()
        enc = rtc_media.encoded(_utt(0.2, 0.0))
        item = track.schedule(enc, perf_counter_ns(), [])
        await asyncio.sleep(late_ns / 1e9)  # the loop was busy: the frames are due already
        got = [await track.recv() for _ in range(len(enc.packets))]
        return item, got, enc

    item, got, enc = asyncio.run(asyncio.wait_for(run(), 10))
    assert [bytes(p) for p in got] == list(enc.packets)  # sent late, whole, in order
    assert min(item.lags) >= 0 and max(item.lags) >= late_ns - 40_000_000
