"""Property-based fuzzing of the OpenAI Realtime dialect: whatever a server sends, `parse()`
returns a tuple of normalised events or raises its documented DialectError, nothing else.

Example counts are tuned for the suite budget (the whole file runs in a few seconds).
"""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from probes.dialects import base
from probes.dialects.base import DialectError
from probes.dialects.openai_realtime import OpenAIRealtime
from tests.hostile.fuzzkit import (
    SETTINGS,
    enc,
    json_values,
    one_field_removed,
    one_field_replaced,
)

EVENT_TYPES = tuple(
    getattr(base, n) for n in (
        "SessionReady", "SessionConfigured", "SpeechStarted", "SpeechStopped", "Committed",
        "ResponseCreated", "AudioDelta", "TranscriptDelta", "TextDelta", "InputTranscript",
        "ToolCall", "ResponseDone", "Interrupted", "ServerError", "GoAway", "Ignored", "Unknown",
    )
)

#: every event type the dialect knows (GA and beta names) plus a few it does not
KNOWN_TYPES = [
    "session.created", "session.updated", "error", "response.created", "response.done",
    "response.output_audio.delta", "response.audio.delta",
    "response.output_audio_transcript.delta", "response.audio_transcript.delta",
    "response.output_text.delta", "response.text.delta",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.delta", "response.output_item.added",
    "response.function_call_arguments.done", "rate_limits.updated", "conversation.item.added",
    "x.unknown", "",
]

#: valid frames of every kind, the seeds of the mutation tests
AUDIO_B64 = base64.b64encode(bytes(range(256)) * 20).decode()
VALID = [
    {"type": "session.created", "session": {"id": "sess_1", "model": "m"}},
    {"type": "session.updated", "session": {"id": "sess_1"}},
    {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
    {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "i",
     "output_index": 0, "content_index": 0, "delta": AUDIO_B64},
    {"type": "response.audio.delta", "delta": "AAAA"},
    {"type": "response.output_audio_transcript.delta", "delta": "hello"},
    {"type": "response.output_text.delta", "delta": "hi"},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 10},
    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1500},
    {"type": "input_audio_buffer.committed", "item_id": "i"},
    {"type": "conversation.item.input_audio_transcription.completed", "transcript": "x"},
    {"type": "response.output_item.added",
     "item": {"type": "function_call", "name": "f", "call_id": "c1", "id": "i1"}},
    {"type": "response.function_call_arguments.done", "call_id": "c1", "arguments": "{}"},
    {"type": "error", "error": {"type": "invalid_request_error", "code": "bad", "message": "m"}},
    {"type": "response.done", "response": {
        "id": "resp_1", "status": "failed",
        "status_details": {"type": "failed", "reason": "x", "error": {"code": "server_error"}},
        "usage": {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2,
                  "input_token_details": {"audio_tokens": 1, "text_tokens": 0, "cached_tokens": 0,
                                          "cached_tokens_details": {"audio_tokens": 0}},
                  "output_token_details": {"audio_tokens": 2, "text_tokens": 0}}}},
]

field_names = st.sampled_from(["delta", "response", "session", "error", "item", "usage",
                               "status", "status_details", "id", "call_id", "item_id", "name",
                               "arguments", "transcript", "audio_start_ms", "audio_end_ms",
                               "input_token_details", "output_token_details", "code"]) | st.text(
    max_size=8)


def dialect() -> OpenAIRealtime:
    return OpenAIRealtime(url="ws://127.0.0.1:1/v1/realtime", model="m")


def check(frame: bytes, d: OpenAIRealtime | None = None) -> tuple:
    """Parse; only DialectError may escape, and a success is a tuple of known events."""
    d = d or dialect()
    try:
        events = d.parse(frame)
    except DialectError as e:
        assert str(e), "a DialectError must say what was wrong"
        return ()
    assert isinstance(events, tuple)
    for ev in events:
        assert isinstance(ev, EVENT_TYPES), ev
    return events


@SETTINGS
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b'{"type":"response.output_audio.delta","delta":"' + b"\xff" * 300 + b'"}')
def test_binary_garbage(frame):
    check(frame)


@SETTINGS
@given(json_values)
@pytest.mark.slow
def test_any_json_value(value):
    check(enc(value))


@SETTINGS
@given(st.sampled_from(KNOWN_TYPES), st.dictionaries(field_names, json_values, max_size=6))
@pytest.mark.slow
def test_known_types_with_arbitrary_fields(t, fields):
    """Wrong types and missing fields in every event the dialect knows."""
    msg = dict(fields, type=t)
    check(enc(msg))


@SETTINGS
@given(st.data())
@pytest.mark.slow
def test_valid_frames_with_one_field_replaced(data):
    """Take a valid frame and replace one (possibly nested) field with any JSON value."""
    check(one_field_replaced(data, VALID))


@SETTINGS
@given(st.data())
def test_valid_frames_with_a_field_removed(data):
    check(one_field_removed(data, VALID))


@SETTINGS
@given(st.data())
def test_mutated_bytes(data):
    """Truncation, byte flips, insertions and deletions of valid frames (the fast audio path
    included: the audio frame is over its 256-byte threshold)."""
    frame = bytearray(orjson.dumps(data.draw(st.sampled_from(VALID))))
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    i = data.draw(st.integers(0, len(frame) - 1))
    if op == "truncate":
        frame = frame[:i]
    elif op == "flip":
        frame[i] = data.draw(st.integers(0, 255))
    elif op == "insert":
        frame[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del frame[i:i + data.draw(st.integers(1, 16))]
    check(bytes(frame))


@SETTINGS
@given(st.text(max_size=600), st.sampled_from(["response.output_audio.delta",
                                                 "response.audio.delta"]))
def test_invalid_base64_audio(delta, t):
    """The engine never decodes audio; any delta string yields an AudioDelta of a sane size."""
    events = check(enc({"type": t, "delta": delta}))
    assert len(events) == 1 and isinstance(events[0], base.AudioDelta)
    assert 0 <= events[0].nbytes <= len(delta.encode()) * 3 // 4 + 3


@pytest.mark.parametrize("n", [10, 1000, 200_000])
@pytest.mark.parametrize("where", ["response", "session", "error", "delta"])
def test_deep_nesting(n, where):
    frame = ('{"type":"response.done","' + where + '":' + "[" * n + "]" * n + "}").encode()
    check(frame)
    frame = ('{"type":"response.done","' + where + '":' + '{"a":' * n + "1" + "}" * n
             + "}").encode()
    check(frame)


@pytest.mark.parametrize("t", ["response.output_audio_transcript.delta", "error",
                               "response.output_audio.delta", "x.unknown",
                               "response.function_call_arguments.done"])
def test_huge_strings(t):
    big = "\u00e9" * 600_000
    msg = {"type": t, "delta": big, "error": {"code": big, "message": big},
           "arguments": big, "call_id": big}
    check(enc(msg))
    check(orjson.dumps({"type": big}))


def test_huge_numbers():
    for num in (b"1e308", b"-1e308", b"1" + b"0" * 400, b"1e400", b"NaN", b"Infinity", b"-0"):
        frame = (b'{"type":"response.done","response":{"status":"completed","usage":'
                 b'{"input_tokens":' + num + b',"input_token_details":{"audio_tokens":' + num
                 + b'}}}}')
        check(frame)


def test_one_dialect_survives_a_stream():
    """Per-session state (the call-name map) survives every hostile frame in one session."""
    d = dialect()
    frames = [orjson.dumps(v) for v in VALID] + [
        b"", b"[]", b'{"type":1}', b'{"type":"response.output_item.added","item":'
        b'{"type":"function_call","call_id":[1],"name":{}}}',
        b'{"type":"response.function_call_arguments.done","call_id":{"a":1}}',
        b'{"type":"response.function_call_arguments.done","item_id":[],"call_id":""}',
    ]
    for f in frames * 3:
        check(f, d)
    assert d.parse(orjson.dumps(VALID[0]))[0] == base.SessionReady("sess_1")
