"""The simulator's GPT-Live endpoint on the wire, with a plain websockets client (not the probe
engine): the start handshake, strict config, continuous paced output, onset and quiet timing
against the ground truth, both delegation modes, barge-in, expiry, and the faults that apply."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from simulator import audio as sim_audio
from tests.sim_server import SimProcess
from tests.simulator.wire import silence, stamping_connection_class, tone_speech
from tests.timing import bounded
from tests.tools import require_module

openai = require_module("openai")
from openai.types.live import ServerEvent  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

SERVER = TypeAdapter(ServerEvent)
MS = 1_000_000
GATE_DBFS = -45.0  # audible: well above the -60 dBFS quiet floor, well below the speech
START = {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 24000}}}
TOOL = {"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}


@pytest.fixture(scope="module")
def live_sim():
    with SimProcess(["--api-key", "good", "--api-key", "other"]) as s:
        yield s


def level(ev: dict, codec: str = "pcm16") -> float:
    raw = base64.b64decode(ev["delta"])
    x = sim_audio.decode_to_int16(raw, codec).astype(np.float64)
    rms = np.sqrt(np.mean(x * x)) / 32768 if x.size else 0.0
    return 20 * np.log10(max(rms, 1e-9))


class Client:
    """One connection: every received event stamped in data_received, audio paced out."""

    def __init__(self, ws):
        self.ws = ws
        self.events: list[tuple[dict, int]] = []
        self.raw: list[bytes] = []
        self.closed: ConnectionClosed | None = None
        self.new = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        try:
            while True:
                raw = await self.ws.recv(decode=False)
                self.raw.append(raw)
                try:
                    ev = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    ev = {"type": "<malformed>", "raw": raw[:40]}
                self.events.append((ev, self.ws.stamps.popleft()))
                self.new.set()
        except ConnectionClosed as e:
            self.closed = e
            self.new.set()

    async def send(self, obj: dict) -> int:
        t = time.perf_counter_ns()
        await self.ws.send(orjson.dumps(obj), text=True)
        return t

    async def wait(self, typ: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e, _ in self.events if e["type"] == typ]
            if len(got) >= count:
                return got
            if self.closed is not None or time.monotonic() > deadline:
                raise TimeoutError(f"{typ} x{count}: {[e['type'] for e, _ in self.events][-6:]}"
                                   f" closed={self.closed!r}")
            self.new.clear()
            try:
                await asyncio.wait_for(self.new.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 10.0) -> ConnectionClosed:
        await asyncio.wait_for(self.task, timeout)
        return self.closed

    async def stream(self, pcm: np.ndarray, rate: int = 24000, chunk_ms: int = 100,
                     encode=None) -> list[int]:
        """Real-time paced appends; chunk k is sent when its last sample exists."""
        n = rate * chunk_ms // 1000
        t0 = time.perf_counter_ns()
        sent = []
        for k in range(0, len(pcm), n):
            piece = pcm[k:k + n]
            due = t0 + (k + len(piece)) * 1_000_000_000 // rate
            await asyncio.sleep(max(0, due - time.perf_counter_ns()) / 1e9)
            raw = encode(piece) if encode else piece.astype("<i2").tobytes()
            sent.append(await self.send({"type": "session.input_audio.append",
                                         "audio": base64.b64encode(raw).decode()}))
        return sent

    def audio(self) -> list[tuple[dict, int]]:
        return [(e, t) for e, t in self.events if e["type"] == "session.output_audio.delta"]


async def open_client(sim, path="/v1/live/sessions", headers=None, session=None,
                      start=True) -> Client:
    ws = await connect(sim.ws_url + path, additional_headers=headers or {
        "Authorization": "Bearer good"}, compression=None, open_timeout=5,
        create_connection=stamping_connection_class(), max_size=None)
    c = Client(ws)
    if start:
        await c.send({"type": "session.start", "event_id": "evt_start",
                      "session": session or START})
    return c


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def speech_turn(speech_s=0.6, lead_s=0.3, tail_s=1.2, rate=24000):
    return np.concatenate([silence(lead_s, rate), tone_speech(speech_s, rate),
                           silence(tail_s, rate)])


# ---- handshake and config ---------------------------------------------------------------------

@pytest.mark.parametrize("path, headers", [
    ("/v1/live/sessions", {"Authorization": "Bearer good"}),
    ("/openai/v1/live/sessions", {"api-key": "other"}),
    ("/openai/v1/live/sessions", {"Authorization": "Bearer good"}),
])
def test_start_handshake_and_continuous_quiet_output(live_sim, path, headers):
    async def go():
        c = await open_client(live_sim, path, headers)
        [started] = await c.wait("session.started")
        await c.wait("session.output_audio.delta", 6)
        await c.send({"type": "session.close"})
        await c.wait("session.closed")
        return c, started, await c.wait_closed()

    c, started, closed = run(go())
    for ev, _ in c.events:
        SERVER.validate_python(ev)  # every frame is a valid ServerEvent of the package
    assert started["client_event_id"] == "evt_start"
    s = started["session"]
    assert s["status"] == "active" and s["model"] == "gpt-live-1"
    assert s["expires_at"] > time.time() and s["audio"]["format"] == START["audio"]["format"]
    frames = c.audio()
    assert all(len(base64.b64decode(e["delta"])) == 4800 for e, _ in frames[:-1])  # 100 ms
    assert all(-75 < level(e) < -50 for e, _ in frames)  # the quiet floor, not silence
    gaps = np.diff([t for _, t in frames[:6]]) / MS
    assert np.all(np.abs(gaps - 100) < 15), gaps  # real time, not a burst
    [closed_ev] = [e for e, _ in c.events if e["type"] == "session.closed"]
    assert closed_ev["reason"] == "close_requested" and closed.rcvd.code == 1000
    assert closed_ev["usage"]["seconds"] >= 0


@pytest.mark.parametrize("fmt, codec, nbytes", [
    ({"type": "audio/pcm", "rate": 16000}, "pcm16", 3200),
    ({"type": "audio/pcmu", "rate": 8000}, "pcmu", 800),
    ({"type": "audio/pcma", "rate": 8000}, "pcma", 800),
])
@pytest.mark.slow
def test_other_formats_both_ways(live_sim, fmt, codec, nbytes):
    rate = fmt["rate"]

    def enc(piece):
        return piece.astype("<i2").tobytes() if codec == "pcm16" else sim_audio.encode(
            piece.astype(np.float32) / 32768, codec)

    async def go():
        c = await open_client(live_sim, session={"model": "gpt-live-1", "audio": {"format": fmt}})
        await c.wait("session.started")
        await c.stream(speech_turn(0.6, 0.2, 1.5, rate), rate, encode=enc)
        await c.wait("session.usage.updated")
        await c.ws.close()
        return c

    c = run(go())
    frames = c.audio()
    assert {len(base64.b64decode(e["delta"])) for e, _ in frames[1:-1]} >= {nbytes}
    assert max(level(e, codec) for e, _ in frames) > -30  # the reply was heard in this format
    assert [e["type"] for e, _ in c.events].count("session.input_transcript.delta") == 1


@pytest.mark.parametrize("session, param", [
    ({**START, "temperature": 0.8}, "session.temperature"),
    ({**START, "turn_detection": {"type": "server_vad"}}, "session.turn_detection"),
    ({"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 24000,
                                                  "channels": 1}}}, "session.audio.format.channels"),
    ({**START, "delegation": {"type": "responses", "responses": {"model": "gpt-5.5",
                                                                 "temperature": 1}}},
     "session.delegation.responses.temperature"),
])
def test_strict_config_refuses_an_unknown_field(live_sim, session, param):
    async def go():
        c = await open_client(live_sim, session=session)
        return c, await c.wait_closed()

    c, closed = run(go())
    [(err, _)] = c.events
    assert err["type"] == "error" and err["error"]["code"] == "unknown_parameter"
    assert err["error"]["param"] == param and err["error"]["client_event_id"] == "evt_start"
    assert closed.rcvd.code == 1008
    SERVER.validate_python(err)


def test_first_event_must_be_session_start_and_bad_formats_are_refused(live_sim):
    async def go(first):
        c = await open_client(live_sim, start=False)
        await c.send(first)
        await c.wait_closed()
        return [e for e, _ in c.events]

    [err] = run(go({"type": "session.input_audio.append", "audio": "AAAA"}))
    assert err["error"]["code"] == "session_not_started"
    [err] = run(go({"type": "session.start", "session": {
        "model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 8000}}}}))
    assert err["error"]["param"] == "session.audio.format"
    [err] = run(go({"type": "session.start", "session": {"instructions": "x"}}))
    assert err["error"]["param"] == "session.model"


@pytest.mark.parametrize("headers, code", [({}, "missing_api_key"),
                                           ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
                                           ({"api-key": "wrong"}, "invalid_api_key")])
def test_admission_errors_come_after_the_upgrade(live_sim, headers, code):
    async def go():
        c = await open_client(live_sim, headers=headers or {"X-Nothing": "1"}, start=False)
        return c, await c.wait_closed()

    c, closed = run(go())  # the upgrade succeeded: connect() did not raise
    [(err, _)] = c.events
    assert err["type"] == "error" and err["error"]["code"] == code
    assert "session.started" not in [e["type"] for e, _ in c.events]


# ---- one turn: timing against the truth ---------------------------------------------------------

async def _turn(sim, model, session=None, speech=None, tail_s=1.4):
    c = await open_client(sim, session=session or {**START, "model": model})
    [started] = await c.wait("session.started")
    sent = await c.stream(speech if speech is not None else speech_turn(0.6, 0.3, tail_s))
    await c.wait("session.usage.updated")
    await c.send({"type": "session.close"})
    await c.wait("session.closed")
    await c.wait_closed()
    return c, started["session"]["id"], sent


def test_onset_quiet_and_speech_end_match_the_truth_within_2ms(live_sim):
    live_sim.set_profile(model="live-timing", ttfa_ms=350, reply_s=0.8, delta_ms=100)

    def measure():
        c, sid, sent = run(_turn(live_sim, "live-timing"))
        [tr] = live_sim.turns(sid)
        frames = c.audio()
        loud = [i for i, (e, _) in enumerate(frames) if level(e) > GATE_DBFS]
        first, last = loud[0], loud[-1]
        onset_arrival, quiet_arrival = frames[first][1], frames[last + 1][1]
        # speech: chunks 3..8 (0.3-0.9 s): the 9th append (index 8) holds the last speech
        return tr, c, sid, {"first_audio": (onset_arrival - tr["first_audio_ns"]) / MS,
                       "output_quiet": (quiet_arrival - tr["response_done_ns"]) / MS,
                       "speech_end": (tr["speech_end_ns"] - sent[8]) / MS,
                       # TTFA as injected, from the end of speech heard (the VAD decided 200 ms
                       # after it): the simulator's own write, late only if it waited for a CPU
                       "ttfa_off": abs((tr["first_audio_ns"] - tr["speech_end_ns"]) / MS - 350)}

    tr, c, sid, rep = bounded(measure,
                              lambda m: [k for k, v in m[3].items() if not 0 <= v <= 2.0],
                              pids=[live_sim.pid], budget_ms=2.0,
                              what="GPT-Live truth vs arrival")
    assert tr["status"] == "completed" and tr["trigger"] == "vad"
    assert tr["injected_ttfa_ms"] == 350.0
    assert rep["ttfa_off"] < 2
    assert tr["reply_audio_ms"] == 800 and tr["deltas"] == 8
    # transcripts on the session timeline: the input's 600 ms of speech, the output's deltas
    [inp] = [e for e, _ in c.events if e["type"] == "session.input_transcript.delta"]
    assert abs((inp["end_ms"] - inp["start_ms"]) - 600) <= 10
    outs = [e for e, _ in c.events if e["type"] == "session.output_transcript.delta"]
    assert outs and outs[0]["start_ms"] <= outs[-1]["start_ms"] < outs[-1]["end_ms"]
    ready = live_sim.truth(sid)["sessions"][0]["ready_ns"]
    assert abs(outs[0]["start_ms"] - (tr["first_audio_ns"] - ready) / MS) < 3
    print(f"\nGPT-Live truth vs arrival (ms): {rep}")


@pytest.mark.slow  # ~5 s of real-time GPT-Live sessions
def test_usage_seconds_are_cumulative(live_sim):
    async def go():
        c = await open_client(live_sim)
        await c.wait("session.started")
        await c.stream(np.concatenate([speech_turn(0.4, 0.2, 0.9)] * 2))
        await c.wait("session.usage.updated", 2)
        await asyncio.sleep(0.6)
        t = time.perf_counter_ns()
        await c.send({"type": "session.close"})
        await c.wait("session.closed")
        return c, t

    c, _t = run(go())
    secs = [e["usage"]["seconds"] for e, _ in c.events
            if e["type"] in ("session.usage.updated", "session.closed")]
    assert len(secs) == 3 and secs == sorted(secs) and secs[-1] >= 2
    t_started = next(t for e, t in c.events if e["type"] == "session.started")
    t_closed = next(t for e, t in c.events if e["type"] == "session.closed")
    assert abs(secs[-1] - (t_closed - t_started) / 1e9) <= 0.5  # whole seconds, rounded


# ---- barge-in -----------------------------------------------------------------------------------

@pytest.mark.slow  # ~7 s of real-time GPT-Live sessions
def test_barge_in_turns_the_output_quiet_after_the_cancel_delay(live_sim):
    live_sim.set_profile(model="live-barge", ttfa_ms=300, reply_s=4.0, cancel_delay_ms=150)

    def measure():
        async def go():
            c = await open_client(live_sim, session={**START, "model": "live-barge"})
            await c.wait("session.started")
            # speech, then talk over the reply ~0.7 s after its onset, then silence
            pcm = np.concatenate([speech_turn(0.6, 0.2, 1.2), tone_speech(0.5), silence(1.5)])
            await c.stream(pcm)
            await c.wait("session.usage.updated", 2, timeout=15)
            await c.ws.close()
            return c
        c = run(go())
        sid = next(e for e, _ in c.events if e["type"] == "session.started")["session"]["id"]
        turns = sorted(live_sim.turns(sid), key=lambda r: r["turn_index"])
        return c, turns

    def misses(m):
        c, turns = m
        tr = turns[0]
        if tr["status"] != "cancelled":
            return [f"status {tr['status']}"]
        frames = c.audio()
        quiet = next(t for e, t in frames if t > tr["barge_in_speech_ns"] and level(e) < GATE_DBFS)
        return [] if 0 <= (quiet - tr["cancel_ns"]) / MS <= 2.0 else [(quiet - tr["cancel_ns"]) / MS]

    c, turns = bounded(measure, misses, pids=[live_sim.pid], budget_ms=2.0,
                       what="GPT-Live barge-in quiet vs truth")
    first, second = turns[0], turns[1]
    yielded = (first["cancel_ns"] - first["barge_in_speech_ns"]) / MS
    assert 150 <= yielded < 150 + 100 + 2  # the cancel delay, then the next frame boundary
    assert first["reply_audio_ms"] < 4000
    assert second["status"] == "completed" and second["speech_start_ns"] == first[
        "barge_in_speech_ns"]


# ---- delegation ---------------------------------------------------------------------------------

@pytest.mark.slow  # ~4.3 s of real-time GPT-Live sessions
def test_client_delegation_then_commentary_is_spoken(live_sim):
    async def go():
        c = await open_client(live_sim, session={
            **START, "instructions": 'Be brief. [call@0:lookup_order {"order":123}]'})
        await c.wait("session.started")
        stream = asyncio.ensure_future(c.stream(np.concatenate([speech_turn(0.5, 0.2, 0.6),
                                                                silence(3.0)])))
        [dlg] = await c.wait("session.delegation.created")
        t_sent = await c.send({"type": "session.commentary.append", "event_id": "evt_c",
                               "delegation_id": dlg["delegation"]["id"],
                               "content": "Order 123 shipped."})
        [ack] = await c.wait("session.commentary.appended")
        await c.wait("session.usage.updated", 1)
        await stream
        await c.ws.close()
        return c, dlg, ack, t_sent

    c, dlg, ack, t_sent = run(go())
    for ev, _ in c.events:
        SERVER.validate_python(ev)
    assert dlg["delegation"]["target"] == "client" and "response_id" not in dlg["delegation"]
    assert ack["client_event_id"] == "evt_c" and ack["start_ms"] == ack["end_ms"]
    sid = next(e for e, _ in c.events if e["type"] == "session.started")["session"]["id"]
    turns = sorted(live_sim.turns(sid), key=lambda r: r["turn_index"])
    assert turns[0]["status"] == "tool_call" and turns[0]["tool_call"]["mode"] == "client"
    t_dlg = next(t for e, t in c.events if e["type"] == "session.delegation.created")
    assert 0 <= (t_dlg - turns[0]["tool_args_done_ns"]) / MS < 5
    spoken = turns[1]
    assert spoken["trigger"] == "commentary" and spoken["status"] == "completed"
    assert 0 <= (spoken["tool_output_ns"] - t_sent) / MS < 20
    assert spoken["first_audio_ns"] > spoken["tool_output_ns"]


def test_client_delegation_refuses_a_bad_delegation_id_and_responses_verbs(live_sim):
    async def go():
        c = await open_client(live_sim)
        await c.wait("session.started")
        await c.send({"type": "session.commentary.append", "delegation_id": "dlg_nope",
                      "content": "x"})
        await c.send({"type": "session.thinking.append", "content": "x"})  # no delegation_id
        await c.send({"type": "response.create"})
        await c.send({"type": "session.instructions.append", "delegation_id": None,
                       "content": "Be terse."})
        await c.wait("session.instructions.appended")
        await c.ws.close()
        return [e for e, _ in c.events if e["type"] == "error"]

    errs = run(go())
    assert [e["error"]["code"] for e in errs] == ["invalid_value", "missing_required_parameter",
                                                  "invalid_request_error"]


@pytest.mark.slow  # ~4.3 s of real-time GPT-Live sessions
def test_responses_delegation_function_call_output_and_one_response_create(live_sim):
    session = {**START, "instructions": '[call@0:get_weather {"location":"Paris"}]',
               "delegation": {"type": "responses", "responses": {"model": "gpt-5.5",
                                                                 "tools": [TOOL]}}}

    async def go():
        c = await open_client(live_sim, session=session)
        await c.wait("session.started")
        stream = asyncio.ensure_future(c.stream(np.concatenate([speech_turn(0.5, 0.2, 0.6),
                                                                silence(3.0)])))
        await c.wait("session.delegation.created")
        while True:
            nested = [e["event"] for e, _ in c.events if e["type"] == "response.event"]
            if any(n["type"] == "response.completed" for n in nested):
                break
            await c.wait("response.event", len(nested) + 1)
        call = next(n["item"] for n in nested if n["type"] == "response.output_item.done")
        await c.send({"type": "response.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"], "output": '{"c":18}'}})
        t_create = await c.send({"type": "response.create"})
        await c.wait("session.usage.updated", 1)
        await stream
        await c.ws.close()
        return c, nested, call, t_create

    c, nested, call, t_create = run(go())
    for ev, _ in c.events:
        SERVER.validate_python(ev)
    [dlg] = [e for e, _ in c.events if e["type"] == "session.delegation.created"]
    assert dlg["delegation"]["target"] == "responses" and dlg["delegation"]["response_id"]
    assert [n["type"] for n in nested] == ["response.created", "response.output_item.added",
                                           "response.function_call_arguments.done",
                                           "response.output_item.done", "response.completed"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"location": "Paris"}
    after = [e["event"]["type"] for e, _ in c.events if e["type"] == "response.event"][5:]
    assert after[0] == "response.created" and after[-1] == "response.completed"
    sid = next(e for e, _ in c.events if e["type"] == "session.started")["session"]["id"]
    turns = sorted(live_sim.turns(sid), key=lambda r: r["turn_index"])
    assert turns[0]["status"] == "tool_call" and turns[0]["tool_call"]["name"] == "get_weather"
    spoken = turns[1]
    assert spoken["trigger"] == "response.create" and spoken["status"] == "completed"
    assert spoken["first_audio_ns"] > spoken["tool_output_ns"] > turns[0]["tool_args_done_ns"]
    assert 0 <= (spoken["tool_output_ns"] - t_create) / MS < 20 or spoken["tool_output_ns"] < (
        t_create)


# ---- close, expiry and faults -------------------------------------------------------------------

def test_expiry_closes_with_reason_expired(live_sim):
    live_sim.set_profile(model="live-expire", session_max_s=1.2)

    async def go():
        c = await open_client(live_sim, session={**START, "model": "live-expire"})
        [started] = await c.wait("session.started")
        return c, started, await c.wait_closed(5)

    c, started, closed = run(go())
    [ev] = [e for e, _ in c.events if e["type"] == "session.closed"]
    assert ev["reason"] == "expired" and closed.rcvd.code == 1000
    assert ev["usage"]["seconds"] == 1.0 and ev["session"]["status"] == "active"
    assert started["session"]["expires_at"] - time.time() < 1.5
    sess = live_sim.truth(started["session"]["id"])["sessions"][0]
    assert sess["outcome"] == "expired"
    assert c.events[-1][0]["type"] == "session.closed"  # no output after it


def _fault_turn(sim, model, **fault):
    sim.set_profile(model=model, ttfa_ms=200, reply_s=1.0)
    fid = sim.fault(models=[model], count=1, **fault)

    async def go():
        c = await open_client(sim, session={**START, "model": model})
        [started] = await c.wait("session.started")
        try:
            await c.stream(speech_turn(0.4, 0.2, 2.0 + fault.get("stall_s", 0)))
        except ConnectionClosed:
            pass
        if c.closed is None:
            await c.ws.close()
        await c.wait_closed()
        return c, started["session"]["id"]

    try:
        return run(go())
    finally:
        sim.stop_fault(fid)


def test_fault_drop_and_close_1011_end_without_session_closed(live_sim):
    c, sid = _fault_turn(live_sim, "live-drop", kind="drop", after_deltas=2)
    assert c.closed.rcvd is None  # no close frame: the TCP connection was reset
    assert "session.closed" not in [e["type"] for e, _ in c.events]
    assert live_sim.turns(sid)[0]["status"] == "dropped"
    c, sid = _fault_turn(live_sim, "live-1011", kind="close_1011", after_deltas=2)
    assert c.closed.rcvd.code == 1011
    assert live_sim.truth(sid)["sessions"][0]["outcome"] == "closed_1011"


@pytest.mark.slow
def test_fault_stall_leaves_a_gap_in_the_continuous_output(live_sim):
    c, sid = _fault_turn(live_sim, "live-stall", kind="stall", after_deltas=3, stall_s=0.6)
    gaps = np.diff([t for _, t in c.audio()]) / MS
    assert gaps.max() > 600 and np.sum(gaps > 300) == 1
    assert live_sim.turns(sid)[0]["status"] == "completed"


@pytest.mark.slow  # ~5 s of real-time GPT-Live sessions
def test_fault_malformed_and_oversized_frames(live_sim):
    c, _ = _fault_turn(live_sim, "live-bad", kind="malformed_json", after_deltas=1)
    assert "<malformed>" in [e["type"] for e, _ in c.events]
    c, _ = _fault_turn(live_sim, "live-big", kind="oversized", after_deltas=1, bytes=1 << 20)
    sizes = [len(e["delta"]) for e, _ in c.audio()]
    assert max(sizes) >= 1 << 20


@pytest.mark.parametrize("kind, status", [("error_event", "error"),
                                          ("response_failed", "failed")])
def test_fault_error_events_stop_the_reply_not_the_session(live_sim, kind, status):
    c, sid = _fault_turn(live_sim, f"live-{kind}", kind=kind)  # before the reply's first delta
    [err] = [e for e, _ in c.events if e["type"] == "error"]
    SERVER.validate_python(err)
    [tr] = live_sim.turns(sid)
    assert tr["status"] == status and tr["deltas"] == 0
    assert max(level(e) for e, _ in c.audio()) < GATE_DBFS  # nothing audible was said
    assert c.closed.rcvd.code == 1000  # closed by the client, after quiet output went on


def test_upgrade_faults_http_status_and_refuse():
    with SimProcess() as sim:
        sim.fault(kind="http_status", status=429, count=1)

        async def go():
            return await open_client(sim)
        with pytest.raises(Exception, match="429"):
            run(go())
        sim.fault(kind="refuse", count=1)
        with pytest.raises((OSError, ConnectionError, Exception)):
            run(go())
        outcomes = [s["outcome"] for s in sim.truth()["sessions"]]
        assert outcomes == ["http_429", "refused"]
