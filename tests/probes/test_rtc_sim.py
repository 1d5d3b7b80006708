"""The engine's WebRTC transport (probes/rtc.py) against the simulator's WebRTC routes, over
loopback: a Realtime and a GPT-Live probe complete their turns, `ttfa_ms` is taken on the
arrival of the onset's RTP packet (checked against the simulator's RTP send truth), the jitter
buffer's delay is `playout_delay_ms` and never part of it, and `voicepulse probe` runs a
configured `transport: webrtc` target.

Truth: the simulator stamps each audible onset with the send time of the RTP packet that goes
out right after the onset frame left its track (simulator/webrtc/media.py). aiortc's Opus
encoder resamples into 960-sample frames and so holds one frame back: the onset's audio is in
the *next* packet (checked here by encoding a stream with aiortc's own encoder); a track that
sends pre-encoded packets puts it in the stamped one. The test finds the packet our gate opened
on by its RTP sequence number and times its arrival against that packet's send (`_send_ns`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from fractions import Fraction

import av
import numpy as np
import orjson
import pytest

from probes import audible, rtc
from probes.session import run_session
from probes.spec import Scenario, Target
from simulator.process import SimProcess
from tests.timing import bounded

pytestmark = pytest.mark.slow

TICK_MS = 20.0  # the simulator's track tick: the encoder holds the onset frame this long
ERR_MS = 5.0  # the bound on ttfa_ms error vs truth, one session (p99)


@pytest.fixture(scope="module")
def rtc_sim():
    with SimProcess(["--http-port", "0", "--ttfa-ms", "150", "--reply-s", "0.8"]) as s:
        yield s


def _target(sim, api: str) -> Target:
    if api == "realtime":
        return Target("rtc", sim.http_url.replace("http://", "ws://") + "/v1/realtime",
                      "sim-fast", transport="webrtc")
    return Target("rtc-live", sim.http_url + "/v1/live/sessions", "gpt-live-1",
                  provider="openai-live", transport="webrtc", delegation="client")


def _onsets(sim, session_id: str) -> list[dict]:
    with urllib.request.urlopen(f"{sim.http_url}/truth/webrtc?session_id={session_id}",
                                timeout=5) as r:
        return sorted(json.loads(r.read())["onsets"], key=lambda o: o["rtp_send_ns"])


_SEEN: list[list[tuple[int, int]]] = []  # each closed transport's onset packets (seq, arrival)
_close = rtc.RtcTransport.close


def _closing(self) -> None:
    _SEEN.append(list(self.listener.onset_log))
    _close(self)


def _probe(sim, api: str, turns: int = 3):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rtc.RtcTransport, "close", _closing)
        res = run_session(_target(sim, api), Scenario(turns=turns, utterance_s=1.0,
                                                      pause_s=0.3), api_key="sk-test")
    onsets = _onsets(sim, res.server_session_id)
    return res, onsets, _SEEN[-1]


def _send_ns(o: dict, k: int) -> int:
    """When the k-th packet after the simulator's stamped one left: the stamp itself for k = 0;
    else when its frame was due (k ticks after the onset frame) or, if the track was running
    behind, right after the stamped one, plus the recv -> send latency the stamped packet
    showed when it was on time."""
    if k == 0:
        return o["rtp_send_ns"]
    tick = int(TICK_MS * 1e6)
    late = o["rtp_send_ns"] - o["frame_due_ns"]
    return max(o["frame_due_ns"] + k * tick, o["rtp_send_ns"]) + (late if late < 2e6 else 0)


def _matched(res, onsets, seen) -> list[tuple[int, float]]:
    """Per turn: (k, our onset packet's arrival minus that packet's send, ms), k the packets
    between the simulator's stamped packet and the one our gate found the onset in, matched by
    RTP sequence number. k is 1 when aiortc's encoder held the onset frame (see the module
    doc), 0 when the stamped packet carries it; one more for an onset that ramps up: our gate
    judges decoded audio in 10 ms windows, the simulator its frames before encoding."""
    out = []
    for t in res.turns:
        if t.first_audible_ns is None:
            continue
        seq = next(q for q, at in seen if at == t.first_audible_ns)
        o = min(onsets, key=lambda o: (seq - o["rtp_seq"]) % 65536)
        k = (seq - o["rtp_seq"]) % 65536
        if k > 3:  # no onset of the simulator's just before ours: say so, do not time it
            out.append((k, float("inf")))
            continue
        sent = (o["carrier_send_ns"] if o.get("carrier_seq") == seq  # the simulator's own stamp
                else _send_ns(o, k))
        out.append((k, (t.first_audible_ns - sent) / 1e6))
    return out


def _timing_misses(got) -> list[str]:
    res, onsets, seen = got
    if res.outcome != "ok" or len(onsets) < len(res.turns):
        return []  # not a timing question: the asserts say what is wrong
    got = _matched(res, onsets, seen)
    bad = [f"turn onset {e:+.2f} ms off truth (packet +{k})" for k, e in got
           if abs(e) > ERR_MS or k > min(g for g, _e in got) + 1]
    # the caller's frames leave on time (one busy loop thread delays every track)
    bad += [f"turn {t.index} send lag p99 {t.send_lag_p99_ms:.1f} ms" for t in res.turns
            if t.send_lag_p99_ms is not None and t.send_lag_p99_ms >= 20]
    return bad


def _check_session(res, onsets, api: str) -> None:
    assert res.outcome == "ok", (res.outcome, res.error)
    assert res.transport == "webrtc" and len(res.turns) == 3
    assert res.rtp_received > 100 and res.rtp_lost == 0 and res.rtp_jitter_ms is not None
    assert len(onsets) == 3, onsets  # one audible onset per reply, no spurious one
    for t in res.turns:
        assert t.outcome == "ok", (t.outcome, t.error)
        # ttfa_ms is the audible onset's packet arrival; the player's delay is apart from it
        assert t.ttfa_ms == t.ttfa_audible_ms and 150 < t.ttfa_ms < t.turn_ms + 1000
        assert t.playout_delay_ms is not None and 20 < t.playout_delay_ms < 300
        assert 0.6 <= t.audio_s <= 0.9, t.audio_s  # the 0.8 s reply, 20 ms per packet
        assert t.stall_ms == 0
        assert t.send_lag_p99_ms is not None and t.send_lag_p99_ms < 20  # (also a miss above)
        if api == "realtime":
            assert t.vad_ms is not None and t.audio_buffer_started_ms is not None
        else:
            assert t.audio_buffer_started_ms is None  # no such event on GPT-Live


@pytest.mark.parametrize("api", ["realtime", "live"])
def test_webrtc_probe_turns_and_onset_timing(rtc_sim, api):
    res, onsets, seen = bounded(lambda: _probe(rtc_sim, api), _timing_misses,
                                pids=[rtc_sim.pid], budget_ms=20,
                                what=f"WebRTC {api} onset arrival vs truth")
    _check_session(res, onsets, api)
    got = _matched(res, onsets, seen)
    assert len(got) == 3 and max(abs(e) for _g, e in got) <= ERR_MS, got
    held = min(k for k, _e in got)  # the packet that carries the onset frame, mostly
    assert held in (0, 1) and sum(k == held for k, _e in got) >= 2, got
    # the onset is stamped on arrival: before the decoded frame came out of the jitter buffer
    for t, (_g, e) in zip(res.turns, got, strict=True):
        assert e < t.playout_delay_ms - ERR_MS


def test_encoder_holds_the_onset_frame_one_tick():
    """The truth correction above: through aiortc's encoder a tone starting in input frame k
    is first audible in the packet produced after frame k + 1."""
    from aiortc.codecs.opus import OpusEncoder

    enc = OpusEncoder()
    dec = av.CodecContext.create("libopus", "r")
    dec.format, dec.layout, dec.sample_rate = "s16", "mono", 48000
    level = audible.threshold() * 480
    first = None
    for k in range(12):
        x = np.zeros(480, "<i2") if k < 6 else (np.sin(np.arange(480) * 0.1) * 8000).astype("<i2")
        f = av.AudioFrame(format="s16", layout="mono", samples=480)
        f.planes[0].update(x.tobytes())
        f.sample_rate, f.pts, f.time_base = 24000, k * 480, Fraction(1, 24000)
        payloads, _ts = enc.encode(f)
        for p in payloads:
            (out,) = dec.decode(av.Packet(p))
            y = np.frombuffer(out.planes[0], "<i2", count=out.samples).astype(np.float32)
            w = y[:960].reshape(-1, 480)
            if first is None and float((w * w).sum(1).max()) >= level:
                first = k
    assert first == 7


def test_probe_cli_with_a_webrtc_target(rtc_sim, tmp_path):
    f = tmp_path / "vp.yaml"
    f.write_text(f"""targets:
  rtc:
    provider: openai
    transport: webrtc
    url: {rtc_sim.http_url}/v1/realtime
    model: sim-fast
    api_key_env: SIM_API_KEY
scenarios:
  default: {{turns: 1, utterance_s: 1.0}}
""")
    out = subprocess.run(
        [sys.executable, "-m", "voicepulse.cli", "probe", "rtc", "--config", str(f), "--json",
         "--no-store"], capture_output=True, text=True, timeout=90, cwd=tmp_path,
        env={**os.environ, "SIM_API_KEY": "k"})
    assert out.returncode == 0, out.stderr + out.stdout
    doc = orjson.loads(out.stdout)
    assert doc["outcome"] == "ok" and doc["transport"] == "webrtc"
    assert doc["rtp"]["received"] > 0 and doc["rtp"]["lost"] == 0
    (t,) = doc["turns"]
    assert 0 < t["ttfa_ms"] == t["ttfa_audible_ms"] < t["turn_ms"] + 1000
    assert t["playout_delay_ms"] > 0


def test_barge_in_over_a_reply_still_playing(rtc_sim):
    """Over WebRTC a Realtime reply plays on in real time after its response.done: speaking
    300 ms into its audio is a barge-in over it (over a WebSocket the ended reply would leave
    nothing to interrupt), and the audio that still came after the user spoke is measured."""
    from probes.script import parse_script

    script = parse_script([{"say": 0.8}, {"interrupt_after": {"ms": 300, "say": {"duration": 0.6}}},
                           "wait_reply"])
    res = run_session(_target(rtc_sim, "realtime"), Scenario(script=script), api_key="k")
    assert res.outcome == "ok", (res.outcome, res.error)
    first = res.turns[0]
    assert first.barge_in_ns is not None and first.checks.get("reply_active", True), first.notes
    assert "reply_stopped" in first.checks  # judged (this simulator plays a done reply out)
    assert first.barge_in_audio_ms is not None and 0 < first.barge_in_audio_ms < 800
    assert res.turns[1].ttfa_ms is not None and res.turns[1].outcome == "ok"


def test_a_data_channel_closed_mid_reply_is_dc_closed(rtc_sim):
    """The simulator's dc_close fault closes `oai-events` after 3 audio deltas of the reply; the
    call itself stays up. Our own hang-up at a session's end is never counted as one."""
    rtc_sim.clear_faults()
    rtc_sim.fault(kind="dc_close", after_deltas=3, count=1)
    try:
        res = run_session(_target(rtc_sim, "realtime"), Scenario(turns=1, utterance_s=1.0),
                          api_key="sk-test")
    finally:
        rtc_sim.clear_faults()
    assert res.outcome == "dc_closed" and "data channel closed" in res.error, (res.outcome,
                                                                               res.error)
    again = run_session(_target(rtc_sim, "realtime"), Scenario(turns=1, utterance_s=1.0),
                        api_key="sk-test")
    assert again.outcome == "ok", again.error  # a normal end closes the channel too: still ok
