"""Property-based fuzzing of the Gemini Live dialect: whatever a server sends (text or binary
frames, camelCase or snake_case, several events per frame), `parse()` returns a tuple of sane
normalised events or raises its documented DialectError, nothing else, and the per-turn state
(usage, interrupted flag, resumption handle) never breaks a later turn.

Example counts are tuned for the suite budget (the whole file runs in a few seconds).
"""

from __future__ import annotations

import base64
import json
import math

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from probes.dialects import base
from probes.dialects.base import DialectError
from probes.dialects.gemini_live import GeminiLive, snake
from probes.results import Usage
from tests.hostile.fuzzkit import (
    SETTINGS,
    enc,
    json_values,
    one_field_removed,
    one_field_replaced,
)

#: for the tests whose examples nest several arbitrary JSON values (slow to generate)
FEWER = settings(SETTINGS, max_examples=100)

EVENT_TYPES = tuple(
    getattr(base, n) for n in (
        "SessionReady", "SessionConfigured", "SpeechStarted", "SpeechStopped", "Committed",
        "ResponseCreated", "AudioDelta", "TranscriptDelta", "TextDelta", "InputTranscript",
        "ToolCall", "ResponseDone", "Interrupted", "ServerError", "GoAway", "Ignored", "Unknown",
    )
)

_TOP = ["setupComplete", "serverContent", "toolCall", "toolCallCancellation", "goAway",
        "sessionResumptionUpdate", "usageMetadata", "voiceActivity",
        "voiceActivityDetectionSignal"]
_SERVER_CONTENT = ["modelTurn", "outputTranscription", "inputTranscription", "interrupted",
                   "generationComplete", "turnComplete", "turnCompleteReason",
                   "groundingMetadata", "waitingForInput", "interimInputTranscription"]
#: every top-level key the dialect knows, in both casings, plus a few it does not
TOP_KEYS = _TOP + [snake(k) for k in _TOP] + ["somethingNew", ""]
#: every serverContent sub-key, in both casings
SERVER_CONTENT_KEYS = _SERVER_CONTENT + [snake(k) for k in _SERVER_CONTENT]


def snakify(obj):
    if isinstance(obj, dict):
        return {snake(k): snakify(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snakify(v) for v in obj]
    return obj


#: valid frames of every kind, the seeds of the mutation tests
AUDIO_B64 = base64.b64encode(bytes(range(256)) * 20).decode()  # over the fast-path threshold
USAGE = {"promptTokenCount": 70, "responseTokenCount": 176, "totalTokenCount": 246,
         "thoughtsTokenCount": 3, "cachedContentTokenCount": 2,
         "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 58},
                                 {"modality": "TEXT", "tokenCount": 12}],
         "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 150},
                                   {"modality": "TEXT", "tokenCount": 26}]}
TURN_COMPLETE = {"serverContent": {"turnComplete": True}}
_VALID_CAMEL = [
    {"setupComplete": {"sessionId": "s-1"}},
    {"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": AUDIO_B64}}]}}},
    {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "AAAA"}},
                                               {"text": "Hel"}, {"text": "t", "thought": True}]},
                       "outputTranscription": {"text": "Hello"}}},
    {"serverContent": {"inputTranscription": {"text": "what time", "finished": False}}},
    {"serverContent": {"interrupted": True}},
    {"serverContent": {"generationComplete": True}},
    {"serverContent": {"turnComplete": True, "turnCompleteReason": "STOP"},
     "usageMetadata": USAGE},
    {"toolCall": {"functionCalls": [{"id": "fc-1", "name": "get_time", "args": {"tz": "UTC"}}]}},
    {"toolCallCancellation": {"ids": ["fc-1"]}},
    {"goAway": {"timeLeft": "12.5s"}},
    {"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True}},
    {"voiceActivity": {"voiceActivityType": "ACTIVITY_START"}},
]
VALID = _VALID_CAMEL + [snakify(m) for m in _VALID_CAMEL]

#: any code point, lone surrogates included (a str frame may hold them; UTF-8 cannot)
any_text = st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                   max_size=300)
#: base64-looking strings ending in a run of padding and blanks (strip() and rstrip("="))
b64_text = st.tuples(st.text(st.sampled_from("AQgw+/-_= \n"), max_size=600),
                     st.text(st.sampled_from("= "), max_size=40)).map("".join)
field_names = st.sampled_from(["parts", "inlineData", "inline_data", "data", "text", "thought",
                               "finished", "functionCalls", "function_calls", "id", "name",
                               "args", "timeLeft", "time_left", "newHandle", "resumable",
                               "sessionId", "tokenCount", "modality", "promptTokenCount",
                               "responseTokensDetails", "voiceActivityType", "type"]) | st.text(
    max_size=8)


def dialect() -> GeminiLive:
    return GeminiLive(url="wss://generativelanguage.googleapis.com", model="m")


def assert_sane(ev) -> None:
    """Field invariants the engine relies on, beyond the event's class."""
    assert isinstance(ev, EVENT_TYPES), ev
    if isinstance(ev, base.AudioDelta):
        assert type(ev.nbytes) is int and ev.nbytes >= 0, ev
    elif isinstance(ev, base.GoAway):
        assert ev.time_left_s is None or (type(ev.time_left_s) is float
                                          and math.isfinite(ev.time_left_s)), ev
    elif isinstance(ev, base.ResponseDone):
        assert ev.status in ("completed", "cancelled"), ev
        assert isinstance(ev.usage, Usage) and all(
            type(getattr(ev.usage, f)) is int for f in Usage.__dataclass_fields__), ev
        assert ev.reason is None or isinstance(ev.reason, str), ev
    elif isinstance(ev, base.ToolCall):
        assert all(isinstance(s, str) for s in (ev.call_id, ev.name, ev.arguments)), ev
        orjson.loads(ev.arguments)
    elif isinstance(ev, base.TranscriptDelta | base.TextDelta | base.InputTranscript):
        assert isinstance(ev.text, str), ev
    elif isinstance(ev, base.SessionReady):
        assert isinstance(ev.session_id, str), ev
    elif isinstance(ev, base.Ignored | base.Unknown):
        assert isinstance(ev.type, str), ev


def check(frame: bytes | str, d: GeminiLive | None = None) -> tuple:
    """Parse; only DialectError may escape, and a success is a tuple of sane known events."""
    d = d or dialect()
    try:
        events = d.parse(frame)
    except DialectError as e:
        assert str(e), "a DialectError must say what was wrong"
        return ()
    assert isinstance(events, tuple)
    for ev in events:
        assert_sane(ev)
    return events


def audio_frame(data) -> dict:
    return {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
        "mimeType": "audio/pcm;rate=24000", "data": data}}]}}}


@SETTINGS
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"' + b"\xff" * 300
         + b'"}}]}}}')
def test_binary_garbage(frame):
    check(frame)


@SETTINGS
@given(any_text | any_text.map(lambda t: json.dumps(
    {"serverContent": {"outputTranscription": {"text": t}}}, ensure_ascii=False)))
@example("\ud800")  # a lone surrogate: not encodable as UTF-8
@example('{"serverContent":{"outputTranscription":{"text":"\udfff"}}}')
@pytest.mark.slow
def test_text_frame_garbage(frame):
    check(frame)


@FEWER
@given(json_values, st.booleans())
def test_any_json_value(value, as_text):
    raw = enc(value)
    check(raw.decode("utf-8", "surrogatepass") if as_text else raw)


@FEWER
@given(st.dictionaries(st.sampled_from(TOP_KEYS), json_values, min_size=1, max_size=4))
def test_known_top_level_keys_with_arbitrary_values(msg):
    check(enc(msg))


@FEWER
@given(st.dictionaries(st.sampled_from(SERVER_CONTENT_KEYS), json_values, min_size=1,
                       max_size=5), st.sampled_from(["serverContent", "server_content"]))
def test_server_content_sub_keys_with_arbitrary_values(content, key):
    check(enc({key: content}))


@FEWER
@given(st.lists(st.dictionaries(field_names, json_values, max_size=3), min_size=1, max_size=3))
def test_model_turn_parts_with_arbitrary_fields(parts):
    check(enc({"serverContent": {"modelTurn": {"parts": parts}}}))


@FEWER
@given(st.dictionaries(st.sampled_from(SERVER_CONTENT_KEYS), json_values, max_size=4),
       json_values, st.booleans())
@example({"turnCompleteReason": {"a": 1}}, None, False)
def test_turn_complete_with_arbitrary_siblings(content, usage, snake_case):
    """A turnComplete frame either ends the turn with exactly one ResponseDone or is a
    DialectError: whatever rides along (reason, usage, parts) cannot drop or double it."""
    content = {k: v for k, v in content.items() if snake(k) != "turn_complete"}
    content["turnComplete"] = True
    msg = {"serverContent": content, "usageMetadata": usage}
    events = check(enc(snakify(msg) if snake_case else msg))
    assert events == () or sum(isinstance(e, base.ResponseDone) for e in events) == 1


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


def mutate(draw, frame: bytes) -> bytes:
    """One truncation, byte flip, insertion or deletion (draw: data.draw or a composite's)."""
    frame = bytearray(frame)
    op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    i = draw(st.integers(0, len(frame) - 1))
    if op == "truncate":
        frame = frame[:i]
    elif op == "flip":
        frame[i] = draw(st.integers(0, 255))
    elif op == "insert":
        frame[i:i] = draw(st.binary(min_size=1, max_size=8))
    else:
        del frame[i:i + draw(st.integers(1, 16))]
    return bytes(frame)


@SETTINGS
@given(st.data())
def test_mutated_bytes(data):
    """Mutations of valid frames (the fast audio path included: the audio frame is over its
    256-byte threshold, so its cut-out of the base64 sees broken quotes and escapes)."""
    check(mutate(data.draw, orjson.dumps(data.draw(st.sampled_from(VALID)))))


@SETTINGS
@given(b64_text | st.text(max_size=600), st.booleans())
@example("====", False)
@example("A" * 4 + "=" * 8, False)
@example("=" * 400, False)
@example(" " * 300 + "=", False)
def test_invalid_base64_audio(data, padded_to_fast_path):
    """The engine never decodes audio; any data string yields one AudioDelta of a sane size,
    on the full parse and on the fast path (frames of 256 bytes and more)."""
    msg = audio_frame(data)
    if padded_to_fast_path:
        msg["serverContent"]["outputTranscription"] = {"text": "x" * 300}
    events = check(enc(msg))
    assert len(events) == 1 + padded_to_fast_path and isinstance(events[0], base.AudioDelta)
    assert 0 <= events[0].nbytes <= len(data.encode()) * 3 // 4 + 3


GO_AWAY_ODD = ["", "s", "ss", "-5s", "1e309s", "-1e309s", "NaNs", "nan", "infs", "-Infinitys",
               "1" * 400 + "s", "9" * 5000 + "s", "0x10s", "1_000s", " 12s", "12 s", "12m",
               "\u0661\u0662s", 1e308, -1e308, 0, -1, 2**63 - 1, True, False, None, [], {},
               ["12s"], {"seconds": 12}]


@SETTINGS
@given(st.one_of(st.sampled_from(GO_AWAY_ODD), st.text(max_size=30),
                 st.text(max_size=30).map(lambda s: s + "s"),
                 st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f}s"),
                 st.integers().map(lambda n: f"{n}s"), json_values),
       st.sampled_from(["timeLeft", "time_left"]))
@example("1e309s", "timeLeft")
@example("NaNs", "timeLeft")
def test_go_away_time_left(time_left, key):
    """Any timeLeft gives one GoAway whose time is None or finite, never inf or NaN."""
    d = dialect()
    events = check(enc({"goAway": {key: time_left}}), d)
    assert len(events) == 1 and isinstance(events[0], base.GoAway)
    assert d.go_away_s == events[0].time_left_s


@pytest.mark.parametrize("time_left, seconds", [("12.5s", 12.5), ("50s", 50.0), (3, 3.0),
                                                ("0s", 0.0), ("1e300s", 1e300)])
def test_go_away_well_formed_times_still_parse(time_left, seconds):
    assert dialect().parse(enc({"goAway": {"timeLeft": time_left}})) == (base.GoAway(seconds),)


DEEP_WHERE = ["serverContent", "usageMetadata", "toolCall", "goAway", "setupComplete",
              "sessionResumptionUpdate", "voiceActivity", "somethingNew"]


def nested(n: int, inner: bytes, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * n + inner + closer * n


@pytest.mark.parametrize("n", [10, 1000, 100_000])
@pytest.mark.parametrize("where", DEEP_WHERE)
def test_deep_nesting_inside_known_keys(n, where):
    check(b'{"' + where.encode() + b'":' + nested(n, b"") + b"}")
    check(b'{"' + where.encode() + b'":' + nested(n, b"1", b'{"a":', b"}") + b"}")
    if where == "toolCall":  # args are re-serialised: orjson.dumps has a lower depth limit
        args = nested(n, b"1", b'{"a":', b"}")
        check(b'{"toolCall":{"functionCalls":[{"id":"f","name":"n","args":' + args + b"}]}}")


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"serverContent":', b"}"),
                                            (b'{"a":', b"}")])
def test_a_known_frame_nested_100_000_deep_is_a_dialect_error(opener, closer):
    """The JSON parser's depth limit surfaces as a protocol error, never a RecursionError."""
    for msg in VALID:
        with pytest.raises(DialectError):
            dialect().parse(nested(100_000, orjson.dumps(msg), opener, closer))


@pytest.mark.parametrize("key", ["outputTranscription", "inputTranscription", "modelTurn",
                                 "turnCompleteReason"])
def test_huge_strings(key):
    big = "\u00e9" * 600_000
    content = {key: {"text": big, "parts": [{"text": big}]} if key != "turnCompleteReason"
               else big, "turnComplete": True}
    check(enc({"serverContent": content}))
    check(enc({"setupComplete": {"sessionId": big}, big: big}))
    check(enc({"toolCall": {"functionCalls": [{"id": big, "name": big, "args": {big: big}}]}}))
    check(enc({"sessionResumptionUpdate": {"newHandle": big, "resumable": True}}))
    check(enc({"goAway": {"timeLeft": big + "s"}}))
    check(orjson.dumps({big: {}}))


def test_huge_audio_is_counted_on_the_fast_path_without_decoding():
    data = "A" * 4_000_000
    (ev,) = check(enc(audio_frame(data)))
    assert ev == base.AudioDelta(3_000_000)


HUGE_NUMBERS = [b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809",
                b"1" + b"0" * 30, b"1" + b"0" * 400, b"1e308", b"-1e308", b"1e400", b"NaN",
                b"Infinity", b"-0", b"1.5", b'"12"', b'"1e400"', b'"' + b"9" * 5000 + b'"',
                b'"NaN"', b"true", b"[]"]


@pytest.mark.parametrize("num", HUGE_NUMBERS)
def test_huge_numbers_in_usage_metadata(num):
    """Counts beyond 64 bits (orjson reads them as floats) and non-numbers in every field."""
    d = dialect()
    usage = (b'{"promptTokenCount":' + num + b',"responseTokenCount":' + num
             + b',"thoughtsTokenCount":' + num + b',"cachedContentTokenCount":' + num
             + b',"promptTokensDetails":[{"modality":"AUDIO","tokenCount":' + num + b"}]"
             + b',"cacheTokensDetails":[{"modality":"AUDIO","token_count":' + num + b"}]}")
    check(b'{"serverContent":{"turnComplete":true},"usageMetadata":' + usage + b"}", d)
    check(b'{"usage_metadata":' + usage + b"}", d)
    (done,) = check(orjson.dumps(TURN_COMPLETE), d)
    assert isinstance(done, base.ResponseDone)


def test_usage_beyond_64_bits_is_kept_as_int():
    d = dialect()
    (done,) = d.parse(b'{"serverContent":{"turnComplete":true},"usageMetadata":'
                      b'{"promptTokenCount":18446744073709551616}}')
    assert done.usage.in_text == 2**64 and type(done.usage.in_text) is int


# ---- state across frames ------------------------------------------------------------------

fuzzed_dicts = st.one_of(
    st.sampled_from(VALID),
    st.dictionaries(st.sampled_from(TOP_KEYS), json_values, min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(SERVER_CONTENT_KEYS), json_values, max_size=4).map(
        lambda c: {"serverContent": c}),
)


@st.composite
def fuzzed_frames(draw):
    """A valid, arbitrary or byte-mutated frame, as bytes or str."""
    raw = enc(draw(fuzzed_dicts))
    if draw(st.booleans()):
        raw = mutate(draw, raw)
    return raw.decode("utf-8", "replace") if draw(st.booleans()) else raw


@settings(SETTINGS, max_examples=60)
@given(st.lists(fuzzed_frames(), max_size=12))
def test_state_survives_any_sequence_of_frames(frames):
    """Per-turn state (usage, interrupted flag, resumption handle, go-away time) stays
    well-typed, and a valid turnComplete still ends the turn and resets it."""
    d = dialect()
    for f in frames:
        check(f, d)
        assert d.usage is None or isinstance(d.usage, Usage)
        assert isinstance(d.interrupted, bool)
        assert d.resumption_handle is None or isinstance(d.resumption_handle, str)
        assert d.go_away_s is None or math.isfinite(d.go_away_s)
    (done,) = check(orjson.dumps(TURN_COMPLETE), d)
    assert isinstance(done, base.ResponseDone) and done.status in ("completed", "cancelled")
    assert d.parse(orjson.dumps(TURN_COMPLETE)) == (base.ResponseDone("completed", Usage()),)
    assert d.parse(orjson.dumps(VALID[0])) == (base.SessionReady("s-1"),)
