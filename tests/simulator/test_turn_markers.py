"""Per-turn markers: `[transcript: ...]` per user audio turn and `[call@K:...]` per user input,
on the OpenAI Realtime and Gemini Live sessions, over real loopback sockets."""

from __future__ import annotations

import base64
import time

import orjson
from websockets.sync.client import connect

from simulator import markers
from tests.simulator.wire import manual_session, open_ws, recv, send, silence, tone_speech

SCRIPT = ("the quick brown fox jumps over the lazy dog while seven bright stars shine on the quiet "
          "valley and a small river runs past the old stone mill toward the sea where fishing "
          "boats wait for the morning tide to carry them out beyond the reef and back again by "
          "dusk").split()[:50]
THREE = "[transcript: book a table] [transcript: for two people] [transcript: at seven tonight]"
CALLS = '[call@1:lookup {"q":"b"}] Be brief. [call!@3:lookup {"q":"d"}]'
FAST = {"ttfa_ms": 80, "reply_s": 0.2, "transcription_delay_ms": 0}


# ---- markers helpers ------------------------------------------------------------------------------

def test_transcripts_in_order_and_last_repeats():
    assert markers.transcripts(THREE) == ["book a table", "for two people", "at seven tonight"]
    got = [markers.transcript_for(THREE, k) for k in range(5)]
    assert got == ["book a table", "for two people", "at seven tonight", "at seven tonight",
                   "at seven tonight"]
    assert markers.transcript_for("[transcript: only one]", 3) == "only one"
    assert markers.transcript_for("no markers", 0) is None
    assert markers.transcripts(None) == []


def test_call_for_fires_only_for_its_input():
    assert [markers.call_for(CALLS, k) is not None for k in (None, 0, 1, 2, 3, 4)] == [
        False, False, True, False, True, False]
    one = markers.call_for(CALLS, 1)
    assert (one.name, one.arguments, one.broken) == ("lookup", '{"q":"b"}', False)
    three = markers.call_for(CALLS, 3)
    assert (three.arguments, three.broken) == ('{"q":"d"', True)
    assert markers.find_call(CALLS) is None  # @K markers are not plain markers


def test_call_for_per_input_wins_over_plain():
    text = '[call:plain {"a":1}] [call@2:special {"b":2}]'
    assert markers.call_for(text, 2).name == "special"
    assert markers.call_for(text, 0).name == "plain"
    assert markers.call_for(text, None).name == "plain"
    assert markers.find_call(text).name == "plain"
    assert markers.call_for('[call@1:bad {"x":]', 1) is None  # unparsable arguments: no call


# ---- OpenAI Realtime ------------------------------------------------------------------------------

def openai_turn(ws, text: str | None = None, need_transcript: bool = False) -> list[dict]:
    """One user input (speech committed, or a user text item) + response.create; the events up to
    rate_limits.updated (and the input transcription, if asked)."""
    if text is None:
        pcm = tone_speech(0.4)
        send(ws, {"type": "input_audio_buffer.append",
                  "audio": base64.b64encode(pcm.tobytes()).decode()})
        send(ws, {"type": "input_audio_buffer.commit"})
    else:
        send(ws, {"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    send(ws, {"type": "response.create"})
    return read_until(ws, "rate_limits.updated",
                      "conversation.item.input_audio_transcription.completed"
                      if need_transcript else None)


def read_until(ws, *wanted: str | None) -> list[dict]:
    """Events until one of each wanted type has arrived."""
    want = {w for w in wanted if w}
    out: list[dict] = []
    deadline = time.monotonic() + 10
    while want:
        ev, _ = recv(ws, max(deadline - time.monotonic(), 0.01))
        out.append(ev)
        want.discard(ev["type"])
    return out


def answer_call(ws, call_id: str) -> list[str]:
    """Send the function output and a response.create; the event types up to rate_limits."""
    send(ws, {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": '{"ok":true}'}})
    read_until(ws, "conversation.item.done")
    send(ws, {"type": "response.create"})
    return [e["type"] for e in read_until(ws, "rate_limits.updated")]


def openai_session(sim, model: str, instructions: str, **profile):
    sim.set_profile(model=model, **FAST, **profile)
    ws = open_ws(sim.url(model))
    created = manual_session(ws, instructions=instructions, tools=[
        {"type": "function", "name": "lookup",
         "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        audio={"input": {"turn_detection": None,
                         "transcription": {"model": "gpt-4o-mini-transcribe"}}})
    return ws, created["id"]


def test_openai_three_turns_three_transcripts_then_last_repeats(sim_module):
    ws, sid = openai_session(sim_module, "turns-oa", THREE)
    heard = []
    with ws:
        for _ in range(4):
            evs = openai_turn(ws, need_transcript=True)
            heard += [e["transcript"] for e in evs
                      if e["type"] == "conversation.item.input_audio_transcription.completed"]
    expect = ["book a table", "for two people", "at seven tonight", "at seven tonight"]
    assert heard == expect
    turns = sorted(sim_module.turns(sid), key=lambda t: t["turn_index"])
    assert [t["transcript"] for t in turns] == expect


def test_openai_call_at_k_only_on_that_input(sim_module):
    ws, sid = openai_session(sim_module, "calls-oa", CALLS)
    with ws:
        calls = []
        for text in (None, "second input", None):  # inputs 0 (audio), 1 (text), 2 (audio)
            evs = openai_turn(ws, text)
            calls.append([e for e in evs if e["type"] == "response.function_call_arguments.done"])
            if calls[-1]:  # answer the call: that response is not a new input and never calls
                after = answer_call(ws, calls[-1][0]["call_id"])
                assert "response.output_audio.delta" in after
                assert "response.function_call_arguments.done" not in after
        last = openai_turn(ws)  # input 3: the broken @3 call
    assert [len(c) for c in calls] == [0, 1, 0]
    assert calls[1][0]["name"] == "lookup" and calls[1][0]["arguments"] == '{"q":"b"}'
    (done,) = [e for e in last if e["type"] == "response.function_call_arguments.done"]
    assert done["arguments"] == '{"q":"d"'
    turns = sorted(sim_module.turns(sid), key=lambda t: t["turn_index"])
    assert [t["tool_call"] and t["tool_call"]["arguments"] for t in turns] == [
        None, '{"q":"b"}', None, None, '{"q":"d"']
    assert turns[2]["tool_output_ns"] is not None and turns[4]["tool_call"]["broken"] is True


# ---- Gemini Live ----------------------------------------------------------------------------------

G_RATE = 16000


def gemini_session(sim, model: str, instructions: str, manual: bool, **profile):
    sim.set_profile(model=model, **FAST, **profile)
    ws = connect(sim.gemini_url() + "?key=x", compression=None, open_timeout=5, legacy=True)
    s = {"model": f"models/{model}", "generationConfig": {"responseModalities": ["AUDIO"]},
         "inputAudioTranscription": {}, "systemInstruction": {"parts": [{"text": instructions}]},
         "tools": [{"functionDeclarations": [{"name": "lookup"}]}]}
    if manual:
        s["realtimeInputConfig"] = {"automaticActivityDetection": {"disabled": True}}
    ws.send(orjson.dumps({"setup": s}), text=True)
    return ws, g_recv(ws)["setupComplete"]["sessionId"]


def g_recv(ws, timeout: float = 10.0) -> dict:
    return orjson.loads(ws.recv(timeout=timeout))


def g_audio(ws, pcm) -> None:
    ws.send(orjson.dumps({"realtimeInput": {"audio": {
        "mimeType": "audio/pcm;rate=16000", "data": base64.b64encode(pcm.tobytes()).decode()}}}),
        text=True)


def g_until(ws, key: str) -> list[dict]:
    """Messages up to the first serverContent.turnComplete (key "turnComplete") or toolCall."""
    out = []
    deadline = time.monotonic() + 10
    while True:
        msg = g_recv(ws, max(deadline - time.monotonic(), 0.01))
        out.append(msg)
        if key in msg or msg.get("serverContent", {}).get(key):
            return out


def g_manual_turn(ws) -> list[dict]:
    ws.send(b'{"realtimeInput":{"activityStart":{}}}', text=True)
    g_audio(ws, tone_speech(0.4, G_RATE))
    ws.send(b'{"realtimeInput":{"activityEnd":{}}}', text=True)
    return g_until(ws, "turnComplete")


def heard_g(msgs: list[dict]) -> list[str]:
    return [m["serverContent"]["inputTranscription"]["text"] for m in msgs
            if "inputTranscription" in m.get("serverContent", {})]


def test_gemini_three_turns_three_transcripts_then_last_repeats(sim_module):
    ws, sid = gemini_session(sim_module, "turns-g", THREE, manual=True)
    with ws:
        heard = [heard_g(g_manual_turn(ws)) for _ in range(4)]
    expect = ["book a table", "for two people", "at seven tonight", "at seven tonight"]
    assert heard == [[t] for t in expect]
    turns = sorted(sim_module.turns(sid), key=lambda t: t["turn_index"])
    assert [t["transcript"] for t in turns] == expect


def test_gemini_call_at_k_only_on_that_input(sim_module):
    ws, sid = gemini_session(sim_module, "calls-g", CALLS, manual=False)
    with ws:
        ws.send(orjson.dumps({"clientContent": {"turns": [{"role": "user", "parts": [
            {"text": "first input"}]}], "turnComplete": True}}), text=True)
        first = g_until(ws, "turnComplete")  # input 0: a clientContent text turn
        g_audio(ws, tone_speech(0.6, G_RATE))
        g_audio(ws, silence(0.5, G_RATE))  # the VAD ends the turn after its silence
        second = g_until(ws, "toolCall")  # input 1: a VAD-ended audio turn
        (fc,) = second[-1]["toolCall"]["functionCalls"]
        ws.send(orjson.dumps({"toolResponse": {"functionResponses": [
            {"id": fc["id"], "name": "lookup", "response": {"ok": True}}]}}), text=True)
        after = g_until(ws, "turnComplete")  # not a new input: speaks, never calls
        ws.send(b'{"realtimeInput":{"text":"third input"}}', text=True)
        third = g_until(ws, "turnComplete")  # input 2: a realtimeInput text turn
    assert (fc["name"], fc["args"]) == ("lookup", {"q": "b"})
    for msgs in (first, after, third):
        assert not any("toolCall" in m for m in msgs)
        assert any("modelTurn" in m.get("serverContent", {}) for m in msgs)
    turns = sorted(sim_module.turns(sid), key=lambda t: t["turn_index"])
    assert [t["trigger"] for t in turns] == ["clientContent", "vad", "toolResponse", "text"]
    assert [t["tool_call"] and t["tool_call"]["arguments"] for t in turns] == [
        None, '{"q":"b"}', None, None]


def test_gemini_wer_substitutes_round_wer_times_words(sim_module):
    ws, sid = gemini_session(sim_module, "wer-g", f"[transcript: {' '.join(SCRIPT)}]",
                             manual=True, wer=0.2)
    with ws:
        (text,) = heard_g(g_manual_turn(ws))
    heard = text.split()
    assert len(SCRIPT) == len(heard) == 50
    assert sum(a != b for a, b in zip(SCRIPT, heard, strict=True)) == round(0.2 * 50) == 10
    (turn,) = sim_module.turns(sid)
    assert turn["transcript"] == text
