"""voicepulse.yaml validation: the README's example works as written, and every bad value gets a
one-line error naming the file and the key, with exit status 2."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from voicepulse.cli import main
from voicepulse.config import load_config

README_EXAMPLE = """
targets:
  sim-fast:
    provider: openai            # openai | azure | gemini (later)
    url: ws://127.0.0.1:8765/v1/realtime
    model: sim-fast
    api_key_env: SIM_API_KEY    # the name of an env var, never the key itself
  gpt-realtime:
    provider: openai
    url: wss://api.openai.com/v1/realtime
    model: gpt-realtime
    api_key_env: OPENAI_API_KEY
    voice: marin
scenarios:
  default:
    turns: 2
    utterance_s: 1.5
    turn_mode: server_vad       # server_vad | manual
store: voicepulse.db            # the embedded store, when no sink is configured
"""


def write(tmp_path, text: str):
    path = tmp_path / "voicepulse.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_readme_example_loads_as_written(tmp_path):
    cfg = load_config(write(tmp_path, README_EXAMPLE))
    assert set(cfg.targets) == {"sim-fast", "gpt-realtime"}
    fast = cfg.targets["sim-fast"]
    assert (fast.url, fast.model, fast.provider, fast.api_key_env) == (
        "ws://127.0.0.1:8765/v1/realtime", "sim-fast", "openai", "SIM_API_KEY")
    assert cfg.targets["gpt-realtime"].voice == "marin"
    sc = cfg.scenarios["default"]
    assert (sc.turns, sc.utterance_s, sc.turn_mode) == (2, 1.5, "server_vad")
    assert cfg.store == "voicepulse.db" and cfg.sinks == []


def test_config_check_command_accepts_the_example(tmp_path):
    path = write(tmp_path, README_EXAMPLE)
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 0, out.output
    assert "ok (2 targets" in out.output


BAD = [
    # (yaml, key named in the message, words of the expectation)
    ("targets:\n  a: {url: http://x, model: m}\n", "targets.a.url", "ws:// or wss://"),
    ("targets:\n  a: {url: ws://x, model: m, colour: red}\n", "targets.a.colour", "unknown key"),
    ("targets:\n  a: {url: ws://x}\n", "targets.a.model", "is required"),
    ("targets:\n  a: {url: ws://x, model: m, provider: acme}\n", "targets.a.provider", "openai"),
    ("targets:\n  a: {url: ws://x, model: m, api_key_env: sk-123}\n", "targets.a.api_key_env",
     "name of an environment variable"),
    ("scenarios:\n  s: {turns: 0}\n", "scenarios.s.turns", "at least 1"),
    ("scenarios:\n  s: {turns: two}\n", "scenarios.s.turns", "whole number"),
    ("scenarios:\n  s: {utterance_s: -1}\n", "scenarios.s.utterance_s", "above zero"),
    ("scenarios:\n  s: {turn_mode: push}\n", "scenarios.s.turn_mode", "server_vad"),
    ("scenarios:\n  s: {timeouts: {connect: soon}}\n", "scenarios.s.timeouts.connect", "duration"),
    ("scenarios:\n  s: {timeouts: {connect: 0s}}\n", "scenarios.s.timeouts.connect", "above zero"),
    ("colour: red\n", "colour", "unknown key"),
    ("targets: [1, 2]\n", "targets[0]", "mapping"),
    ("targets:\n  a: {url: ws://x, model: m\n", "", "not valid YAML at line"),
]


@pytest.mark.parametrize(("text", "key", "expect"), BAD)
def test_bad_values_name_file_and_key(tmp_path, text, key, expect):
    path = write(tmp_path, text)
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    assert str(path) in lines[0]
    assert f": {key}: " in lines[0] or not key
    assert expect in lines[0]


def test_missing_file_is_a_config_error(tmp_path):
    out = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.yaml")])
    assert out.exit_code == 2
    assert "file not found" in out.output


def test_a_target_without_instructions_gets_the_default_text(tmp_path):
    cfg = load_config(write(tmp_path, "targets:\n  a: {url: ws://x, model: m}\n"))
    assert isinstance(cfg.targets["a"].instructions, str) and cfg.targets["a"].instructions


SINKS_EXAMPLE = """
sinks:
  - type: influx
    api: v2                      # InfluxDB 1.8+, 2.x, 3.x
    url: http://127.0.0.1:8086
    org: acme
    bucket: voicepulse
    token_env: INFLUX_TOKEN
  - type: influx
    api: v1                      # InfluxDB 1.x /write
    url: http://127.0.0.1:8087
    database: voicepulse
    retention_policy: autogen    # optional
    username_env: INFLUX_USER    # optional
    password_env: INFLUX_PASSWORD
outbox: .voicepulse/outbox       # optional; the default is documented
"""


def test_sinks_example_loads_as_written(tmp_path):
    from telemetry.sinks import InfluxV1Sink, InfluxV2Sink

    cfg = load_config(write(tmp_path, SINKS_EXAMPLE))
    v2, v1 = cfg.sinks
    assert isinstance(v2, InfluxV2Sink) and isinstance(v1, InfluxV1Sink)
    assert (v2.url, v2.org, v2.bucket, v2.token_env) == (
        "http://127.0.0.1:8086", "acme", "voicepulse", "INFLUX_TOKEN")
    assert (v1.database, v1.retention_policy, v1.username_env, v1.password_env) == (
        "voicepulse", "autogen", "INFLUX_USER", "INFLUX_PASSWORD")
    assert cfg.outbox == ".voicepulse/outbox"


@pytest.mark.parametrize(("text", "key"), [
    ("sinks:\n  - {type: influx, api: v3, url: http://x, database: d}\n", "sinks[0].api"),
    ("sinks:\n  - {type: graphite}\n", "sinks[0].type"),
    ("sinks:\n  - {type: influx, api: v1, url: ws://x, database: d}\n", "sinks[0].url"),
    ("sinks:\n  - {type: influx, api: v2, url: http://x, org: o}\n", "sinks[0].bucket"),
    ("sinks:\n  - {type: influx, api: v1, url: http://x, database: d, precision: h}\n",
     "sinks[0].precision"),
])
def test_bad_sinks_name_the_key(tmp_path, text, key):
    out = CliRunner().invoke(main, ["config", "check", str(write(tmp_path, text))])
    assert out.exit_code == 2, out.output
    assert f": {key}: " in out.output
