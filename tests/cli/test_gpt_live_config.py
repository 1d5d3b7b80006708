"""GPT-Live config targets (issue 15): keys validated with the file and key in the message, and
a configured openai-live target probed end to end by `voicepulse probe` against the simulator."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from simulator.process import SimProcess
from voicepulse.config import load_config
from voicepulse.configkit import ConfigError

LIVE = "targets:\n  live: {provider: openai-live, url: ws://x/v1/live/sessions, model: m"
BAD = [
    (LIVE + ", delegation: server}\n", "targets.live.delegation", "client"),
    (LIVE + ", auth: token}\n", "targets.live.auth", "bearer"),
    (LIVE + ", quiet_ms: 10}\n", "targets.live.quiet_ms", "50"),
    (LIVE + ", quiet_ms: soon}\n", "targets.live.quiet_ms", "number"),
    ("targets:\n  a: {url: ws://x, model: m, quiet_ms: 900}\n", "targets.a.quiet_ms",
     "openai-live"),
    ("targets:\n  a: {url: ws://x, model: m, delegation: client}\n", "targets.a.delegation",
     "openai-live"),
    (LIVE + ", delegation: client, tools: [{type: function, name: f}]}\n", "targets.live.tools",
     "delegation: client"),
    ("scenarios:\n  s: {quiet_ms: 5}\n", "scenarios.s.quiet_ms", "50"),
    ("targets:\n  a: {url: ws://x, model: m, input_format: pcm16_16k}\n",
     "targets.a.input_format", "openai-live"),
]


@pytest.mark.parametrize(("text", "key", "expect"), BAD)
def test_bad_gpt_live_values_name_file_and_key(tmp_path, text, key, expect):
    f = tmp_path / "vp.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert ei.value.file == str(f) and ei.value.key == key, str(ei.value)
    assert expect in ei.value.message


@pytest.mark.slow
def test_configured_live_target_is_probed(tmp_path):
    with SimProcess() as sim:
        f = tmp_path / "vp.yaml"
        f.write_text(f"""targets:
  live:
    provider: openai-live
    url: {sim.ws_url}/v1/live/sessions
    model: sim-fast
    api_key_env: SIM_API_KEY
    delegation: client
    quiet_ms: 600
scenarios:
  default: {{turns: 2, quiet_ms: 900}}
""")
        cfg = load_config(f)
        assert cfg.target("live").quiet_ms == 600 and cfg.scenario(None).quiet_ms == 900
        out = subprocess.run(
            [sys.executable, "-m", "voicepulse.cli", "probe", "live", "--config", str(f),
             "--json", "--no-store"], capture_output=True, text=True, timeout=90, cwd=tmp_path,
            env={**os.environ, "SIM_API_KEY": "k"})
    assert out.returncode == 0, out.stderr + out.stdout
    doc = orjson.loads(out.stdout)
    assert doc["outcome"] == "ok" and doc["provider"] == "openai-live"
    for t in doc["turns"]:
        assert 0 < t["ttfa_ms"] == t["ttfa_audible_ms"] < t["turn_ms"]
        assert t["vad_ms"] is None  # no VAD event on GPT-Live
