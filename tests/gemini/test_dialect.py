"""Gemini Live dialect: every message shape of the protocol reference, camelCase and snake_case,
text and binary frames (the engine hands the dialect bytes for both; str is accepted too)."""

from __future__ import annotations

import base64

import orjson
import pytest

from probes.dialects import dialect_for
from probes.dialects.base import (
    AudioDelta,
    DialectError,
    GoAway,
    Ignored,
    InputTranscript,
    Interrupted,
    ResponseDone,
    SessionReady,
    SpeechStopped,
    TextDelta,
    ToolCall,
    TranscriptDelta,
    Unknown,
)
from probes.dialects.gemini_live import GeminiLive, parse_usage, snake
from probes.results import Usage
from probes.spec import Target

URL = "wss://generativelanguage.googleapis.com"
USAGE = {"promptTokenCount": 70, "responseTokenCount": 176, "totalTokenCount": 246,
         "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 58}, {"modality": "TEXT", "tokenCount": 12}],
         "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 150}, {"modality": "TEXT", "tokenCount": 26}]}


def snakify(obj):
    if isinstance(obj, dict):
        return {snake(k): snakify(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snakify(v) for v in obj]
    return obj


def frames(msg: dict):
    """The same message as camelCase and snake_case, each as bytes (binary/text) and str."""
    for m in (msg, snakify(msg)):
        raw = orjson.dumps(m)
        yield raw
        yield raw.decode()


def parse_all(d: GeminiLive, msg: dict) -> list[tuple]:
    return [d.parse(f) for f in frames(msg)]


def dialect(**kw) -> GeminiLive:
    return GeminiLive(url=URL, model="gemini-2.5-flash-native-audio-preview-12-2025", **kw)


def test_registered_for_provider_gemini_with_16k_input():
    d = dialect_for(Target("g", URL, "m", provider="gemini"))
    assert isinstance(d, GeminiLive)
    assert (d.input_format.codec, d.input_format.rate) == ("pcm16", 16000)
    assert d.output_format.rate == 24000 and d.setup_first and not d.waits_for_configured


def test_connect_request_gemini_api_key_header_and_version():
    d = dialect()
    req = d.connect_request("KEY")
    assert req.url == URL + "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    assert req.headers == (("x-goog-api-key", "KEY"),)
    d = GeminiLive(url=URL, model="m", api_version="v1alpha")
    assert ".v1alpha.GenerativeService" in d.connect_request("K").url
    full = URL + "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    assert GeminiLive(url=full, model="m").connect_request(None).url == full
    assert ".v1alpha." in GeminiLive(url=full, model="m", api_version="v1alpha").connect_request(None).url
    assert GeminiLive(url=full, model="m").connect_request(None).headers == ()


def test_connect_request_vertex_bearer_and_model_path():
    url = ("wss://us-central1-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1."
           "LlmBidiService/BidiGenerateContent")
    model = "projects/p/locations/us-central1/publishers/google/models/gemini-live-2.5-flash-native-audio"
    d = GeminiLive(url=url, model=model)
    req = d.connect_request("TOKEN")
    assert req.url == url and req.headers == (("Authorization", "Bearer TOKEN"),)
    assert d.setup_message()["setup"]["model"] == model
    assert d.audio_stream_end() == []


def test_setup_message_auto_and_manual():
    d = dialect(voice="Kore", instructions="Be brief.", input_transcription=True,
                tools=[{"type": "function", "name": "get_time", "description": "t",
                        "parameters": {"type": "object"}}, {"googleSearch": {}}])
    (raw,) = d.configure()
    s = orjson.loads(raw)["setup"]
    assert s["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    assert s["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert s["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Kore"
    assert s["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert s["realtimeInputConfig"]["automaticActivityDetection"]["disabled"] is False
    assert s["inputAudioTranscription"] == {} and s["outputAudioTranscription"] == {}
    assert s["tools"] == [{"functionDeclarations": [{"name": "get_time", "description": "t",
                                                     "parameters": {"type": "object"}}]},
                          {"googleSearch": {}}]
    m = dialect(turn_mode="manual")
    s = orjson.loads(m.configure()[0])["setup"]
    assert s["realtimeInputConfig"]["automaticActivityDetection"] == {"disabled": True}
    assert "inputAudioTranscription" not in s
    assert [orjson.loads(x) for x in m.start_activity()] == [{"realtimeInput": {"activityStart": {}}}]
    assert [orjson.loads(x) for x in m.end_turn()] == [{"realtimeInput": {"activityEnd": {}}}]
    assert dialect().start_activity() == []
    assert [orjson.loads(x) for x in dialect().audio_stream_end()] == [
        {"realtimeInput": {"audioStreamEnd": True}}]


def test_client_messages_audio_tool_text():
    d = dialect()
    b64 = base64.b64encode(b"\x01\x00" * 160).decode()
    assert orjson.loads(d.append_audio(b64)) == {
        "realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": b64}}}
    (tr,) = d.tool_result("fc-1", '{"result": "12:00"}', "get_time")
    assert orjson.loads(tr) == {"toolResponse": {"functionResponses": [
        {"id": "fc-1", "name": "get_time", "response": {"result": "12:00"}}]}}
    (tr,) = d.tool_result("fc-2", "plain", "f")
    assert orjson.loads(tr)["toolResponse"]["functionResponses"][0]["response"] == {"result": "plain"}
    (ut,) = d.user_text("hi")
    assert orjson.loads(ut) == {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}],
                                                  "turnComplete": True}}


def test_setup_complete_with_and_without_session_id():
    d = dialect()
    for evs in parse_all(d, {"setupComplete": {}}):
        assert evs == (SessionReady(""),)
    for evs in parse_all(d, {"setupComplete": {"sessionId": "s-1"}}):
        assert evs == (SessionReady("s-1"),)


@pytest.mark.parametrize("data", [
    base64.b64encode(bytes(range(256)) * 40).decode(),          # standard, big: fast path
    base64.urlsafe_b64encode(bytes(range(250)) * 40).decode(),   # URL-safe, padded
    base64.b64encode(b"\xff\xfe" * 7).decode(),                 # small: full parse
    base64.b64encode(b"\x00" * 4000).decode().rstrip("="),      # unpadded
])
def test_audio_parts_fast_and_full_path(data):
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    msg = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                                     "data": data}}]}}}
    for evs in parse_all(dialect(), msg):
        assert evs == (AudioDelta(len(raw)),)


def test_one_frame_many_events_audio_text_transcript_turn_complete_usage():
    data = base64.b64encode(b"\x00\x01" * 2400).decode()
    msg = {"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}},
        {"text": "Hel"}, {"text": "thinking", "thought": True}]},
        "outputTranscription": {"text": "Hello there"},
        "generationComplete": True, "turnComplete": True}, "usageMetadata": USAGE}
    for evs in parse_all(dialect(), msg):
        assert evs == (AudioDelta(4800), TextDelta("Hel"), TranscriptDelta("Hello there"),
                       Ignored("generationComplete"),
                       ResponseDone("completed", Usage(in_audio=58, in_text=12, out_audio=150, out_text=26)))


def test_transcriptions_interrupted_generation_and_turn_complete():
    d = dialect()
    for evs in parse_all(d, {"serverContent": {"inputTranscription": {"text": "what time", "finished": False}}}):
        assert evs == (InputTranscript("what time", False),)
    for evs in parse_all(d, {"serverContent": {"inputTranscription": {"text": "what time is it"}}}):
        assert evs == (InputTranscript("what time is it", True),)
    for evs in parse_all(d, {"serverContent": {"outputTranscription": {"text": "It is"}}}):
        assert evs == (TranscriptDelta("It is"),)
    for evs in parse_all(d, {"serverContent": {"generationComplete": True}}):
        assert evs == (Ignored("generationComplete"),)
    for f in frames({"serverContent": {"interrupted": True}}):
        assert d.parse(f) == (Interrupted(),)
        (done,) = d.parse(orjson.dumps({"serverContent": {"turnComplete": True}}))
        assert done.status == "cancelled" and done.reason == "interrupted"
    # the next turn completes normally; usage in a message of its own is kept for turnComplete
    for f in frames({"usageMetadata": USAGE}):
        assert d.parse(f) == (Ignored("usageMetadata"),) or d.parse(f) == (Ignored("usage_metadata"),)
        (done,) = d.parse(b'{"serverContent":{"turnComplete":true}}')
        assert done == ResponseDone("completed", parse_usage(USAGE))
    (done,) = d.parse(b'{"serverContent":{"turnComplete":true}}')
    assert done.usage == Usage()  # usage does not leak into the next turn


def test_tool_call_and_cancellation():
    msg = {"toolCall": {"functionCalls": [{"id": "fc-1", "name": "get_time", "args": {"tz": "UTC"}},
                                          {"id": "fc-2", "name": "noop"}]}}
    for evs in parse_all(dialect(), msg):
        assert evs == (ToolCall("fc-1", "get_time", '{"tz":"UTC"}'), ToolCall("fc-2", "noop", "{}"))
    for evs in parse_all(dialect(), {"toolCallCancellation": {"ids": ["fc-1"]}}):
        assert evs == (Ignored("toolCallCancellation"),)


def test_go_away_and_session_resumption():
    d = dialect()
    for evs in parse_all(d, {"goAway": {"timeLeft": "50s"}}):
        assert evs == (GoAway(50.0),)
    assert d.go_away_s == 50.0
    for evs in parse_all(d, {"goAway": {"timeLeft": "1.5s"}}):
        assert evs == (GoAway(1.5),)
    for evs in parse_all(d, {"sessionResumptionUpdate": {"newHandle": "abc", "resumable": True}}):
        assert evs == (Ignored("sessionResumptionUpdate"),)
    assert d.resumption_handle == "abc"
    d.parse(b'{"sessionResumptionUpdate":{"newHandle":"","resumable":false}}')
    assert d.resumption_handle == "abc"


def test_voice_activity_empty_and_unknown_messages():
    d = dialect()
    for evs in parse_all(d, {"voiceActivity": {"voiceActivityType": "ACTIVITY_END"}}):
        assert evs == (SpeechStopped(),)
    assert d.parse(b"{}") == ()
    assert d.parse(b'{"somethingNew": {}}') == (Unknown("somethingNew"),)
    assert d.unknown_events == 1


def test_vertex_usage_names():
    u = {"promptTokenCount": 10, "candidatesTokenCount": 30,
         "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 30}],
         "thoughtsTokenCount": 4, "cachedContentTokenCount": 2}
    for m in (u, snakify(u)):
        assert parse_usage(m) == Usage(in_text=10, out_audio=30, out_text=4, in_cached=2)


@pytest.mark.parametrize("bad", [b"not json", b"[1]", b'{"serverContent": 3}',
                                 b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":5}}]}}}',
                                 b'{"serverContent":{"modelTurn":{"parts":[7]}}}'])
def test_malformed_frames_are_protocol_errors(bad):
    with pytest.raises(DialectError):
        dialect().parse(bad)


def test_binary_frame_with_non_ascii_text_and_escaped_audio():
    msg = {"serverContent": {"outputTranscription": {"text": "héllo \"quoted\""},
                             "modelTurn": {"parts": [{"inlineData": {"data": "AAAA" * 100}}]}}}
    raw = orjson.dumps(msg)
    assert dialect().parse(raw) == (AudioDelta(300), TranscriptDelta('héllo "quoted"'))


def test_long_data_argument_of_a_tool_call_is_not_taken_for_audio():
    args = {"data": "x" * 400}
    msg = {"toolCall": {"functionCalls": [{"id": "fc-1", "name": "store", "args": args}]}}
    for evs in parse_all(dialect(), msg):
        assert evs == (ToolCall("fc-1", "store", orjson.dumps(args).decode()),)
