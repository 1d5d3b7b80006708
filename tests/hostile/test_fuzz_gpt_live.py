"""Property-based fuzzing of the GPT-Live dialect: whatever a server sends, `parse()` returns a
tuple of known normalised events or raises its documented DialectError, nothing else, and its
per-session state (delegations, calls awaiting output) stays bounded and usable.

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
from probes.dialects.gpt_live import MAX_DELEGATIONS, GptLive
from tests.hostile.fuzzkit import (
    SETTINGS,
    enc,
    json_values,
    one_field_removed,
    one_field_replaced,
)

EVENT_TYPES = tuple(
    getattr(base, n) for n in (
        "SessionReady", "SessionConfigured", "AudioDelta", "TranscriptDelta", "InputTranscript",
        "ToolCall", "ServerError", "UsageUpdated", "SessionClosed", "DelegationCreated",
        "BackendEvent", "Ack", "Info", "Ignored", "Unknown",
    )
)

KNOWN_TYPES = [
    "session.started", "session.updated", "session.closed", "session.output_audio.delta",
    "session.output_transcript.delta", "session.input_transcript.delta", "session.usage.updated",
    "session.delegation.created", "response.event", "error", "info",
    "session.input_audio.muted", "session.commentary.appended", "session.input_audio.append",
    "transport.failed", "x.unknown", "",
]

AUDIO_B64 = base64.b64encode(bytes(range(256)) * 20).decode()
SESSION = {"id": "sess_1", "status": "active", "expires_at": 1, "model": "gpt-live-1"}
VALID = [
    {"type": "session.started", "event_id": "e", "session": SESSION},
    {"type": "session.updated", "event_id": "e", "session": SESSION},
    {"type": "session.output_audio.delta", "event_id": "e", "delta": AUDIO_B64},
    {"type": "session.output_audio.delta", "event_id": "e", "delta": "AAAA"},
    {"type": "session.output_transcript.delta", "event_id": "e", "delta": "hi", "start_ms": 1,
     "end_ms": 2},
    {"type": "session.input_transcript.delta", "event_id": "e", "delta": "yo", "start_ms": 1,
     "end_ms": 2},
    {"type": "session.usage.updated", "event_id": "e", "usage": {"seconds": 6.2},
     "context_window": {"usage_ratio": 0.1}},
    {"type": "session.closed", "event_id": "e", "reason": "expired", "session": SESSION,
     "usage": {"seconds": 7}},
    {"type": "session.delegation.created", "event_id": "e", "offset_ms": 5,
     "delegation": {"id": "dlg_1", "type": "delegation", "target": "client"}},
    {"type": "session.delegation.created", "event_id": "e", "offset_ms": 5,
     "delegation": {"id": "dlg_2", "type": "delegation", "target": "responses",
                    "response_id": "resp_1"}},
    {"type": "response.event", "event_id": "e", "delegation_id": "dlg_2",
     "event": {"type": "response.output_item.done", "item": {
         "type": "function_call", "id": "fc", "call_id": "call_1", "name": "f",
         "arguments": "{}", "status": "completed"}}},
    {"type": "response.event", "event_id": "e", "delegation_id": "dlg_2",
     "event": {"type": "response.completed", "response": {
         "id": "resp_1", "status": "completed", "usage": {
             "input_tokens": 3, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}}}},
    {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error",
                                                 "code": "unknown_parameter", "message": "m",
                                                 "param": "session.x"}},
    {"type": "info", "event_id": "e", "code": "c", "message": "m"},
    {"type": "session.commentary.appended", "event_id": "e", "start_ms": 1, "end_ms": 1},
]

field_names = st.sampled_from(["delta", "session", "usage", "seconds", "reason", "delegation",
                               "id", "target", "event", "item", "error", "code", "start_ms",
                               "end_ms", "offset_ms", "delegation_id", "context_window"]) | st.text(
    max_size=8)


def dialect() -> GptLive:
    return GptLive(url="ws://127.0.0.1:1/v1/live/sessions", model="gpt-live-1",
                   tools=[{"type": "function", "name": "f"}])


def check(frame: bytes, d: GptLive | None = None) -> tuple:
    d = d or dialect()
    try:
        events = d.parse(frame)
    except DialectError as e:
        assert str(e), "a DialectError must say what was wrong"
        return ()
    assert isinstance(events, tuple) and events
    for ev in events:
        assert isinstance(ev, EVENT_TYPES), ev
        if isinstance(ev, base.AudioDelta):
            assert ev.nbytes >= 0 and isinstance(ev.audio, bytes)
    return events


@SETTINGS
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b'{"type":"session.output_audio.delta","delta":"' + b"\xff" * 300 + b'"}')
def test_binary_garbage(frame):
    check(frame)


@SETTINGS
@given(json_values)
@pytest.mark.slow
def test_any_json_value(value):
    check(enc(value))


@SETTINGS
@given(st.sampled_from(KNOWN_TYPES), st.dictionaries(field_names, json_values, max_size=6))
def test_known_types_with_arbitrary_fields(t, fields):
    check(enc(dict(fields, type=t)))


@SETTINGS
@given(st.data())
def test_valid_frames_with_one_field_replaced(data):
    check(one_field_replaced(data, VALID))


@SETTINGS
@given(st.data())
def test_valid_frames_with_a_field_removed(data):
    check(one_field_removed(data, VALID))


@SETTINGS
@given(st.data())
def test_mutated_bytes(data):
    """Truncation, flips, insertions and deletions (the fast audio path included)."""
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
@given(st.text(max_size=600))
def test_invalid_base64_audio(delta):
    """Audio is never decoded here; any delta string is an AudioDelta of a sane size."""
    events = check(enc({"type": "session.output_audio.delta", "delta": delta}))
    assert len(events) == 1 and isinstance(events[0], base.AudioDelta)
    assert 0 <= events[0].nbytes <= len(delta.encode()) * 3 // 4 + 3


@pytest.mark.parametrize("n", [10, 1000, 200_000])
@pytest.mark.parametrize("where", ["session", "usage", "event", "delta"])
def test_deep_nesting(n, where):
    for t in ("response.event", "session.usage.updated", "session.started"):
        check(('{"type":"' + t + '","' + where + '":' + "[" * n + "]" * n + "}").encode())
        check(('{"type":"' + t + '","' + where + '":' + '{"a":' * n + "1" + "}" * n
               + "}").encode())


@pytest.mark.parametrize("t", ["session.output_transcript.delta", "error", "info",
                               "session.output_audio.delta", "x.unknown", "response.event"])
def test_huge_strings(t):
    big = "\u00e9" * 600_000
    check(enc({"type": t, "delta": big, "error": {"code": big, "message": big}, "code": big,
               "event": {"type": big}, "delegation_id": big}))
    check(orjson.dumps({"type": big}))


def test_huge_numbers():
    for num in (b"1e308", b"-1e308", b"1" + b"0" * 400, b"1e400", b"NaN", b"-0"):
        check(b'{"type":"session.usage.updated","usage":{"seconds":' + num + b'}}')
        check(b'{"type":"session.output_transcript.delta","delta":"x","start_ms":' + num + b'}')


@SETTINGS
@given(st.lists(st.sampled_from(VALID) | st.dictionaries(field_names, json_values, max_size=4),
                max_size=40), st.lists(st.text(max_size=8), max_size=10))
def test_one_dialect_survives_a_stream_and_answers_every_call(frames, answers):
    """State survives any sequence; tool_result always yields valid messages."""
    d = dialect()
    for f in frames:
        for ev in check(enc(f), d):
            if isinstance(ev, base.ToolCall):
                for m in d.tool_result(ev.call_id, "ok", ev.name):
                    assert isinstance(orjson.loads(m), dict)
    for a in answers:
        assert d.tool_result(a, "x")
    assert len(d.delegations) <= MAX_DELEGATIONS


def test_many_delegations_stay_bounded():
    d = dialect()
    for i in range(3 * MAX_DELEGATIONS):
        check(orjson.dumps({"type": "session.delegation.created",
                            "delegation": {"id": f"d{i}", "target": "client"}}), d)
        check(orjson.dumps({"type": "response.event", "delegation_id": f"r{i}", "event": {
            "type": "response.output_item.done", "item": {"type": "function_call",
                                                          "call_id": f"c{i}"}}}), d)
    assert len(d.delegations) <= MAX_DELEGATIONS and len(d._calls) <= MAX_DELEGATIONS
