"""OpenAI Realtime protocol behaviour of the simulator, driven by a plain websockets client."""

from __future__ import annotations

import base64
import json
import math
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.simulator.wire import (
    ga_update,
    manual_session,
    manual_turn,
    open_ws,
    recv,
    recv_until,
    send,
    silence,
    stream,
    tone_speech,
    types,
)
from tests.tools import require_module

GA_TURN = [
    "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
    "response.created", "response.output_item.added", "conversation.item.added",
    "response.content_part.added",
]
GA_END = ["response.output_audio.done", "response.output_audio_transcript.done",
          "response.content_part.done", "response.output_item.done", "conversation.item.done",
          "response.done", "rate_limits.updated"]
BETA_TURN = ["input_audio_buffer.committed", "conversation.item.created", "response.created",
             "response.output_item.added", "response.content_part.added"]
BETA_END = ["response.audio.done", "response.audio_transcript.done", "response.content_part.done",
            "response.output_item.done", "response.done", "rate_limits.updated"]


def _split(names: list[str], delta: str, tdelta: str) -> tuple[list[str], list[str], list[str]]:
    first = next(i for i, n in enumerate(names) if n in (delta, tdelta))
    last = max(i for i, n in enumerate(names) if n in (delta, tdelta))
    return names[:first], names[first:last + 1], names[last + 1:]


def test_ga_server_vad_sequence(quick_sim):
    with open_ws(quick_sim.url("seq-ga")) as ws:
        created, _ = recv(ws)
        s = created["session"]
        assert created["type"] == "session.created" and created["event_id"].startswith("event_")
        assert s["type"] == "realtime" and s["id"].startswith("sess_") and s["model"] == "seq-ga"
        td = s["audio"]["input"]["turn_detection"]
        assert td["type"] == "server_vad" and td["silence_duration_ms"] == 200
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        send(ws, ga_update())
        upd, _ = recv(ws)
        assert upd["type"] == "session.updated" and upd["session"]["audio"]["input"]["format"][
            "rate"] == 24000
        stream(ws, np.concatenate([silence(0.2), tone_speech(0.6), silence(0.4)]), paced=False)
        evs = recv_until(ws, "rate_limits.updated")
    names = types(evs)
    assert names[:2] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
    head, body, tail = _split(names[2:], "response.output_audio.delta",
                              "response.output_audio_transcript.delta")
    assert head == GA_TURN
    assert set(body) == {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert body.count("response.output_audio.delta") == 6  # 0.6 s in 100 ms deltas
    assert tail == GA_END
    done = evs[-2][0]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["type"] == "output_audio"
    ids = [e["event_id"] for e, _ in evs]
    assert len(set(ids)) == len(ids)


def test_beta_sequence(quick_sim):
    with open_ws(quick_sim.url("seq-beta"), beta=True) as ws:
        created, _ = recv(ws)
        assert "modalities" in created["session"] and "audio" not in created["session"]
        assert created["session"]["input_audio_format"] == "pcm16"
        assert recv(ws)[0]["type"] == "conversation.created"
        # GA-only fields are unknown to the beta shape
        send(ws, {"type": "session.update", "session": {"type": "realtime"}})
        err, _ = recv(ws)
        assert err["type"] == "error" and err["error"]["code"] == "unknown_parameter"
        send(ws, {"type": "session.update", "session": {"voice": "alloy",
                                                        "input_audio_format": "pcm16"}})
        assert recv(ws)[0]["session"]["voice"] == "alloy"
        stream(ws, np.concatenate([tone_speech(0.5), silence(0.4)]), paced=False)
        evs = recv_until(ws, "rate_limits.updated")
    names = types(evs)
    assert names[:2] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
    head, body, tail = _split(names[2:], "response.audio.delta", "response.audio_transcript.delta")
    assert head == BETA_TURN
    assert set(body) == {"response.audio.delta", "response.audio_transcript.delta"}
    assert tail == BETA_END
    done = evs[-2][0]["response"]
    assert done["modalities"] == ["audio", "text"]
    assert done["output"][0]["content"][0]["type"] == "audio"
    assert "image_tokens" not in done["usage"]["input_token_details"]


def test_ga_rejects_beta_fields_and_requires_type(quick_sim):
    with open_ws(quick_sim.url("seq-ga2")) as ws:
        recv(ws)
        send(ws, {"type": "session.update", "event_id": "e1", "session": {"modalities": ["text"]}})
        err, _ = recv(ws)
        assert err["error"]["code"] == "unknown_parameter" and err["error"]["event_id"] == "e1"
        send(ws, {"type": "session.update", "session": {"instructions": "hi"}})
        err, _ = recv(ws)
        assert err["error"]["code"] == "missing_required_parameter"
        assert err["error"]["param"] == "session.type"


def test_manual_mode_and_usage_arithmetic(quick_sim):
    with open_ws(quick_sim.url("usage")) as ws:
        manual_session(ws, instructions="Be brief.")  # 9 chars -> 3 text tokens
        pcm = np.concatenate([tone_speech(1.2), silence(0.1)])  # 1300 ms -> 13 audio tokens
        send(ws, {"type": "input_audio_buffer.append",
                  "audio": base64.b64encode(pcm.tobytes()).decode()})
        send(ws, {"type": "input_audio_buffer.commit"})
        evs = recv_until(ws, "conversation.item.done")
        assert types(evs) == ["input_audio_buffer.committed", "conversation.item.added",
                              "conversation.item.done"]
        send(ws, {"type": "response.create"})
        evs = recv_until(ws, "rate_limits.updated")
    audio_bytes = sum(len(base64.b64decode(e["delta"])) for e, _ in evs
                      if e["type"] == "response.output_audio.delta")
    transcript = next(e for e, _ in evs
                      if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert audio_bytes == 48000 * 6 // 10  # 0.6 s of 24 kHz pcm16
    u = next(e for e, _ in evs if e["type"] == "response.done")["response"]["usage"]
    assert u["input_token_details"]["audio_tokens"] == 13
    assert u["input_token_details"]["text_tokens"] == 3
    assert u["output_token_details"]["audio_tokens"] == 12  # 600 ms at 20 tokens/s
    assert u["output_token_details"]["text_tokens"] == math.ceil(len(transcript) / 4)
    assert u["input_tokens"] == 16
    assert u["output_tokens"] == 12 + math.ceil(len(transcript) / 4)
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]


def test_commit_needs_100ms(quick_sim):
    with open_ws(quick_sim.url("commit")) as ws:
        manual_session(ws)
        send(ws, {"type": "input_audio_buffer.append",
                  "audio": base64.b64encode(silence(0.05).tobytes()).decode()})
        send(ws, {"type": "input_audio_buffer.commit", "event_id": "c1"})
        err, _ = recv(ws)
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        assert err["error"]["event_id"] == "c1"
        send(ws, {"type": "input_audio_buffer.clear"})
        assert recv(ws)[0]["type"] == "input_audio_buffer.cleared"


def test_one_active_response_and_cancel(sim):
    sim.set_profile(ttfa_ms=2000, reply_s=0.5)
    with open_ws(sim.url("cancel")) as ws:
        manual_session(ws)
        send(ws, {"type": "response.create"})
        created = recv_until(ws, "response.created")[-1][0]
        send(ws, {"type": "response.create", "event_id": "second"})
        evs = recv_until(ws, "error")
        err = evs[-1][0]["error"]
        assert err["code"] == "conversation_already_has_active_response"
        assert err["event_id"] == "second" and created["response"]["id"] in err["message"]
        send(ws, {"type": "response.cancel"})
        evs = recv_until(ws, "response.done")
        r = evs[-1][0]["response"]
        assert r["status"] == "cancelled"
        assert r["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert "response.output_audio.delta" not in types(evs)  # cancelled during the TTFA wait
        recv_until(ws, "rate_limits.updated")
        send(ws, {"type": "response.cancel", "event_id": "late"})
        err, _ = recv(ws)
        assert err["error"]["code"] == "response_cancel_not_active"


def test_text_only_output(quick_sim):
    with open_ws(quick_sim.url("text")) as ws:
        manual_session(ws, output_modalities=["text"])
        evs = manual_turn(ws)
    names = types(evs)
    assert "response.output_audio.delta" not in names
    deltas = [e["delta"] for e, _ in evs if e["type"] == "response.output_text.delta"]
    done = next(e for e, _ in evs if e["type"] == "response.output_text.done")
    assert deltas and "".join(deltas).strip() == done["text"]
    r = next(e for e, _ in evs if e["type"] == "response.done")["response"]
    assert r["output_modalities"] == ["text"]
    assert r["usage"]["output_token_details"]["audio_tokens"] == 0
    assert r["usage"]["output_token_details"]["text_tokens"] == math.ceil(len(done["text"]) / 4)


TOOLS = [{"type": "function", "name": "get_weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.mark.parametrize("broken", [False, True])
def test_tool_call_marker_flow(quick_sim, broken):
    bang = "!" if broken else ""
    with open_ws(quick_sim.url("tools")) as ws:
        manual_session(ws, tools=TOOLS,
                       instructions=f'Call tools. [call{bang}:get_weather {{"city":"Paris"}}]')
        evs = manual_turn(ws)
        names = types(evs)
        assert "response.output_audio.delta" not in names
        added = next(e for e, _ in evs if e["type"] == "response.output_item.added")["item"]
        assert added["type"] == "function_call" and added["name"] == "get_weather"
        parts = [e["delta"] for e, _ in evs
                 if e["type"] == "response.function_call_arguments.delta"]
        done = next(e for e, _ in evs if e["type"] == "response.function_call_arguments.done")
        assert "".join(parts) == done["arguments"] and done["name"] == "get_weather"
        if broken:
            with pytest.raises(ValueError):
                json.loads(done["arguments"])
        else:
            assert json.loads(done["arguments"]) == {"city": "Paris"}
        r = next(e for e, _ in evs if e["type"] == "response.done")["response"]
        assert r["output"][0]["type"] == "function_call" and r["status"] == "completed"
        # the model waits for the tool output and a response.create, then speaks
        send(ws, {"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": done["call_id"], "output": '{"temp":18}'}})
        assert types(recv_until(ws, "conversation.item.done")) == ["conversation.item.added",
                                                                   "conversation.item.done"]
        send(ws, {"type": "response.create"})
        evs = recv_until(ws, "rate_limits.updated")
        assert "response.output_audio.delta" in types(evs)
        assert "response.function_call_arguments.done" not in types(evs)


def test_tool_marker_in_user_text_item_needs_declared_tool(quick_sim):
    with open_ws(quick_sim.url("tools2")) as ws:
        manual_session(ws, tools=TOOLS)
        for name, expect_call in (("undeclared", False), ("get_weather", True)):
            send(ws, {"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f'hi [call:{name} {{"city":"Oslo"}}]'}]}})
            recv_until(ws, "conversation.item.done")
            send(ws, {"type": "response.create"})
            evs = recv_until(ws, "rate_limits.updated")
            assert ("response.function_call_arguments.done" in types(evs)) == expect_call


def test_input_transcription_marker_and_wer(sim):
    words = ("the quick brown fox jumps over the lazy dog while seven bright stars shine on "
             "the quiet valley and a small river runs past the old stone mill toward the sea "
             "where fishing boats wait for the morning tide to carry them out beyond the reef "
             "and back again by dusk").split()[:50]
    script = " ".join(words)
    sim.set_profile(model="wer", wer=0.2, ttfa_ms=30, reply_s=0.2)
    with open_ws(sim.url("wer")) as ws:
        manual_session(ws, instructions=f"[transcript: {script}]",
                       audio={"input": {"turn_detection": None,
                                        "transcription": {"model": "gpt-4o-mini-transcribe"}}})
        evs = manual_turn(ws, until="conversation.item.input_audio_transcription.completed")
        done = evs[-1][0]
        assert "conversation.item.input_audio_transcription.delta" in types(evs)
    heard = done["transcript"].split()
    assert len(heard) == 50
    errors = sum(a != b for a, b in zip(words, heard, strict=True))
    assert errors == 10  # 20 % of 50 words, substitutions only
    jiwer = require_module("jiwer")
    assert jiwer.wer(script, done["transcript"]) == pytest.approx(0.2)


@pytest.mark.parametrize("fmt,beta_fmt", [("audio/pcmu", "g711_ulaw"), ("audio/pcma", "g711_alaw")])
def test_g711_formats(quick_sim, fmt, beta_fmt):
    from simulator import audio as simaudio

    for beta in (False, True):
        with open_ws(quick_sim.url("g711"), beta=beta) as ws:
            recv(ws)
            if beta:
                recv(ws)
                send(ws, {"type": "session.update", "session": {
                    "input_audio_format": beta_fmt, "output_audio_format": beta_fmt}})
            else:
                send(ws, {"type": "session.update", "session": {"type": "realtime", "audio": {
                    "input": {"format": {"type": fmt}}, "output": {"format": {"type": fmt}}}}})
            recv(ws)
            pcm = np.concatenate([tone_speech(0.5, rate=8000), silence(0.4, rate=8000)])
            wire = simaudio.encode(pcm.astype(np.float32) / 32767, fmt.split("/")[1])
            for k in range(0, len(wire), 800):  # 100 ms of 8 kHz G.711
                send(ws, {"type": "input_audio_buffer.append",
                          "audio": base64.b64encode(wire[k:k + 800]).decode()})
            evs = recv_until(ws, "rate_limits.updated")
        names = types(evs)
        stopped = next(e for e, _ in evs if e["type"] == "input_audio_buffer.speech_stopped")
        assert abs(stopped["audio_end_ms"] - 200 - 500) <= 100  # VAD works on 8 kHz G.711
        delta = "response.audio.delta" if beta else "response.output_audio.delta"
        raw = b"".join(base64.b64decode(e["delta"]) for e, _ in evs if e["type"] == delta)
        assert len(raw) == 8000 * 6 // 10  # 0.6 s at 8 kHz, 1 byte per sample
        decoded = simaudio.decode_to_int16(raw, fmt.split("/")[1]).astype(float)
        assert np.sqrt(np.mean(decoded ** 2)) > 500  # speech, not silence
        assert "response.done" in names


@pytest.mark.parametrize("path,headers", [
    ("/openai/v1/realtime?model=dep1", {"api-key": "k"}),
    ("/openai/realtime?deployment=dep1&api-version=2024-10-01-preview", {"api-key": "k"}),
])
def test_azure_url_shapes(quick_sim, path, headers):
    with open_ws(quick_sim.ws_url + path, key="", headers=headers) as ws:
        created, _ = recv(ws)
        assert created["session"]["model"] == "dep1"
        preview = "deployment=" in path
        assert ("modalities" in created["session"]) == preview  # the preview spoke the beta shape


def test_missing_key_gets_401_json(quick_sim):
    with pytest.raises(InvalidStatus) as ei:
        open_ws(quick_sim.url("auth"), key="")
    resp = ei.value.response
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/json"
    body = json.loads(resp.body)
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_missing_model(quick_sim):
    with pytest.raises(InvalidStatus) as ei:
        open_ws(quick_sim.ws_url + "/v2/elsewhere?model=x")
    assert ei.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as ei:
        open_ws(quick_sim.ws_url + "/v1/realtime")
    assert ei.value.response.status_code == 400


def test_api_key_allow_list():
    from tests.sim_server import SimProcess

    with SimProcess(["--api-key", "good1", "--api-key", "good2", "--beta", "retired"]) as s:
        for key in ("good1", "good2"):
            with open_ws(s.url("k"), key=key) as ws:
                assert recv(ws)[0]["type"] == "session.created"
        with pytest.raises(InvalidStatus) as ei:
            open_ws(s.url("k"), key="bad")
        assert ei.value.response.status_code == 401
        assert "bad" not in ei.value.response.body.decode()  # the key is never echoed
        # --beta retired: the beta header gets the 2026 behaviour
        with open_ws(s.url("k"), key="good1", beta=True) as ws:
            err, _ = recv(ws)
            assert err["error"]["code"] == "beta_api_shape_disabled"
            with pytest.raises(ConnectionClosed):
                recv(ws)
            assert ws.close_code == 4000
            assert ws.close_reason == "invalid_request_error.beta_api_shape_disabled"


def test_control_api_healthz_profile_faults(quick_sim):
    h = quick_sim.healthz()
    assert h["ok"] is True
    slow = quick_sim.profile("sim-slow")  # --ttfa-ms/--reply-s flags override every profile
    assert slow["ttfa_ms"]["dist"] == "fixed" and slow["ttfa_ms"]["value"] == 60
    assert slow["reply_s"]["value"] == 0.6 and slow["name"] == "sim-slow"
    assert quick_sim.profile("any-other")["name"] == "default"
    with pytest.raises(RuntimeError, match="400"):
        quick_sim.set_profile(model="x", ttfa_ms={"dist": "weird"})
    with pytest.raises(RuntimeError, match="400"):
        quick_sim.fault(kind="nope")
    fid = quick_sim.fault(kind="stall", stall_s=0.1, models=["nobody"])
    listed = quick_sim.request("GET", "/faults")["faults"]
    assert [f["id"] for f in listed] == [fid]
    quick_sim.stop_fault(fid)
    assert quick_sim.request("GET", "/faults")["faults"] == []
    req = urllib.request.Request(quick_sim.control_url + "/nope")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=5)
    assert ei.value.code == 404
