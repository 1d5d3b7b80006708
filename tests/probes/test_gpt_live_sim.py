"""The GPT-Live dialect against the simulator's endpoint, frame by frame: every frame the
simulator writes parses into known events, and the dialect's own messages (session.start,
appends, tool results in both delegation modes, close) drive the session to spoken replies."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
import pytest

from probes.dialects import base
from probes.dialects.gpt_live import GptLive
from tests.sim_server import SimProcess
from tests.simulator.test_live_protocol import open_client, speech_turn
from tests.simulator.wire import silence

TOOL = {"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}


@pytest.fixture(scope="module")
def live_sim():
    with SimProcess(["--api-key", "good"]) as s:
        yield s


async def _session(sim, d: GptLive):
    c = await open_client(sim, start=False)
    for m in d.configure():
        await c.ws.send(m, text=True)
    await c.wait("session.started")
    pcm = np.concatenate([speech_turn(0.5, 0.2, 0.6), silence(3.0)])

    async def speak():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k, i in enumerate(range(0, len(pcm), 2400)):
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.1 - loop.time()))
            await c.ws.send(d.append_audio(base64.b64encode(pcm[i:i + 2400].tobytes()).decode()),
                            text=True)
    speaker = asyncio.ensure_future(speak())
    events: list = []
    answered = 0
    while answered < 1 or not any(isinstance(e, base.UsageUpdated) for e in events):
        await c.wait("session.usage.updated" if answered else "session.delegation.created",
                     timeout=15)
        await asyncio.sleep(0.3)  # let the nested backend stream arrive
        events = [e for raw in list(c.raw) for e in d.parse(raw)]
        calls = [e for e in events if isinstance(e, base.ToolCall)]
        if calls and not answered:
            for m in d.tool_result(calls[0].call_id, '{"temp_c":18}', calls[0].name):
                await c.ws.send(m, text=True)
            answered = 1
    await speaker
    for m in d.close():
        await c.ws.send(m, text=True)
    await c.wait("session.closed")
    await c.wait_closed()
    return [e for raw in c.raw for e in d.parse(raw)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["client", "responses"])
def test_dialect_speaks_to_the_simulator_in_both_delegation_modes(live_sim, mode):
    d = GptLive(url=live_sim.ws_url + "/v1/live/sessions", model="gpt-live-1",
                instructions='[call@0:get_weather {"location":"Paris"}]',
                tools=[TOOL] if mode == "responses" else None)
    d.connect_request("good")  # (the test client sends the key itself)
    events = asyncio.run(asyncio.wait_for(_session(live_sim, d), 40))
    kinds = {type(e) for e in events}
    assert base.Unknown not in kinds and d.unknown_events == 0
    assert {base.SessionReady, base.AudioDelta, base.TranscriptDelta, base.InputTranscript,
            base.DelegationCreated, base.ToolCall, base.UsageUpdated, base.SessionClosed} <= kinds
    [call] = [e for e in events if isinstance(e, base.ToolCall)]
    if mode == "client":
        assert call.name == "delegation" and call.call_id == call.delegation_id
        assert any(isinstance(e, base.Ack) for e in events)
    else:
        assert (call.name, orjson.loads(call.arguments)) == ("get_weather", {"location": "Paris"})
        done = [e for e in events if isinstance(e, base.BackendEvent)
                and e.type == "response.completed"]
        assert len(done) == 2 and done[0].usage.out_text > 0
    # the answer was spoken: audible audio after the tool call
    i = events.index(call)
    loud = [e for e in events[i:] if isinstance(e, base.AudioDelta)
            and np.abs(np.frombuffer(base64.b64decode(e.audio), "<i2")).max() > 3000]
    assert loud
    [closed] = [e for e in events if isinstance(e, base.SessionClosed)]
    assert closed.reason == "close_requested" and closed.seconds >= 2
