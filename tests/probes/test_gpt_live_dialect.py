"""GPT-Live dialect with plain data: every client and server event of the reference
(../shared/protocols/gpt-live.md), checked against the official openai package's schema where it
has one, plus unknown and malformed frames."""

from __future__ import annotations

import base64

import orjson
import pytest

from probes.dialects import base, dialect_for
from probes.dialects.base import DialectError
from probes.dialects.gpt_live import CLIENT_DELEGATION_NAME, GptLive
from probes.spec import Target
from tests.tools import require_module

openai = require_module("openai")
from openai.types.live import ClientEvent, ServerEvent  # noqa: E402
from pydantic import BaseModel, TypeAdapter  # noqa: E402

CLIENT = TypeAdapter(ClientEvent)
SERVER = TypeAdapter(ServerEvent)
TOOL = {"type": "function", "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                       "required": ["location"]}}


def no_extras(m, where="event") -> None:
    """Every key of the validated event is a field of the package's model (none were extra)."""
    if isinstance(m, BaseModel):
        assert not m.model_extra, f"{where}: fields outside the package's schema {m.model_extra}"
        for k in type(m).model_fields:
            no_extras(getattr(m, k), f"{where}.{k}")
    elif isinstance(m, list):
        for i, v in enumerate(m):
            no_extras(v, f"{where}[{i}]")


def client_ok(msg: bytes) -> dict:
    """A client message the package accepts, with no field outside its schema."""
    obj = orjson.loads(msg)
    no_extras(CLIENT.validate_python(obj))
    return obj


def live(**kw) -> GptLive:
    kw.setdefault("url", "wss://api.openai.com")
    kw.setdefault("model", "gpt-live-1")
    return GptLive(**kw)


def one(d: GptLive, obj: dict):
    SERVER.validate_python(obj)  # the fixture itself is a valid server event per the package
    (ev,) = d.parse(orjson.dumps(obj))
    return ev


# ---- connection -----------------------------------------------------------------------------

@pytest.mark.parametrize("url, want", [
    ("wss://api.openai.com", "wss://api.openai.com/v1/live/sessions"),
    ("wss://api.openai.com/v1", "wss://api.openai.com/v1/live/sessions"),
    ("ws://127.0.0.1:9/v1/live/sessions", "ws://127.0.0.1:9/v1/live/sessions"),
    ("wss://res.openai.azure.com", "wss://res.openai.azure.com/openai/v1/live/sessions"),
    ("wss://res.cognitiveservices.azure.com/openai/v1/live/sessions",
     "wss://res.cognitiveservices.azure.com/openai/v1/live/sessions"),
])
def test_url_has_the_live_path_and_no_model_query(url, want):
    req = live(url=url).connect_request("k")
    assert req.url == want and "model=" not in req.url


def test_auth_bearer_for_openai_api_key_for_azure_bearer_when_asked():
    assert live().connect_request("sk").headers == (("Authorization", "Bearer sk"),)
    az = live(url="wss://r.openai.azure.com")
    assert az.connect_request("k1").headers == (("api-key", "k1"),)
    assert live(url="ws://127.0.0.1:9/openai/v1/live/sessions").connect_request("k").headers == (
        ("api-key", "k"),)
    entra = live(url="wss://r.openai.azure.com", auth="bearer")
    assert entra.connect_request("tok").headers == (("Authorization", "Bearer tok"),)
    assert live().connect_request(None).headers == ()


def test_dialect_for_picks_gpt_live_from_the_provider():
    t = Target(name="t", url="wss://api.openai.com", model="gpt-live-1.1", provider="openai-live",
               voice="marin", output_format="g711_ulaw", input_format="g711_ulaw")
    d = dialect_for(t)
    assert isinstance(d, GptLive)
    assert d.setup_first and d.model_owns_turns and d.continuous_output
    assert not d.waits_for_configured and not d.tool_call_ends_response
    assert d.input_format == d.output_format == base.AudioFormat("g711_ulaw", 8000)


def test_for_target_refuses_what_the_protocol_cannot_do():
    t = Target(name="t", url="wss://x", model="gpt-live-1", provider="openai-live")
    with pytest.raises(ValueError, match="manual"):
        dialect_for(t, "manual")
    with pytest.raises(ValueError, match="turn-detection"):
        dialect_for(t, silence_ms=500)
    with pytest.raises(ValueError, match="one audio format"):
        dialect_for(Target(name="t", url="wss://x", model="m", provider="openai-live",
                           input_format="pcm16", output_format="g711_alaw"))
    with pytest.raises(ValueError, match="no tools"):
        live(delegation="client", tools=[TOOL])
    with pytest.raises(ValueError, match="unknown delegation.responses"):
        live(delegation="responses", backend={"temperature": 1})


# ---- client events --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, wire", [
    ("pcm16", {"type": "audio/pcm", "rate": 24000}),
    ("pcm16_16k", {"type": "audio/pcm", "rate": 16000}),
    ("g711_ulaw", {"type": "audio/pcmu", "rate": 8000}),
    ("g711_alaw", {"type": "audio/pcma", "rate": 8000}),
])
def test_session_start_is_strict_and_carries_the_format(fmt, wire):
    d = live(audio_format=fmt, voice="marin", instructions="Be brief.")
    [msg] = d.configure()
    obj = client_ok(msg)
    assert obj["type"] == "session.start"
    s = obj["session"]
    assert s == {"model": "gpt-live-1", "instructions": "Be brief.",
                 "audio": {"format": wire, "output": {"voice": "marin"}},
                 "delegation": {"type": "client"}}
    assert d.input_format.rate == wire["rate"]


def test_session_start_with_responses_delegation_and_tools():
    d = live(tools=[TOOL], backend_model="gpt-5.5", voice={"id": "voice_1"},
             backend={"instructions": "Use tools.", "max_output_tokens": 64},
             acknowledgement_delay_ms=200, store=False)
    obj = client_ok(d.configure()[0])
    dl = obj["session"]["delegation"]
    assert dl["type"] == "responses" and dl["acknowledgement_delay_ms"] == 200
    r = dl["responses"]
    assert r["model"] == "gpt-5.5" and r["tool_choice"] == "auto" and r["max_output_tokens"] == 64
    assert r["tools"] == [TOOL]
    assert obj["session"]["audio"]["output"] == {"voice": {"id": "voice_1"}}
    assert obj["session"]["store"] is False


def test_no_instructions_no_voice_sends_neither():
    s = client_ok(live(instructions="").configure()[0])["session"]
    assert set(s) == {"model", "audio", "delegation"} and set(s["audio"]) == {"format"}


def test_append_and_the_silent_turn_verbs():
    d = live()
    b64 = base64.b64encode(b"\x01\x02" * 10).decode()
    assert client_ok(d.append_audio(b64)) == {"type": "session.input_audio.append", "audio": b64}
    assert d.end_turn() == [] and d.start_activity() == [] and d.cancel() == []
    with pytest.raises(ValueError, match="no typed user message"):
        d.user_text("hi")


def test_close_mute_appends_update_and_response_verbs_are_valid():
    d = live(tools=[TOOL])
    msgs = [*d.close(), *d.mute(), *d.unmute(), *d.commentary("Say hi."),
            *d.thinking("working", "dlg_1"), *d.append_instructions("Be terse.", None),
            *d.update_delegation(instructions="new"), *d.response_create(),
            d.function_output("call_1", '{"t":1}')]
    got = [client_ok(m) for m in msgs]
    assert [g["type"] for g in got] == [
        "session.close", "session.input_audio.mute", "session.input_audio.unmute",
        "session.commentary.append", "session.thinking.append", "session.instructions.append",
        "session.update", "response.create", "response.item.create"]
    assert got[3]["delegation_id"] is None  # required, nullable: present as null
    assert got[4]["delegation_id"] == "dlg_1"
    assert got[6]["session"] == {"delegation": {"type": "responses",
                                                "responses": {"instructions": "new"}}}
    with pytest.raises(ValueError):
        live().update_delegation(model="x")


# ---- server events --------------------------------------------------------------------------

SESSION = {"id": "sess_abc", "status": "active", "expires_at": 1790007200, "model": "gpt-live-1",
           "audio": {"format": {"type": "audio/pcm", "rate": 24000}, "output": {"voice": "marin"}},
           "delegation": {"type": "client"}, "store": False}


def test_session_started_updated_closed():
    d = live()
    ev = one(d, {"type": "session.started", "event_id": "event_01", "client_event_id": "evt_start",
                 "session": SESSION})
    assert ev == base.SessionReady("sess_abc") and d.expires_at == 1790007200
    assert one(d, {"type": "session.updated", "event_id": "e2", "session": SESSION}) == (
        base.SessionConfigured())
    for reason in ("close_requested", "expired", "content", "remote_hangup", "connection_lost"):
        ev = one(d, {"type": "session.closed", "event_id": "e3", "reason": reason,
                     "session": SESSION, "usage": {"seconds": 9.8}})
        assert ev == base.SessionClosed(reason, 9.8)
    assert d.usage_seconds == 9.8 and d.close_reason == "connection_lost"


def test_output_audio_delta_fast_and_slow_paths_keep_size_and_base64():
    d = live()
    raw = bytes(range(256)) * 19  # 4864 bytes: takes the fast path
    b64 = base64.b64encode(raw).decode()
    ev = one(d, {"type": "session.output_audio.delta", "event_id": "e", "delta": b64})
    assert ev == base.AudioDelta(len(raw), b64.encode())
    assert base64.b64decode(ev.audio) == raw
    small = one(d, {"type": "session.output_audio.delta", "event_id": "e", "delta": "AAA="})
    assert small == base.AudioDelta(2, b"AAA=")
    # the sideband copy carries start_ms/end_ms: still one audio delta
    side = one(d, {"type": "session.output_audio.delta", "event_id": "e", "delta": b64,
                   "start_ms": 0, "end_ms": 100})
    assert side.nbytes == len(raw)
    # an escaped slash defeats the fast path: the full parse gives the same size
    esc = orjson.dumps({"type": "session.output_audio.delta", "delta": b64}).replace(b"/", b"\\/")
    assert d.parse(esc)[0].nbytes == len(raw)


def test_transcript_deltas_keep_the_session_timeline():
    d = live()
    out = one(d, {"type": "session.output_transcript.delta", "event_id": "event_14",
                  "delta": "It's three", "start_ms": 3420, "end_ms": 3980})
    assert out == base.TranscriptDelta("It's three", 3420, 3980)
    inp = one(d, {"type": "session.input_transcript.delta", "event_id": "event_10",
                  "delta": " what's the time", "start_ms": 2140, "end_ms": 2900})
    assert inp == base.InputTranscript(" what's the time", False, 2140, 2900)


def test_usage_updated_is_cumulative_seconds():
    d = live()
    ev = one(d, {"type": "session.usage.updated", "event_id": "event_15",
                 "usage": {"seconds": 6.2}, "context_window": {"usage_ratio": 0.25}})
    assert ev == base.UsageUpdated(6.2, None, None, 0.25)
    ev = one(d, {"type": "session.usage.updated", "event_id": "e",
                 "usage": {"seconds": 61, "active_seconds": 50, "paused_seconds": 11}})
    assert ev == base.UsageUpdated(61.0, 50, 11, None) and d.usage_seconds == 61.0
    assert d.paused_seconds == 11
    with pytest.raises(DialectError):
        d.parse(b'{"type":"session.usage.updated","usage":{"seconds":"6"}}')


def test_the_paused_share_prices_gpt_live_1_1_at_its_standby_rate():
    """usage is cumulative (the openai package's SessionUsage: do not sum across events): the
    last report, session.closed's, says how many of the billed seconds were paused, and the
    engine prices those at the standby rate (probes/session.py passes the dialect's
    paused_seconds). Before, every second was priced active."""
    from probes import prices

    d = live()
    one(d, {"type": "session.usage.updated", "event_id": "e",
            "usage": {"seconds": 30, "active_seconds": 30, "paused_seconds": 0}})
    d.parse(orjson.dumps({"type": "session.closed", "event_id": "e", "reason": "client_close",
                          "usage": {"seconds": 120, "active_seconds": 80, "paused_seconds": 40}}))
    assert (d.usage_seconds, d.paused_seconds) == (120.0, 40)
    got = prices.session_cost_usd("gpt-live-1.1", d.usage_seconds, None,
                                  paused_seconds=d.paused_seconds)
    p = prices.second_price_for("gpt-live-1.1")
    assert got == pytest.approx((80 * p.active_per_min + 40 * p.standby_per_min) / 60)
    assert got < prices.session_cost_usd("gpt-live-1.1", 120.0, None)


def test_client_delegation_is_a_tool_call_answered_by_commentary():
    d = live()
    created, call = d.parse(orjson.dumps(
        {"type": "session.delegation.created", "event_id": "e", "offset_ms": 5400,
         "delegation": {"id": "dlg_2", "type": "delegation", "target": "client"}}))
    assert created == base.DelegationCreated("dlg_2", "client", "", 5400)
    assert call == base.ToolCall("dlg_2", CLIENT_DELEGATION_NAME, "{}", "dlg_2")
    [msg] = d.tool_result(call.call_id, "Order 123 shipped.", call.name)
    assert client_ok(msg) == {"type": "session.commentary.append", "delegation_id": "dlg_2",
                              "content": "Order 123 shipped."}
    ack = one(d, {"type": "session.commentary.appended", "event_id": "e", "start_ms": 7000,
                  "end_ms": 7000})
    assert ack == base.Ack("session.commentary.appended", 7000, 7000)


def _fc(did: str, call_id: str, name: str = "get_weather", args: str = '{"location":"Paris"}'):
    return {"type": "response.event", "event_id": "e", "delegation_id": did,
            "event": {"type": "response.output_item.done", "output_index": 0,
                      "sequence_number": 3,
                      "item": {"type": "function_call", "id": "fc_" + call_id, "call_id": call_id,
                               "name": name, "arguments": args, "status": "completed"}}}


def test_responses_delegation_function_call_output_then_one_response_create():
    d = live(tools=[TOOL])
    ev = one(d, {"type": "session.delegation.created", "event_id": "event_20", "offset_ms": 5400,
                 "delegation": {"id": "dlg_1", "type": "delegation", "target": "responses",
                                "response_id": "resp_1"}})
    assert ev == base.DelegationCreated("dlg_1", "responses", "resp_1", 5400)
    created = one(d, {"type": "response.event", "event_id": "event_21", "delegation_id": "dlg_1",
                      "event": {"type": "response.created", "response": {"id": "resp_1"}}})
    assert created == base.BackendEvent("dlg_1", "response.created", "resp_1", "created")
    call = one(d, _fc("dlg_1", "call_1"))
    assert call == base.ToolCall("call_1", "get_weather", '{"location":"Paris"}', "dlg_1")
    done = one(d, {"type": "response.event", "event_id": "event_26", "delegation_id": "dlg_1",
                   "event": {"type": "response.completed", "response": {
                       "id": "resp_1", "status": "completed",
                       "usage": {"input_tokens": 30, "output_tokens": 7,
                                 "input_tokens_details": {"cached_tokens": 10},
                                 "output_tokens_details": {"reasoning_tokens": 0}}}}})
    assert done.type == "response.completed" and done.status == "completed"
    assert (done.usage.in_text, done.usage.out_text, done.usage.in_cached) == (30, 7, 10)
    msgs = [client_ok(m) for m in d.tool_result("call_1", '{"temp_c":18}', "get_weather")]
    assert msgs == [{"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": '{"temp_c":18}'}},
        {"type": "response.create"}]


def test_parallel_calls_get_one_response_create_after_the_last_output():
    d = live(tools=[TOOL])
    d.parse(orjson.dumps(_fc("dlg_1", "c1")))
    d.parse(orjson.dumps(_fc("dlg_1", "c2")))
    first = d.tool_result("c1", "1")
    assert [orjson.loads(m)["type"] for m in first] == ["response.item.create"]
    second = d.tool_result("c2", "2")
    assert [orjson.loads(m)["type"] for m in second] == ["response.item.create", "response.create"]
    both = d.tool_results([("a", "1"), ("b", "2")])
    assert [orjson.loads(m)["type"] for m in both] == ["response.item.create"] * 2 + [
        "response.create"]


def test_other_nested_events_are_backend_events_and_a_failed_backend_says_why():
    d = live(tools=[TOOL])
    ev = one(d, {"type": "response.event", "event_id": "e", "delegation_id": None,
                 "event": {"type": "response.output_text.delta", "delta": "x"}})
    assert ev == base.BackendEvent("", "response.output_text.delta")
    ev = one(d, {"type": "response.event", "event_id": "e", "delegation_id": "d",
                 "event": {"type": "response.failed", "response": {
                     "id": "r", "status": "failed", "error": {"code": "server_error"}}}})
    assert (ev.status, ev.error_code) == ("failed", "server_error")
    # a nested item that is not a function call is no tool call
    ev = one(d, {"type": "response.event", "event_id": "e", "delegation_id": "d",
                 "event": {"type": "response.output_item.done",
                           "item": {"type": "message", "id": "m"}}})
    assert ev == base.BackendEvent("d", "response.output_item.done")


def test_error_info_and_acks():
    d = live()
    ev = one(d, {"type": "error", "event_id": "e", "error": {
        "type": "invalid_request_error", "code": "unknown_parameter",
        "message": "Unknown parameter: 'session.temperature'.", "param": "session.temperature",
        "client_event_id": "evt_start"}})
    assert ev == base.ServerError("unknown_parameter", "Unknown parameter: 'session.temperature'.",
                                  "invalid_request_error")
    assert one(d, {"type": "info", "event_id": "e", "code": "data_channel_permissions",
                   "message": "m"}) == base.Info("data_channel_permissions", "m")
    for t in ("session.input_audio.muted", "session.input_audio.unmuted"):
        assert one(d, {"type": t, "event_id": "e"}) == base.Ack(t)
    for t in ("session.instructions.appended", "session.thinking.appended"):
        assert one(d, {"type": t, "event_id": "e", "start_ms": 1, "end_ms": 2}) == base.Ack(t, 1, 2)


def test_sideband_sip_and_fixture_events_are_known_and_ignored():
    d = live()
    for obj in ({"type": "session.input_audio.append", "audio": "AAAA"},
                {"type": "transport.ringing", "event_id": "e", "session_id": "s"},
                {"type": "session.output_audio.fixture.played", "event_id": "e"}):
        assert one(d, obj) == base.Ignored(obj["type"])
    assert d.unknown_events == 0


def test_unknown_events_are_counted_not_fatal():
    d = live()
    assert d.parse(b'{"type":"session.something_new","x":1}') == (
        base.Unknown("session.something_new"),)
    assert d.parse(b'{"type":"turn.started"}') == (base.Unknown("turn.started"),)  # alpha shape
    assert d.unknown_events == 2


@pytest.mark.parametrize("frame", [
    b"not json", b"[1]", b'{"no":"type"}', b'{"type":1}',
    b'{"type":"session.output_audio.delta","delta":5}',
    b'{"type":"session.output_audio.delta"}',
    b'{"type":"session.started","session":[]}',
    b'{"type":"session.delegation.created","delegation":{"id":7}}',
    b'{"type":"response.event","event":"x"}',
    b'{"type":"response.event","event":{"type":"response.output_item.done","item":1}}',
    b'{"type":"error","error":"boom"}',
])
def test_malformed_frames_raise_dialect_error(frame):
    with pytest.raises(DialectError):
        live().parse(frame)


def test_delegation_memory_is_bounded():
    d = live(tools=[TOOL])
    for i in range(600):
        d.parse(orjson.dumps(_fc(f"dlg_{i}", f"c{i}")))
    assert len(d.delegations) <= 256 and len(d._calls) <= 256 and len(d._open_calls) <= 256
