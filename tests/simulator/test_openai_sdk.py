"""The official openai SDK's realtime client completes a voice turn against the simulator."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from tests.simulator.wire import silence, tone_speech
from tests.tools import require_module

openai = require_module("openai")  # the test extra: skips locally, fails under CI when absent


async def _voice_turn(ws_url: str) -> dict:
    client = openai.AsyncOpenAI(api_key="sk-test", websocket_base_url=ws_url + "/v1")
    got: dict = {"types": [], "audio_bytes": 0}
    async with client.realtime.connect(model="sim-fast") as conn:
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad"}}}})
        pcm = np.concatenate([tone_speech(0.6), silence(0.4)]).tobytes()
        for k in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[k:k + 4800]).decode())
        async for ev in conn:
            got["types"].append(ev.type)
            if ev.type == "session.created":
                got["session_id"] = ev.session.id
            if ev.type == "response.output_audio.delta":
                got["audio_bytes"] += len(base64.b64decode(ev.delta))
            if ev.type == "response.done":
                got["status"] = ev.response.status
                got["usage"] = ev.response.usage
                break
    return got


@pytest.mark.slow
def test_openai_sdk_voice_turn(quick_sim):
    got = asyncio.run(asyncio.wait_for(_voice_turn(quick_sim.ws_url), timeout=20))
    assert got["status"] == "completed"
    assert got["audio_bytes"] == 48000 * 6 // 10
    assert "input_audio_buffer.speech_stopped" in got["types"]
    assert got["usage"].output_token_details.audio_tokens == 12
    [tr] = quick_sim.turns(got["session_id"])
    assert tr["status"] == "completed" and tr["trigger"] == "vad"
