"""The official google-genai SDK's live client completes voice turns against the simulator over
TLS (the SDK only speaks wss; the generated certificate is trusted through SSL_CERT_FILE), and
the probe engine connects to the same wss endpoint with Target.ca_file / `--ca-file`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from probes.session import run_session
from probes.spec import Scenario, Target
from tests.simulator.wire import silence, tone_speech
from tests.timing import bounded
from tests.tools import require_module

genai = require_module("google.genai", "google-genai")  # the test extra (fails under CI)
from google.genai import types  # noqa: E402

RATE = 16000


async def _sdk_turns(base_url: str, manual: bool) -> list[dict]:
    client = genai.Client(api_key="x", http_options={"base_url": base_url})
    config: dict = {"response_modalities": ["AUDIO"], "output_audio_transcription": {},
                    "input_audio_transcription": {}}
    if manual:
        config["realtime_input_config"] = {"automatic_activity_detection": {"disabled": True}}
    pcm = np.concatenate([tone_speech(0.6, RATE), silence(0.5 if not manual else 0.0, RATE)])
    raw = pcm.astype("<i2").tobytes()
    out = []
    async with client.aio.live.connect(model="sim-fast", config=config) as session:
        for _ in range(2):
            if manual:
                await session.send_realtime_input(activity_start=types.ActivityStart())
            for i in range(0, len(raw), 3200):
                await session.send_realtime_input(
                    audio=types.Blob(data=raw[i:i + 3200], mime_type=f"audio/pcm;rate={RATE}"))
                await asyncio.sleep(0.02)
            if manual:
                await session.send_realtime_input(activity_end=types.ActivityEnd())
            turn = {"audio": 0, "transcript": "", "input": "", "complete": False, "usage": None}
            async for msg in session.receive():  # stops after turnComplete
                if msg.data:
                    turn["audio"] += len(msg.data)
                sc = msg.server_content
                if sc is not None:
                    if sc.output_transcription and sc.output_transcription.text:
                        turn["transcript"] += sc.output_transcription.text
                    if sc.input_transcription and sc.input_transcription.text:
                        turn["input"] += sc.input_transcription.text
                    if sc.turn_complete:
                        turn["complete"] = True
                if msg.usage_metadata is not None:
                    turn["usage"] = msg.usage_metadata
            out.append(turn)
    return out


@pytest.mark.parametrize("manual", [False, True])
@pytest.mark.slow
def test_google_genai_sdk_voice_turns_over_tls(gsim_tls, monkeypatch, manual):
    monkeypatch.setenv("SSL_CERT_FILE", gsim_tls.cert)
    base_url = f"https://{gsim_tls.host}:{gsim_tls.port}"
    turns = asyncio.run(asyncio.wait_for(_sdk_turns(base_url, manual), 30))
    assert len(turns) == 2
    for t in turns:
        assert t["complete"] and t["audio"] == 0.6 * 24000 * 2
        assert t["transcript"].strip() and t["input"] == "simulated speech"
        assert t["usage"].response_token_count == 15
    sessions = gsim_tls.truth()["sessions"]
    assert sessions and sessions[-1]["path"].endswith(".v1.GenerativeService.BidiGenerateContent")


@pytest.mark.slow
def test_engine_over_wss_with_ca_file(gsim_tls):
    tgt = Target("gtls", gsim_tls.gemini_url(), "sim-fast", provider="gemini", ca_file=gsim_tls.cert)

    def measure():
        res = run_session(tgt, Scenario(turns=2, utterance_s=0.6, turn_mode="manual"), api_key="x")
        assert res.outcome == "ok", res.error
        truth = sorted(gsim_tls.turns(res.server_session_id), key=lambda t: t["turn_index"])
        assert len(truth) == len(res.turns) == 2
        return res.turns, truth

    # over TLS the mark is taken in user space: looser than the kernel stamp, still close
    bounded(measure, lambda r: [(m.first_audio_ns, t["first_audio_ns"]) for m, t in zip(*r, strict=True)
                                if abs(m.first_audio_ns - t["first_audio_ns"]) > 5_000_000],
            pids=[gsim_tls.pid], budget_ms=5.0, what="first audio over wss within 5 ms of truth")
    untrusted = Target("gtls", gsim_tls.gemini_url(), "sim-fast", provider="gemini")
    assert run_session(untrusted, Scenario(turns=1), api_key="x").outcome == "tls"


@pytest.mark.slow
def test_voicepulse_probe_cli_gemini_wss_ca_file(gsim_tls, tmp_path):
    env = dict(os.environ, SIM_API_KEY="x")
    out = subprocess.run(
        [sys.executable, "-m", "voicepulse", "probe", "--provider", "gemini", "--url",
         gsim_tls.gemini_url(), "--model", "sim-fast", "--ca-file", gsim_tls.cert, "--turns", "1",
         "--json", "--store", str(tmp_path / "vp.db")],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert '"outcome": "ok"' in out.stdout and '"provider": "gemini"' in out.stdout
