"""GPT-Live through the whole engine against the simulator (issue 15): the audible onset gives
`ttfa_ms`, quiet output ends the turn, the output falling quiet after the caller spoke over it
is the barge-in stop, delegation gives tool_ms / tool_result_ms, per-second cost comes from the
server's usage seconds. Every mark is compared with the simulator's truth on the same clock."""

from __future__ import annotations

import dataclasses

import pytest

from probes import prices
from probes.script import parse_script
from probes.session import run_session
from probes.spec import Scenario, Target
from tests.sim_server import SimProcess

pytestmark = pytest.mark.slow  # each test plays real-time GPT-Live turns (4-18 s)

KEY = "good-key-123"


@pytest.fixture(scope="module")
def live_sim():
    with SimProcess(["--api-key", KEY]) as s:
        yield s


def target(sim, model="sim-fast", **kw) -> Target:
    return Target(name="live", url=sim.ws_url + "/v1/live/sessions", model=model,
                  provider="openai-live", simulator_hints=True, **kw)


def truth_turns(sim, res):
    return sim.truth(session_id=res.server_session_id)["turns"]


def p99(values):
    s = sorted(abs(v) for v in values)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def test_plain_turns_audible_onset_and_quiet_end_match_truth(live_sim):
    res = run_session(target(live_sim), Scenario(turns=4, pause_s=0.2), api_key=KEY)
    assert res.outcome == "ok", res.error
    truth = [t for t in truth_turns(live_sim, res) if t["status"] == "completed"]
    assert len(res.turns) == len(truth) == 4
    errs_onset, errs_done = [], []
    for mine, tt in zip(res.turns, truth, strict=True):
        assert mine.outcome == "ok"
        assert mine.ttfa_ms is not None and mine.ttfa_ms == mine.ttfa_audible_ms
        errs_onset.append((mine.first_audio_ns - tt["first_audio_ns"]) / 1e6)
        errs_done.append((mine.response_done_ns - tt["response_done_ns"]) / 1e6)
        assert mine.audio_s == pytest.approx(tt["reply_audio_ms"] / 1000, abs=0.11)
        assert mine.transcript.strip()
    assert p99(errs_onset) <= 2.0, errs_onset
    assert p99(errs_done) <= 2.0, errs_done
    # the session was closed with session.close: its usage seconds are the server's
    assert res.usage_seconds is not None and res.usage_seconds >= 1


def test_per_second_cost_from_usage_seconds(live_sim):
    live_sim.set_profile(model="sim-live-cost", reply_s=1.0)
    res = run_session(target(live_sim, "sim-live-cost"), Scenario(turns=1), api_key=KEY)
    assert res.outcome == "ok", res.error
    want = prices.second_price_for("sim-live-cost").cost(res.usage_seconds)
    assert res.session_cost_usd == pytest.approx(want, rel=0.01) and res.cost_usd > 0
    assert all(t.cost_usd is None for t in res.turns)


def test_barge_in_stop_is_the_output_falling_quiet(live_sim):
    script = parse_script([{"say": {"duration": 1.5}}, {"interrupt_after": {"ms": 500, "say": {"duration": 1.5}}},
                           "wait_reply"])
    live_sim.set_profile(model="sim-live-barge", reply_s=3.0)
    res = run_session(target(live_sim, "sim-live-barge"), Scenario(script=script), api_key=KEY)
    assert res.outcome == "ok", res.error
    first = res.turns[0]
    assert first.checks.get("reply_stopped") is True
    [tt] = [t for t in truth_turns(live_sim, res) if t["status"] == "cancelled"]
    mine_stop = first.barge_in_ns + int(first.barge_in_ms * 1e6)
    assert abs(mine_stop - tt["cancel_ns"]) / 1e6 <= 5.0
    assert res.turns[1].ttfa_ms is not None and res.turns[1].outcome == "ok"


@pytest.mark.parametrize("mode", ["client", "responses"])
def test_delegation_tool_ms_and_tool_result_ms(live_sim, mode):
    tools = [] if mode == "client" else [{"type": "function", "name": "get_weather",
                                           "parameters": {"type": "object", "properties": {}}}]
    name = "delegation" if mode == "client" else "get_weather"
    script = parse_script([{"say": {"duration": 1.5}}, {"expect_tool": {"name": name}},
                           {"tool_result": {"output": "18 degrees"}}, "wait_reply"])
    sc = Scenario(script=script, tools=tools or None,
                  instructions=f"[call@0:{'get_weather'} {{}}]")
    tgt = dataclasses.replace(target(live_sim), delegation=mode, simulator_hints=False)
    res = run_session(tgt, sc, api_key=KEY)
    assert res.outcome == "ok", res.error
    [turn] = res.turns
    assert turn.checks["tool_called"] is True, turn.notes
    [tt] = [t for t in truth_turns(live_sim, res) if t.get("tool_args_done_ns")]
    mine_call = turn.speech_end_ns + int(turn.tool_ms * 1e6)
    assert abs(mine_call - tt["tool_args_done_ns"]) / 1e6 <= 5.0
    assert turn.tool_result_ms is not None and turn.tool_result_ms > 0
    after = [t for t in truth_turns(live_sim, res) if t.get("tool_output_ns")]
    assert after and after[-1]["first_audio_ns"]
    mine_audio = turn.tool_result_sent_ns + int(turn.tool_result_ms * 1e6)
    assert abs(mine_audio - after[-1]["first_audio_ns"]) / 1e6 <= 5.0


def test_input_transcript_fragments_score_wer_per_turn(live_sim):
    script = parse_script([
        {"say": {"speak": "where is my order"}}, "wait_reply",
        {"say": {"speak": "thank you very much"}}, "wait_reply"])
    res = run_session(target(live_sim), Scenario(script=script), api_key=KEY)
    assert res.outcome == "ok", res.error
    assert [t.input_transcript.strip() for t in res.turns] == ["where is my order",
                                                               "thank you very much"]
    assert [t.wer for t in res.turns] == [0.0, 0.0]
    assert all(t.transcript_end_ms and t.transcript_end_ms > 0 for t in res.turns)


def test_marks_join_timed_fragments_into_the_turn_whose_speech_they_follow():
    from probes.dialects.base import InputTranscript, SessionReady
    from probes.marks import Receiver, TurnMarks

    ms = 1_000_000
    r = Receiver()
    r.feed((SessionReady("s"),), 1000 * ms)
    r.input_t0_ns = 1100 * ms  # our first chunk: 100 ms into the session timeline
    a, b = TurnMarks(0), TurnMarks(1)
    a.input_pos_ms, b.input_pos_ms = 0.0, 2900.0  # b's speech starts 2.9 s into our stream
    a.expected_text, b.expected_text = "x", "y"
    r.awaiting_transcript.extend([a, b])
    r.feed((InputTranscript("hel", False, 120, 400),), 2000 * ms)
    r.feed((InputTranscript("lo", False, 400, 800),), 2100 * ms)
    r.feed((InputTranscript("bye", False, 2800, 3500),), 5000 * ms)  # 2.7 s in: b (slack)
    assert a.input_transcript == ["hello"] and b.input_transcript == ["bye"]


@pytest.mark.parametrize("fmt", ["pcm16_16k", "g711_ulaw", "g711_alaw"])
def test_other_audio_formats_are_gated_in_their_own_encoding(live_sim, fmt):
    tgt = dataclasses.replace(target(live_sim), input_format=fmt, output_format=fmt)
    res = run_session(tgt, Scenario(turns=1), api_key=KEY)
    assert res.outcome == "ok", res.error
    [mine] = res.turns
    [tt] = [t for t in truth_turns(live_sim, res) if t["status"] == "completed"]
    assert abs(mine.first_audio_ns - tt["first_audio_ns"]) / 1e6 <= 2.0
    assert abs(mine.response_done_ns - tt["response_done_ns"]) / 1e6 <= 2.0


def test_the_mic_stays_open_between_turns(live_sim):
    """GPT-Live hears a stream: silence goes on through the reply and the pause, so the server's
    input timeline (audio received) keeps pace with the wall clock and places each turn's speech
    where we spoke it."""
    sc = Scenario(turns=2, pause_s=1.5, utterance_s=1.5, chunk_ms=100)
    res = run_session(target(live_sim), sc, api_key=KEY)
    assert res.outcome == "ok", res.error
    ready_ns = res.connect_start_ns + int(res.ready_ms * 1e6)
    truth = [t for t in truth_turns(live_sim, res) if t["status"] == "completed"]
    for mine, tt in zip(res.turns, truth, strict=True):
        spoke_ms = (mine.speech_end_ns - 1400 * 1_000_000 - ready_ns) / 1e6  # first chunk due
        assert abs(tt["audio_start_ms"] - spoke_ms) <= 150, (tt["audio_start_ms"], spoke_ms)
