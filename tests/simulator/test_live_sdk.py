"""The official openai SDK's `client.live.connect()` completes a spoken GPT-Live turn against
the simulator: session.start, session.started, speech in, audible reply out, session.closed."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from tests.simulator.wire import silence, tone_speech
from tests.tools import require_module

openai = require_module("openai")  # the test extra: skips locally, fails under CI when absent

GATE_DBFS = -45.0


def _dbfs(b64: str) -> float:
    x = np.frombuffer(base64.b64decode(b64), dtype="<i2").astype(np.float64)
    return 20 * np.log10(max(np.sqrt(np.mean(x * x)) / 32768 if x.size else 0.0, 1e-9))


async def _speak(conn, pcm: np.ndarray) -> None:
    """Real-time paced 100 ms appends, silence included, as a live client must."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k, i in enumerate(range(0, len(pcm), 2400)):
        await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.1 - loop.time()))
        await conn.session.input_audio.append(
            audio=base64.b64encode(pcm[i:i + 2400].tobytes()).decode())


async def _spoken_turn(ws_url: str) -> dict:
    client = openai.AsyncOpenAI(api_key="sk-test", websocket_base_url=ws_url + "/v1")
    got: dict = {"types": [], "levels": [], "input": "", "output": ""}
    async with client.live.connect() as conn:
        await conn.session.start(session={
            "model": "gpt-live-1", "instructions": "Be brief.",
            "audio": {"format": {"type": "audio/pcm", "rate": 24000},
                      "output": {"voice": "marin"}}})
        speaker = None
        async for ev in conn:
            got["types"].append(ev.type)
            if ev.type == "session.started":
                got["session_id"] = ev.session.id
                pcm = np.concatenate([silence(0.3), tone_speech(0.6), silence(1.2)])
                speaker = asyncio.ensure_future(_speak(conn, pcm))
            elif ev.type == "session.output_audio.delta":
                got["levels"].append(_dbfs(ev.delta))
            elif ev.type == "session.input_transcript.delta":
                got["input"] += ev.delta
            elif ev.type == "session.output_transcript.delta":
                got["output"] += ev.delta
            elif ev.type == "session.usage.updated":  # sent once the reply went quiet
                await speaker
                await conn.session.close()
            elif ev.type == "session.closed":
                got["reason"], got["seconds"] = ev.reason, ev.usage.seconds
                break
            elif ev.type == "error":
                raise AssertionError(ev.error)
    return got


@pytest.mark.slow
def test_official_sdk_live_connect_spoken_turn(quick_sim):
    got = asyncio.run(asyncio.wait_for(_spoken_turn(quick_sim.ws_url), timeout=30))
    assert got["types"][0] == "session.started"
    levels = np.array(got["levels"])
    audible = np.flatnonzero(levels > GATE_DBFS)
    assert audible.size >= 5  # 0.6 s of reply in 100 ms deltas (the last one partial)
    assert audible[0] > 0 and levels[0] < GATE_DBFS  # quiet output came before the reply
    assert np.all(levels[audible[-1] + 1:] < GATE_DBFS)  # and after it
    assert got["input"] and got["output"].strip()
    assert got["reason"] == "close_requested" and got["seconds"] >= 1
    [tr] = quick_sim.turns(got["session_id"])
    assert tr["status"] == "completed" and tr["trigger"] == "vad"
    assert tr["reply_audio_ms"] == 600
