"""A target's `transport` key (issue 16): websocket (default) or webrtc, webrtc only for provider
openai (Realtime GA) or openai-live; a bad value names the file, the key and what is allowed."""

from __future__ import annotations

import pytest

from voicepulse.config import load_config
from voicepulse.configkit import ConfigError

BAD = [
    ("targets:\n  a: {url: ws://x, model: m, transport: sip}\n", "targets.a.transport",
     "websocket"),
    ("targets:\n  a: {provider: gemini, url: ws://x, model: m, transport: webrtc}\n",
     "targets.a.transport", "openai-live"),
    ("targets:\n  a: {provider: azure, url: wss://x, model: m, transport: webrtc}\n",
     "targets.a.transport", "openai"),
    ("targets:\n  a: {url: http://x/v1/realtime, model: m}\n", "targets.a.url", "ws"),
]


@pytest.mark.parametrize(("text", "key", "expect"), BAD)
def test_bad_transport_values_name_file_and_key(tmp_path, text, key, expect):
    f = tmp_path / "vp.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert ei.value.file == str(f) and ei.value.key == key, str(ei.value)
    assert expect in ei.value.message


def test_transport_default_and_webrtc_targets(tmp_path):
    f = tmp_path / "vp.yaml"
    f.write_text("""targets:
  ws: {url: wss://api.openai.com/v1/realtime, model: gpt-realtime}
  rt: {url: wss://api.openai.com/v1/realtime, model: gpt-realtime, transport: webrtc}
  live: {provider: openai-live, url: https://api.openai.com/v1/live/sessions, model: gpt-live-1,
         transport: webrtc}
""")
    cfg = load_config(f)
    assert cfg.target("ws").transport == "websocket"
    assert cfg.target("rt").transport == "webrtc"
    assert cfg.target("live").transport == "webrtc"
    assert cfg.target("live").url.startswith("https://")
