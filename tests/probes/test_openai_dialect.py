"""OpenAI Realtime dialect: intents -> messages and frames -> events, with the reference's JSON."""

from __future__ import annotations

import base64

import orjson
import pytest

from probes.dialects import dialect_for
from probes.dialects.base import (
    AudioDelta,
    Committed,
    DialectError,
    Ignored,
    InputTranscript,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfigured,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    ToolCall,
    TranscriptDelta,
    Unknown,
)
from probes.dialects.openai_realtime import OpenAIRealtime
from probes.spec import Target


def ga(**kw) -> OpenAIRealtime:
    return OpenAIRealtime(url="wss://api.openai.com/v1/realtime", model="gpt-realtime", **kw)


def one(d: OpenAIRealtime, obj) -> object:
    frame = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    evs = d.parse(frame)
    assert len(evs) == 1
    return evs[0]


# ---- connect ---------------------------------------------------------------------------


def test_openai_connect_url_and_bearer():
    req = ga().connect_request("sk-test")
    assert req.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert dict(req.headers) == {"Authorization": "Bearer sk-test"}


def test_beta_adds_header_and_keeps_existing_model():
    d = OpenAIRealtime(url="ws://127.0.0.1:1/v1/realtime?model=x", model="gpt-realtime", beta=True)
    req = d.connect_request(None)
    assert req.url == "ws://127.0.0.1:1/v1/realtime?model=x"
    assert dict(req.headers) == {"OpenAI-Beta": "realtime=v1"}


def test_azure_preview_and_ga_urls_use_api_key_header():
    pre = OpenAIRealtime(
        url="wss://res.openai.azure.com/openai/realtime", model="my-dep", provider="azure"
    ).connect_request("k")
    assert pre.url == (
        "wss://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=my-dep"
    )
    assert dict(pre.headers) == {"api-key": "k"}
    preview = OpenAIRealtime(url="wss://res.openai.azure.com/openai/realtime", model="d", provider="azure")
    assert "input_audio_format" in orjson.loads(preview.configure()[0])["session"]  # beta shape
    v1 = OpenAIRealtime(
        url="wss://res.openai.azure.com/openai/v1/realtime", model="my-dep", provider="azure"
    ).connect_request("k")
    assert v1.url == "wss://res.openai.azure.com/openai/v1/realtime?model=my-dep"
    assert dict(v1.headers) == {"api-key": "k"}


def test_dialect_for_target_and_unknown_provider():
    t = Target("x", "ws://127.0.0.1:1/v1/realtime", "sim-fast", voice="marin", beta=True)
    d = dialect_for(t, "manual")
    assert isinstance(d, OpenAIRealtime) and d.beta and d.turn_mode == "manual"
    with pytest.raises(ValueError, match="nope"):
        dialect_for(Target("g", "wss://x", "m", provider="nope"))
    with pytest.raises(ValueError, match="turn_mode"):
        ga(turn_mode="push_to_talk")


# ---- session.update -------------------------------------------------------------------------


def test_ga_session_update_shape():
    d = ga(
        voice="marin",
        instructions="Be brief.",
        transcription_model="gpt-4o-mini-transcribe",
        tools=[{"name": "get_weather", "parameters": {"type": "object"}}],
    )
    (msg,) = d.configure()
    m = orjson.loads(msg)
    assert m["type"] == "session.update"
    s = m["session"]
    assert s["type"] == "realtime" and s["output_modalities"] == ["audio"]
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert s["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}
    assert s["instructions"] == "Be brief."
    assert s["tools"] == [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    assert "voice" not in s and "turn_detection" not in s  # no beta keys in GA


def test_manual_turn_detection_is_null_and_semantic_vad():
    s = orjson.loads(ga(turn_mode="manual").configure()[0])["session"]
    assert "turn_detection" in s["audio"]["input"] and s["audio"]["input"]["turn_detection"] is None
    s = orjson.loads(ga(turn_mode="semantic_vad").configure()[0])["session"]
    assert s["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"


def test_beta_session_update_is_flat_with_g711():
    d = ga(beta=True, voice="alloy", input_format="g711_ulaw", output_format="g711_alaw", turn_mode="manual")
    s = orjson.loads(d.configure()[0])["session"]
    assert s["input_audio_format"] == "g711_ulaw" and s["output_audio_format"] == "g711_alaw"
    assert s["voice"] == "alloy" and s["turn_detection"] is None
    assert "audio" not in s and "type" not in s
    assert d.input_format.rate == 8000 and d.input_format.bytes_per_s == 8000
    ga_s = orjson.loads(ga(input_format="g711_alaw").configure()[0])["session"]
    assert ga_s["audio"]["input"]["format"] == {"type": "audio/pcma"}


def test_other_intents():
    d = ga()
    assert orjson.loads(d.append_audio("QUJD")) == {"type": "input_audio_buffer.append", "audio": "QUJD"}
    assert [orjson.loads(m)["type"] for m in d.end_turn()] == ["input_audio_buffer.commit", "response.create"]
    assert [orjson.loads(m)["type"] for m in d.cancel()] == ["response.cancel"]
    item, create = (orjson.loads(m) for m in d.tool_result("call_001", '{"temp":18}'))
    assert item == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_001", "output": '{"temp":18}'},
    }
    assert create == {"type": "response.create"}
    item, _ = (orjson.loads(m) for m in d.user_text("hello"))
    assert item["item"]["content"] == [{"type": "input_text", "text": "hello"}]


# ---- server frames ----------------------------------------------------------------------------

GA_CREATED = {
    "type": "session.created",
    "event_id": "event_C9G5RJeJ2gF77mV7f2B1j",
    "session": {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_C9G5QPteg4UIbotdKLoYQ",
        "model": "gpt-realtime-2025-08-28",
        "output_modalities": ["audio"],
        "expires_at": 1756324625,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1},
        },
    },
}

GA_DONE = {
    "type": "response.done",
    "event_id": "event_CCXH",
    "response": {
        "object": "realtime.response",
        "id": "resp_CCXH",
        "status": "completed",
        "status_details": None,
        "output": [{"id": "item_CCXH", "type": "message", "role": "assistant",
                    "content": [{"type": "output_audio", "transcript": "Loud and clear!"}]}],
        "usage": {
            "total_tokens": 253,
            "input_tokens": 132,
            "output_tokens": 121,
            "input_token_details": {
                "text_tokens": 119, "audio_tokens": 13, "image_tokens": 0, "cached_tokens": 64,
                "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
        },
    },
}


def test_session_events():
    d = ga()
    assert one(d, GA_CREATED) == SessionReady("sess_C9G5QPteg4UIbotdKLoYQ")
    assert one(d, {"type": "session.updated", "session": {}}) == SessionConfigured()


def test_turn_events_ga_names():
    d = ga()
    assert one(d, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 120, "item_id": "i"}) == SpeechStarted(120)
    assert one(d, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1700, "item_id": "i"}) == SpeechStopped(1700)
    assert one(d, {"type": "input_audio_buffer.committed", "item_id": "i"}) == Committed()
    assert one(d, {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}) == ResponseCreated("resp_1")
    assert one(d, {"type": "response.output_audio_transcript.delta", "delta": "Lo"}) == TranscriptDelta("Lo")
    assert one(d, {"type": "response.output_text.delta", "delta": "Hi"}) == TextDelta("Hi")
    assert one(d, {"type": "conversation.item.input_audio_transcription.completed", "transcript": "hello"}) == InputTranscript("hello", True)
    assert one(d, {"type": "rate_limits.updated", "rate_limits": []}) == Ignored("rate_limits.updated")


def test_turn_events_beta_names():
    d = ga(beta=True)
    pcm = bytes(4800)
    ev = one(d, {"type": "response.audio.delta", "delta": base64.b64encode(pcm).decode()})
    assert ev == AudioDelta(4800)
    assert one(d, {"type": "response.audio_transcript.delta", "delta": "x"}) == TranscriptDelta("x")
    assert one(d, {"type": "response.text.delta", "delta": "y"}) == TextDelta("y")
    assert one(d, {"type": "conversation.item.created", "item": {}}) == Ignored("conversation.item.created")


def test_response_done_usage_and_cached_split():
    ev = one(ga(), GA_DONE)
    assert isinstance(ev, ResponseDone)
    assert ev.status == "completed" and ev.error_code is None and ev.response_id == "resp_CCXH"
    u = ev.usage
    assert (u.in_text, u.in_audio, u.out_text, u.out_audio) == (119, 13, 30, 91)
    assert (u.in_cached, u.in_cached_audio) == (64, 0)
    assert u.total == 253


def test_failed_and_cancelled_responses():
    failed = {"type": "response.done", "response": {"id": "r", "status": "failed", "usage": None,
              "status_details": {"type": "failed", "error": {"type": "server_error", "code": "server_error"}}}}
    ev = one(ga(), failed)
    assert (ev.status, ev.error_code) == ("failed", "server_error")
    rl = {"type": "response.done", "response": {"status": "failed", "status_details": {
        "type": "failed", "error": {"type": "tokens", "code": "rate_limit_exceeded"}}}}
    assert one(ga(), rl).error_code == "rate_limit_exceeded"
    cancelled = {"type": "response.done", "response": {"status": "cancelled",
                 "status_details": {"type": "cancelled", "reason": "turn_detected"}}}
    ev = one(ga(), cancelled)
    assert (ev.status, ev.reason, ev.error_code) == ("cancelled", "turn_detected", None)


def test_error_event():
    e = {"event_id": "event_890", "type": "error", "error": {"type": "invalid_request_error",
         "code": "invalid_event", "message": "The 'type' field is missing.", "param": None, "event_id": "event_567"}}
    assert one(ga(), e) == ServerError("invalid_event", "The 'type' field is missing.", "invalid_request_error")
    nocode = {"type": "error", "error": {"type": "server_error", "code": None, "message": "boom"}}
    assert one(ga(), nocode).code == "server_error"


def test_tool_call_ga_and_beta_name_from_item():
    d = ga()
    ga_done = {"type": "response.function_call_arguments.done", "call_id": "call_1", "name": "get_weather",
               "arguments": '{"location":"Paris"}', "item_id": "fc_1"}
    assert one(d, ga_done) == ToolCall("call_1", "get_weather", '{"location":"Paris"}')
    b = ga(beta=True)
    added = {"type": "response.output_item.added", "item": {"id": "fc_2", "type": "function_call",
             "call_id": "call_2", "name": "lookup"}}
    assert isinstance(one(b, added), Ignored)
    done = {"type": "response.function_call_arguments.done", "call_id": "call_2", "item_id": "fc_2", "arguments": "{}"}
    assert one(b, done) == ToolCall("call_2", "lookup", "{}")


def test_unknown_events_are_counted():
    d = ga()
    assert one(d, {"type": "mcp_list_tools.in_progress"}) == Unknown("mcp_list_tools.in_progress")
    assert one(d, {"type": "brand.new.event", "x": 1}) == Unknown("brand.new.event")
    assert d.unknown_events == 2


@pytest.mark.parametrize(
    "frame",
    [b"{not json", b'{"type":"response.output_audio.delta","delta":"AAAA"', b"[1,2]", b'{"no_type":1}',
     b'{"type":"response.done","response":"oops"}', b"\xff\xfe"],
)
def test_malformed_frames_raise_dialect_error(frame):
    with pytest.raises(DialectError):
        ga().parse(frame)


# ---- the audio fast path agrees with the full parse --------------------------------------------


def _delta_frame(nbytes: int, *, first: bool = False, spaces: bool = False, beta: bool = False) -> bytes:
    b64 = base64.b64encode(bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256)).decode()
    t = "response.audio.delta" if beta else "response.output_audio.delta"
    if first:
        return ('{"delta":"%s","type":"%s"}' % (b64, t)).encode()  # noqa: UP031
    sep = ": " if spaces else ":"
    return (
        f'{{"event_id"{sep}"event_4950", "type"{sep}"{t}", "response_id":"resp_001",'
        f'"item_id":"msg_008","output_index":0,"content_index":0,"delta"{sep}"{b64}"}}\n'
    ).encode()


@pytest.mark.parametrize("nbytes", [4800, 4799, 4798, 960, 300])
@pytest.mark.parametrize("variant", [{}, {"first": True}, {"spaces": True}, {"beta": True}])
def test_fast_path_sizes_match_full_decode(nbytes, variant):
    frame = _delta_frame(nbytes, **variant)
    assert len(frame) >= 256
    assert ga().parse(frame) == (AudioDelta(nbytes),)
    m = orjson.loads(frame)
    assert len(base64.b64decode(m["delta"])) == nbytes


def test_fast_path_falls_back_on_escapes_and_rejects_truncation():
    b64 = base64.b64encode(b"\xff\xff\xff" * 2000).decode()  # contains '/'
    frame = ('{"type":"response.output_audio.delta","delta":"%s"}' % b64.replace("/", "\\/")).encode()  # noqa: UP031
    assert ga().parse(frame) == (AudioDelta(6000),)
    truncated = _delta_frame(4800)[:-10]
    with pytest.raises(DialectError):
        ga().parse(truncated)
    trailing_garbage = _delta_frame(4800).rstrip() + b"xx}"
    with pytest.raises(DialectError):
        ga().parse(trailing_garbage)
