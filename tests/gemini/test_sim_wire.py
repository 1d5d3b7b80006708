"""The simulator's Gemini Live endpoint with a plain websockets client (not the probe engine)."""

from __future__ import annotations

import base64
import time

import numpy as np
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.simulator.wire import silence, tone_speech

RATE = 16000
PATH = "/ws/google.ai.generativelanguage.{v}.GenerativeService.BidiGenerateContent"


def open_g(sim, path: str | None = None, query: str = "?key=x", headers: dict | None = None):
    url = sim.ws_url + (path if path is not None else PATH.format(v="v1beta")) + query
    return connect(url, additional_headers=headers or {}, compression=None, open_timeout=5,
                   legacy=True)


def recv(ws, timeout: float = 5.0) -> tuple[dict, bytes | str]:
    raw = ws.recv(timeout=timeout)  # bytes for a binary frame, str for a text frame
    return orjson.loads(raw), raw


def setup(ws, snake: bool = False, manual: bool = False, **extra) -> dict:
    s = {"model": "models/sim-fast", "generationConfig": {"responseModalities": ["AUDIO"]},
         "outputAudioTranscription": {}, **extra}
    if manual:
        s["realtimeInputConfig"] = {"automaticActivityDetection": {"disabled": True}}
    if snake:
        s = {"model": s["model"], "generation_config": {"response_modalities": ["AUDIO"]},
             "output_audio_transcription": {}}
        if manual:
            s["realtime_input_config"] = {"automatic_activity_detection": {"disabled": True}}
    ws.send(orjson.dumps({"setup": s}), text=True)
    msg, raw = recv(ws)
    assert isinstance(raw, bytes), "setupComplete must be a binary frame"
    assert "setupComplete" in msg
    return msg


def send_audio(ws, pcm: np.ndarray, urlsafe: bool = False, snake: bool = False, chunk_ms: int = 100,
               pace: bool = True) -> None:
    raw = pcm.astype("<i2").tobytes()
    step = RATE * chunk_ms // 1000 * 2
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    for i in range(0, len(raw), step):
        data = enc(raw[i:i + step]).decode()
        if snake:
            msg = {"realtime_input": {"audio": {"mime_type": "audio/pcm;rate=16000", "data": data}}}
        else:
            msg = {"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": data}}}
        ws.send(orjson.dumps(msg), text=True)
        if pace:
            time.sleep(chunk_ms / 1000 / 4)  # 4x real time: the VAD only counts samples


def until_turn_complete(ws, timeout: float = 10.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while True:
        msg, raw = recv(ws, max(deadline - time.monotonic(), 0.01))
        assert isinstance(raw, bytes), "every server message is a binary frame"
        out.append(msg)
        if msg.get("serverContent", {}).get("turnComplete"):
            return out


def speech(seconds: float = 0.6, tail: float = 0.5) -> np.ndarray:
    return np.concatenate([tone_speech(seconds, RATE), silence(tail, RATE)])


def audio_bytes(msgs: list[dict]) -> int:
    n = 0
    for m in msgs:
        for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            if "inlineData" in p:
                assert p["inlineData"]["mimeType"] == "audio/pcm;rate=24000"
                n += len(base64.b64decode(p["inlineData"]["data"]))
    return n


@pytest.mark.parametrize("path", [
    PATH.format(v="v1"), PATH.format(v="v1beta"), PATH.format(v="v1alpha"),
    "/" + PATH.format(v="v1beta"), PATH.format(v="v1alpha") + "Constrained",
    "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent",
])
def test_paths_and_setup_complete_first(gsim, path):
    with open_g(gsim, path) as ws:
        setup(ws)


@pytest.mark.parametrize("query,headers", [
    ("?key=x", {}), ("", {"x-goog-api-key": "x"}), ("?access_token=tok", {}),
    ("", {"Authorization": "Bearer tok"}), ("", {"Authorization": "Token tok"}),
])
def test_key_by_query_or_header(gsim, query, headers):
    with open_g(gsim, query=query, headers=headers) as ws:
        setup(ws)


def test_no_key_401_and_unknown_path_404(gsim):
    with pytest.raises(InvalidStatus) as e:
        open_g(gsim, query="")
    assert e.value.response.status_code == 401
    assert orjson.loads(e.value.response.body)["error"]["status"] == "UNAUTHENTICATED"
    with pytest.raises(InvalidStatus) as e:
        open_g(gsim, path="/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent")
    assert e.value.response.status_code == 404


@pytest.mark.parametrize("snake,urlsafe", [(False, False), (True, True), (False, True), (True, False)])
def test_auto_vad_turn_both_casings_both_base64(gsim, snake, urlsafe):
    with open_g(gsim) as ws:
        sid = setup(ws, snake=snake)["setupComplete"]["sessionId"]
        send_audio(ws, speech(), urlsafe=urlsafe, snake=snake)
        msgs = until_turn_complete(ws)
    kinds = [next(iter(m["serverContent"])) for m in msgs if "serverContent" in m]
    assert kinds[0] == "modelTurn" and kinds[-2:] == ["generationComplete", "turnComplete"]
    assert "outputTranscription" in kinds
    assert audio_bytes(msgs) == 0.6 * 24000 * 2
    usage = msgs[-1]["usageMetadata"]
    assert usage["responseTokensDetails"] == [{"modality": "AUDIO", "tokenCount": 15}]
    (tt,) = gsim.turns(sid)
    assert tt["trigger"] == "vad" and tt["status"] == "completed" and tt["reply_audio_ms"] == 600
    assert tt["speech_stopped_ns"] < tt["first_audio_ns"] < tt["response_done_ns"]
    assert tt["usage"] == usage and tt["injected_ttfa_ms"] == 150.0


def test_manual_activity_turn_and_barge_in(gsim):
    with open_g(gsim) as ws:
        sid = setup(ws, manual=True)["setupComplete"]["sessionId"]
        ws.send(b'{"realtimeInput":{"activityStart":{}}}', text=True)
        send_audio(ws, tone_speech(0.5, RATE))
        t_end = time.monotonic_ns()
        ws.send(b'{"realtimeInput":{"activityEnd":{}}}', text=True)
        msgs = until_turn_complete(ws)
        assert msgs[-2] == {"serverContent": {"generationComplete": True}}
        # a second turn, interrupted by the user's next activityStart as soon as audio flows
        ws.send(b'{"realtime_input":{"activity_start":{}}}', text=True)
        ws.send(b'{"realtime_input":{"activity_end":{}}}', text=True)
        msg, _ = recv(ws)
        assert "modelTurn" in msg["serverContent"]
        ws.send(b'{"realtimeInput":{"activityStart":{}}}', text=True)
        msgs = until_turn_complete(ws)
        assert {"serverContent": {"interrupted": True}} in msgs
        assert {"serverContent": {"generationComplete": True}} not in msgs
    tts = sorted(gsim.turns(sid), key=lambda t: t["turn_index"])
    assert tts[0]["trigger"] == "activityEnd" and tts[0]["commit_ns"] >= t_end
    assert tts[1]["status"] == "cancelled" and tts[1]["cancel_ns"] is not None


def test_auto_vad_barge_in_interrupts(gsim):
    gsim.set_profile(model="sim-fast", reply_s=3.0, speed=1.0)
    try:
        with open_g(gsim) as ws:
            setup(ws)
            send_audio(ws, speech())
            msg, _ = recv(ws)
            assert "modelTurn" in msg["serverContent"]
            send_audio(ws, tone_speech(0.3, RATE))
            msgs = until_turn_complete(ws)
            assert {"serverContent": {"interrupted": True}} in msgs
    finally:
        gsim.set_profile(model="sim-fast", reply_s=0.6, speed=4.0)


@pytest.mark.parametrize("code,close,needle", [
    ("invalid_argument", 1007, "invalid argument"),
    ("not_found", 1008, "not found"),
    ("rate_limit_exceeded", 1011, "quota"),
    ("server_error", 1011, "Internal error"),
])
def test_faults_close_with_code_and_reason(gsim, code, close, needle):
    gsim.fault(kind="error_event", code=code, count=1)
    with open_g(gsim) as ws:
        setup(ws)
        with pytest.raises(ConnectionClosed) as e:  # the close may come while we still send
            send_audio(ws, speech())
            until_turn_complete(ws)
    assert e.value.rcvd.code == close and needle in e.value.rcvd.reason


def test_close_1011_mid_reply(gsim):
    gsim.fault(kind="close_1011", after_deltas=2, count=1)
    with open_g(gsim) as ws:
        setup(ws)
        send_audio(ws, speech())
        with pytest.raises(ConnectionClosed) as e:
            until_turn_complete(ws)
    assert e.value.rcvd.code == 1011


@pytest.mark.parametrize("first", [b"not json", b'{"realtimeInput":{"audioStreamEnd":true}}',
                                   b'{"setup":{}}'])
def test_bad_first_message_closes_1007(gsim, first):
    with open_g(gsim) as ws:
        ws.send(first, text=True)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=5)
    assert e.value.rcvd.code == 1007


@pytest.mark.slow
def test_go_away_before_lifetime_then_close_1008():
    from tests.sim_server import SimProcess

    with SimProcess(["--go-away-lead-s", "0.4"]) as sim:
        sim.fault(kind="session_expiry", after_s=1.0)
        with open_g(sim) as ws:
            setup(ws)
            t0 = time.monotonic()
            msg, raw = recv(ws, 5)
            assert msg == {"goAway": {"timeLeft": "0.4s"}} and isinstance(raw, bytes)
            with pytest.raises(ConnectionClosed) as e:
                recv(ws, 5)
            assert 0.3 < time.monotonic() - t0 < 1.5
        assert e.value.rcvd.code == 1008 and "aborted" in e.value.rcvd.reason
        (s,) = sim.truth()["sessions"]
        assert s["outcome"] == "go_away" and s["close_code"] == 1008
