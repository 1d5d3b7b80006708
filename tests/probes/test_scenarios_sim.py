"""Scripted voice scenarios against the simulator over loopback, held against its ground truth:
barge-in, tool calls (OpenAI and Gemini), WER, espeak-ng speech, G.711 and long calls.

Ground truth marks are on CLOCK_MONOTONIC like ours, so each comparison is mark against mark.
"""

from __future__ import annotations

import wave

import numpy as np
import pytest

from probes import audio
from probes.script import parse_script
from probes.session import run_session
from probes.spec import Scenario, Target, Timeouts
from tests.sim_server import SimProcess
from tests.timing import bounded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # real-time scripted calls

FIXED = ["--ttfa-ms", "150", "--reply-s", "0.6", "--delta-ms", "50", "--speed", "4"]


@pytest.fixture(scope="module")
def sim():
    with SimProcess(args=FIXED) as s:
        yield s


def openai(sim, model: str, **kw) -> Target:
    return Target("sim", sim.ws_url + "/v1/realtime", model, **kw)


def gemini(sim, model: str, **kw) -> Target:
    return Target("gsim", sim.gemini_url(), model, provider="gemini", **kw)


def scripted(steps, expect=None, base_dir="", **kw) -> Scenario:
    kw.setdefault("trailing_silence_s", 0.5)
    return Scenario(name="scripted", script=parse_script(steps, expect, base_dir=base_dir), **kw)


def responses(sim, sid: str) -> list[dict]:
    return sorted(sim.turns(sid), key=lambda t: t["turn_index"])


# ---- barge-in ---------------------------------------------------------------------------------

BARGE = [{"say": 0.8}, {"interrupt_after": {"ms": 300, "say": {"duration": 0.6}}}, "wait_reply"]


@pytest.mark.parametrize("make", [openai, gemini], ids=["openai", "gemini"])
def test_barge_in_matches_truth(sim, make):
    """The simulator stops its reply 250 ms after it hears the user speak over it."""
    model = f"barge-{make.__name__}"
    sim.set_profile(model=model, reply_s=3.0, speed=1.0, ttfa_ms=150, cancel_delay_ms=250)
    res = run_session(make(sim, model), scripted(BARGE), api_key="x")
    assert res.outcome == "ok", res.error
    cut, answer = res.turns
    truth = responses(sim, res.server_session_id)
    assert truth[0]["status"] == "cancelled" and truth[1]["status"] == "completed"
    assert cut.checks["reply_stopped"] is True and cut.outcome == "ok"
    # the barge-in started 300 ms into the reply's audio (intended, like E)
    assert cut.barge_in_ns == cut.first_audio_ns + 300_000_000
    # the server's own record of when it stopped the reply, from the same start mark
    want = (truth[0]["cancel_ns"] - cut.barge_in_ns) / 1e6
    assert cut.barge_in_ms == pytest.approx(want, abs=5.0)
    # it heard the speech, then waited the profile's cancel delay
    heard = (truth[0]["cancel_ns"] - truth[0]["barge_in_speech_ns"]) / 1e6
    assert 245 <= heard <= 275 and cut.barge_in_ms >= heard
    # real-time reply audio kept coming until the stop: about barge_in_ms of it
    assert cut.barge_in_audio_ms == pytest.approx(cut.barge_in_ms, abs=120)
    assert answer.ttfa_ms is not None and answer.response_status == "completed"


# OpenAI answers the speech once the reply it spoke over has ended; the Gemini simulator (like
# NO_INTERRUPTION) adds it to the history unanswered, so that script just stays on the line
NO_BARGE = {"openai": BARGE, "gemini": BARGE[:2] + [{"silence": 1500}]}


@pytest.mark.parametrize("make", [openai, gemini], ids=["openai", "gemini"])
def test_no_barge_in_when_interrupt_response_is_off(sim, make):
    model = f"nobarge-{make.__name__}"
    sim.set_profile(model=model, reply_s=1.2, speed=1.0, ttfa_ms=150, cancel_delay_ms=0)
    res = run_session(make(sim, model), scripted(NO_BARGE[make.__name__], interrupt_response=False),
                      api_key="x")
    assert res.outcome == "ok", res.error
    cut, answer = res.turns
    truth = responses(sim, res.server_session_id)
    assert truth[0]["status"] == "completed"  # the reply played to its end
    assert cut.barge_in_ms is None and cut.checks["reply_stopped"] is False
    assert cut.response_status == "completed" and cut.barge_in_ns is not None
    assert cut.audio_s == pytest.approx(truth[0]["reply_audio_ms"] / 1000, abs=0.051)
    if make is openai:
        assert answer.response_status == "completed"
        assert answer.first_audio_ns > cut.response_done_ns


def test_interrupting_a_reply_that_already_ended_is_not_a_barge_in(sim):
    steps = [{"say": 0.5}, {"interrupt_after": {"ms": 1500, "say": {"duration": 0.4}}}, "wait_reply"]
    res = run_session(openai(sim, "sim-fast"), scripted(steps), api_key="x")  # 0.6 s at 4x
    assert res.outcome == "ok", res.error
    first, second = res.turns
    assert first.checks == {"reply_active": False} and first.barge_in_ns is None
    assert "ended before 1500 ms" in first.notes and first.response_status == "completed"
    assert second.ttfa_ms is not None


# ---- tool calls -------------------------------------------------------------------------------

TOOLS = [{"type": "function", "name": "lookup_order", "description": "Find an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                         "required": ["order_id"]}}]
SUPPORT = [
    {"say": 0.8},
    {"expect_tool": {"name": "lookup_order", "args": {"order_id": "A1234"}}},
    {"tool_result": {"output": {"status": "shipped"}, "delay_ms": 200}},
    "wait_reply",
    {"say": 0.5},
    "wait_reply",
]


@pytest.mark.parametrize("make", [openai, gemini], ids=["openai", "gemini"])
def test_tool_call_flow(sim, make):
    def measure():
        res = run_session(make(sim, "sim-fast", simulator_hints=True),
                          scripted(SUPPORT, tools=TOOLS), api_key="x")
        assert res.outcome == "ok", res.error
        truth = responses(sim, res.server_session_id)
        call = next(t for t in truth if t["tool_call"])
        after = next(t for t in truth if t["tool_output_ns"] is not None)
        return res, call, after

    def misses(r) -> list:
        res, call, after = r
        ask = res.turns[0]
        bad = []
        # E -> arguments complete, against the simulator's write of them
        if ask.tool_ms != pytest.approx((call["tool_args_done_ns"] - ask.speech_end_ns) / 1e6, abs=5):
            bad.append(f"tool_ms {ask.tool_ms} vs truth (5 ms)")
        # result sent -> first audio after it
        if ask.tool_result_ms != pytest.approx(
                (after["first_audio_ns"] - ask.tool_result_sent_ns) / 1e6, abs=5):
            bad.append(f"tool_result_ms {ask.tool_result_ms} vs truth (5 ms)")
        return bad

    res, call, after = bounded(measure, misses, pids=[sim.pid], budget_ms=5.0,
                               what="tool call marks vs the simulator's truth")
    ask, thanks = res.turns
    assert ask.checks == {"tool_called": True, "tool_args_json": True, "tool_args_match": True}
    assert call["tool_call"]["name"] == "lookup_order" and not thanks.checks
    # result sent after the 200 ms delay
    assert ask.tool_result_sent_ns - call["tool_args_done_ns"] >= 200e6
    assert ask.ttfa_ms > ask.tool_ms + ask.tool_result_ms  # voice-to-voice includes the lookup
    assert ask.audio_s > 0 and thanks.audio_s > 0 and thanks.tool_ms is None


def test_bad_argument_json_is_flagged_and_the_session_completes(sim):
    t = openai(sim, "sim-fast", instructions='[call!:lookup_order {"order_id": "A1234"}]')
    res = run_session(t, scripted(SUPPORT, tools=TOOLS), api_key="x")
    assert res.outcome == "ok", res.error
    ask = res.turns[0]
    assert ask.checks == {"tool_called": True, "tool_args_json": False, "tool_args_match": False}
    assert "not valid JSON" in ask.notes
    assert ask.response_status == "completed" and ask.tool_result_ms is not None


def test_gemini_arguments_that_miss_the_schema_are_flagged(sim):
    """Gemini sends arguments as an object, so they are always JSON; a broken marker makes them
    empty, which the argument check catches. The conversation still completes."""
    t = gemini(sim, "sim-fast", instructions='[call!:lookup_order {"order_id": "A1234"}]')
    res = run_session(t, scripted(SUPPORT, tools=TOOLS), api_key="x")
    assert res.outcome == "ok", res.error
    ask, thanks = res.turns
    assert ask.checks == {"tool_called": True, "tool_args_json": True, "tool_args_match": False}
    assert "order_id" in ask.notes and ask.tool_result_ms is not None
    # the plain marker calls on every input: the goodbye's call was not expected, so it was
    # answered with an error output and the reply still came (Gemini waits for an answer)
    assert thanks.checks == {"no_unexpected_tool": False}
    assert thanks.notes == "unexpected call to lookup_order" and thanks.audio_s > 0


# ---- WER and real speech ----------------------------------------------------------------------

SCRIPT_50 = ("please book a table for four people at the italian restaurant near the station "
             "on friday evening at half past seven and let them know that one of us cannot eat "
             "gluten so we would like a quiet corner away from the kitchen if that is possible "
             "thanks a lot")


def _wav(path, seconds=1.0, rate=16000):
    pcm = audio.speech(seconds, rate, seed=7)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


@pytest.mark.parametrize("make", [openai, gemini], ids=["openai", "gemini"])
def test_wer_of_injected_errors(sim, tmp_path, make):
    assert len(SCRIPT_50.split()) == 50
    model = f"wer-{make.__name__}"
    sim.set_profile(model=model, wer=0.2)
    _wav(tmp_path / "booking.wav")
    steps = [{"say": {"wav": "booking.wav", "transcript": SCRIPT_50}}, "wait_reply"]
    res = run_session(make(sim, model, simulator_hints=True),
                      scripted(steps, base_dir=str(tmp_path), transcription_model="whisper-1"),
                      api_key="x")
    assert res.outcome == "ok", res.error
    turn = res.turns[0]
    assert turn.checks["transcribed"] is True
    assert turn.wer == pytest.approx(0.20, abs=0.02)
    assert turn.input_transcript != SCRIPT_50


def test_speak_step_is_heard_as_speech(sim):
    steps = [{"say": {"speak": "Hello, I would like to check the status of my order please."}},
             "wait_reply"]
    res = run_session(openai(sim, "sim-fast"), scripted(steps, chunk_ms=100), api_key="x")
    assert res.outcome == "ok", res.error
    turn = res.turns[0]
    truth = responses(sim, res.server_session_id)[0]
    assert truth["trigger"] == "vad" and truth["speech_stopped_ns"] is not None
    # the simulator's VAD put the end of speech within one 100 ms chunk of our E
    assert abs(truth["speech_end_ns"] - turn.speech_end_ns) <= 100e6
    assert truth["input_audio_ms"] >= 2000  # a sentence, not a blip


# ---- telephony --------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["g711_ulaw", "g711_alaw"])
def test_g711_scripted_session(sim, codec):
    res = run_session(openai(sim, "sim-fast", input_format=codec, output_format=codec),
                      scripted([{"say": 0.8}, "wait_reply", {"say": 0.6}, "wait_reply"]), api_key="x")
    assert res.outcome == "ok", res.error
    truth = [t for t in responses(sim, res.server_session_id)]
    for mine, tt in zip(res.turns, truth, strict=True):
        # 8 kHz, one byte a sample: within one 50 ms delta of what the simulator sent
        assert mine.audio_s == pytest.approx(tt["reply_audio_ms"] / 1000, abs=0.051)
        assert tt["speech_stopped_ns"] is not None


# ---- long calls -------------------------------------------------------------------------------

LONG = [{"repeat": {"until": "session_expired", "max": "30s",
                    "steps": [{"say": 0.5}, "wait_reply", {"silence": 300}]}}]


@pytest.mark.parametrize("make", [openai, gemini], ids=["openai", "gemini"])
def test_long_call_ends_at_the_session_limit(sim, make):
    model = f"long-{make.__name__}"
    sim.set_profile(model=model, session_max_s=4.0)
    sc = scripted(LONG, "session_expired", timeouts=Timeouts(session=10))
    res = run_session(make(sim, model), sc, api_key="x")
    assert res.outcome == "ok", (res.outcome, res.error)
    assert res.ended_by == ("session_expired" if make is openai else "go_away")
    assert res.expiry_s == pytest.approx(4.0, abs=0.1)
    st = next(s for s in sim.truth(model=model)["sessions"] if s["session_id"] == res.server_session_id)
    assert res.expiry_s == pytest.approx((st["closed_ns"] - st["ready_ns"]) / 1e9, abs=0.05)
    assert len(res.turns) >= 3  # it kept talking until the end


def test_long_call_that_never_expires_says_so(sim):
    sc = scripted([{"repeat": {"until": "session_expired", "max": "2s",
                               "steps": [{"say": 0.4}, "wait_reply"]}}], "session_expired")
    res = run_session(openai(sim, "sim-fast"), sc, api_key="x")
    assert res.outcome == "timeout:session_limit" and "2 s" in res.error
    assert not res.ended_by and res.expiry_s is None


def test_silence_steps_keep_the_audio_clock(sim):
    """A silence step streams real-time silence: the next say starts after it."""
    res = run_session(openai(sim, "sim-fast"),
                      scripted([{"say": 0.5}, "wait_reply", {"silence": 700}, {"say": 0.5},
                                "wait_reply"]), api_key="x")
    assert res.outcome == "ok", res.error
    a, b = res.turns
    gap = (b.speech_end_ns - a.response_done_ns) / 1e9
    assert gap >= 0.7 + 0.4  # the silence, then the second utterance's speech
    assert np.isfinite(b.ttfa_ms)
