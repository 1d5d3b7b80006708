"""The reply-triggered-without-speech check (issue 20): a reply the server began with no
finished speech of ours to answer fails `no_reply_without_speech` on its turn. Plain data
through the receiver (probes/marks.py) and marks -> metrics (probes/measure.py), then once
against the simulator, whose energy VAD splits a turn at a pause in the caller's speech."""

from __future__ import annotations

import numpy as np
import pytest

from probes.dialects.base import AudioDelta, AudioFormat, ResponseCreated, ResponseDone
from probes.marks import Receiver, TurnMarks
from probes.measure import turn_result

MS = 1_000_000
CHECK = "no_reply_without_speech"


def _turn(index: int, e: int) -> TurnMarks:
    t = TurnMarks(index)
    t.speech_end_ns = e
    t.trigger(e)
    return t


def _reply(r: Receiver, at: int) -> None:
    r.feed((ResponseCreated("resp"),), at)
    r.feed((AudioDelta(4800, b""),), at + 10 * MS)
    r.feed((ResponseDone("completed"),), at + 50 * MS)


def _checks(t: TurnMarks) -> tuple[dict, str]:
    tr = turn_result(t, output_format=AudioFormat("pcm16", 24000), model="m",
                     prices_override=None, jitter_buffer_ms=100.0)
    return tr.checks, tr.notes


def test_replies_to_speech_and_to_a_tool_result_are_not_judged():
    r = Receiver()
    t = _turn(0, 1000 * MS)
    r.begin(t, None)
    _reply(r, 1300 * MS)  # after E: the reply to the speech
    t.trigger(1500 * MS)  # a tool result sent: the next reply answers it
    _reply(r, 1600 * MS)
    assert t.unprompted == 0 and _checks(t)[0] == {}


def test_a_reply_after_the_turns_reply_ended_fails_the_check():
    r = Receiver()
    t = _turn(0, 1000 * MS)
    r.begin(t, None)
    _reply(r, 1300 * MS)
    _reply(r, 2500 * MS)  # nothing of ours asked for it: noise heard as speech
    checks, notes = _checks(t)
    assert t.unprompted == 1 and checks == {CHECK: False}
    assert "began 1 reply(s) with no finished speech" in notes


def test_a_reply_before_the_caller_finished_speaking_fails_the_check():
    r = Receiver()
    t = _turn(0, 2000 * MS)  # E still ahead: the caller is speaking
    r.begin(t, None)
    _reply(r, 1200 * MS)  # the server's VAD ended the turn at a pause
    assert t.unprompted == 1 and _checks(t)[0] == {CHECK: False}


def test_events_before_any_turn_are_not_judged():
    r = Receiver()
    _reply(r, 100 * MS)
    assert r.turn.index == -1 and r.turn.unprompted == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_turn_split_at_a_pause_in_the_speech_is_caught_against_the_simulator(tmp_path):
    """0.6 s of speech, 0.6 s of silence, 0.6 s of speech in one say step: the simulator's VAD
    (200 ms of silence ends a turn) ends the turn at the pause and replies while the caller
    still speaks; with interrupt_response off its reply is not cancelled by the second half."""
    import wave

    from probes import audio
    from probes.script import parse_script
    from probes.session import run_session
    from probes.spec import Scenario
    from tests.sim_server import SimProcess
    from voicepulse.config import sim_target

    rate = 24000
    half = audio.speech(0.6, rate, seed=3)
    pcm = np.concatenate([half, np.zeros(int(0.6 * rate), np.int16), half])
    path = tmp_path / "split.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    script = parse_script([{"say": {"wav": str(path)}}, "wait_reply", {"silence": 1500}])
    with SimProcess(args=["--reply-s", "0.3"]) as sim:
        tgt = sim_target("sim-fast", sim.ws_url + "/v1/realtime")
        split = run_session(tgt, Scenario(script=script, interrupt_response=False),
                            api_key="k")
        whole = run_session(tgt, Scenario(script=parse_script([{"say": 1.2}, "wait_reply",
                                                              {"silence": 1500}]),
                                          interrupt_response=False), api_key="k")
    assert split.turns[0].checks.get(CHECK) is False, (split.outcome, split.turns[0].notes)
    assert CHECK not in whole.turns[0].checks, whole.turns[0].notes  # one phrase: one reply
