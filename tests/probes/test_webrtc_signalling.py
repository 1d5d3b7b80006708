"""WebRTC signalling requests and answers for both APIs, with plain data (no sockets)."""

from __future__ import annotations

import email.parser
import email.policy

import orjson
import pytest

from probes.dialects.gpt_live import GptLive
from probes.dialects.openai_realtime import OpenAIRealtime
from probes.webrtc_signalling import (
    SignallingError,
    classify_exception,
    live_offer,
    parse_live_answer,
    parse_realtime_answer,
    realtime_calls_url,
    realtime_hangup,
    realtime_offer,
)

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ANSWER = OFFER.replace("o=- 1", "o=- 2")


def parts(req) -> dict[str, tuple[str, bytes]]:
    ctype = dict(req.headers)["Content-Type"]
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.body)
    return {p.get_param("name", header="content-disposition"): (p.get_content_type(),
                                                                 p.get_payload(decode=True))
            for p in msg.iter_parts()}


@pytest.mark.parametrize("url, want", [
    ("ws://127.0.0.1:9/v1/realtime?model=m", "http://127.0.0.1:9/v1/realtime/calls"),
    ("wss://api.openai.com/v1/realtime", "https://api.openai.com/v1/realtime/calls"),
    ("wss://api.openai.com", "https://api.openai.com/v1/realtime/calls"),
    ("wss://r.openai.azure.com/openai/v1/realtime?model=dep",
     "https://r.openai.azure.com/openai/v1/realtime/calls"),
])
def test_realtime_calls_url(url, want):
    assert realtime_calls_url(url) == want


def test_realtime_offer_multipart():
    d = OpenAIRealtime(url="ws://127.0.0.1:9/v1/realtime", model="gpt-realtime", voice="marin",
                       instructions="Be brief.")
    req = realtime_offer(d, "sk-x", OFFER, boundary="B0")
    h = dict(req.headers)
    assert req.method == "POST" and req.url == "http://127.0.0.1:9/v1/realtime/calls"
    assert h["Authorization"] == "Bearer sk-x" and h["Accept"] == "application/sdp"
    p = parts(req)
    assert p["sdp"] == ("application/sdp", OFFER.encode())
    ctype, raw = p["session"]
    session = orjson.loads(raw)
    assert ctype == "application/json"
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    assert session["instructions"] == "Be brief."
    assert session["audio"]["output"] == {"voice": "marin"}  # no PCM format over WebRTC
    assert "format" not in session["audio"]["input"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


def test_realtime_offer_azure_auth_and_no_beta_header():
    d = OpenAIRealtime(url="wss://r.openai.azure.com/openai/v1/realtime", model="dep",
                       provider="azure")
    req = realtime_offer(d, "k", OFFER)
    h = dict(req.headers)
    assert h["api-key"] == "k" and "Authorization" not in h
    assert req.url == "https://r.openai.azure.com/openai/v1/realtime/calls"
    assert not any(k.lower() == "openai-beta" for k in h)


def test_realtime_answer_and_hangup():
    a = parse_realtime_answer(201, {"Location": "/v1/realtime/calls/rtc_abc123",
                                    "Content-Type": "application/sdp"}, ANSWER.encode())
    assert a.sdp == ANSWER and a.call_id == "rtc_abc123"
    d = OpenAIRealtime(url="ws://127.0.0.1:9/v1/realtime", model="m")
    req = realtime_hangup(d, "sk", a.call_id)
    assert req.url == "http://127.0.0.1:9/v1/realtime/calls/rtc_abc123/hangup"
    assert dict(req.headers)["Authorization"] == "Bearer sk" and req.body == b""


def test_realtime_answer_without_location():
    assert parse_realtime_answer(201, [], ANSWER.encode()).call_id is None


@pytest.mark.parametrize("status, body, outcome", [
    (401, b'{"error":{"code":"invalid_api_key"}}', "http_401"),
    (429, b"{}", "http_429"),
    (500, b"", "http_500"),
    (201, b"<html>not sdp</html>", "protocol"),
])
def test_realtime_answer_errors(status, body, outcome):
    with pytest.raises(SignallingError) as e:
        parse_realtime_answer(status, {}, body)
    assert e.value.outcome == outcome


def test_live_offer_json():
    d = GptLive(url="ws://127.0.0.1:9/v1", model="gpt-live-1", instructions="Hi.")
    req = live_offer(d, "sk-y", OFFER)
    assert req.url == "http://127.0.0.1:9/v1/live/sessions"
    h = dict(req.headers)
    assert h["Authorization"] == "Bearer sk-y" and h["Content-Type"] == "application/json"
    doc = orjson.loads(req.body)
    assert doc["transport"] == {"type": "webrtc", "sdp": OFFER}
    assert doc["session"]["model"] == "gpt-live-1"
    assert doc["session"]["delegation"] == {"type": "client"}
    assert "format" not in doc["session"].get("audio", {})


def test_live_offer_azure():
    d = GptLive(url="wss://r.openai.azure.com/openai", model="dep")
    req = live_offer(d, "k", OFFER)
    assert req.url == "https://r.openai.azure.com/openai/v1/live/sessions"
    assert dict(req.headers)["api-key"] == "k"


def test_live_answer():
    body = orjson.dumps({"session": {"id": "sess_1"}, "transport": {"type": "webrtc",
                                                                    "sdp": ANSWER}})
    a = parse_live_answer(201, {}, body)
    assert a.sdp == ANSWER and a.call_id == "sess_1"


@pytest.mark.parametrize("status, body, outcome", [
    (401, b"{}", "http_401"),
    (201, b"not json", "protocol"),
    (201, b'{"session":{"id":"s"}}', "protocol"),
    (201, b'{"transport":{"sdp":5}}', "protocol"),
    (201, b'{"transport":{"sdp":"hello"}}', "protocol"),
])
def test_live_answer_errors(status, body, outcome):
    with pytest.raises(SignallingError) as e:
        parse_live_answer(status, {}, body)
    assert e.value.outcome == outcome


@pytest.mark.parametrize("exc, phase, outcome", [
    (ConnectionRefusedError(), "signalling", "connect_refused"),
    (TimeoutError(), "signalling", "connect_timeout"),
    (TimeoutError(), "ice", "ice_failed"),
    (TimeoutError(), "dtls", "dtls_failed"),
    (ConnectionError("DTLS handshake failed"), "media", "dtls_failed"),
    (ConnectionError("ICE negotiation failed"), "media", "ice_failed"),
    (SignallingError("http_503", "x"), "signalling", "http_503"),
    (ValueError("odd"), "media", "protocol"),
    (ValueError("service unavailable"), "media", "protocol"),  # not "ice" inside a word
])
def test_classify(exc, phase, outcome):
    assert classify_exception(exc, phase) == outcome
