"""GPT-Live cannot be sent a typed user message (issue 15): the openai package's live
ClientEvent carries audio, instructions, thinking, commentary and backend items, never a user
turn. So a scenario's `text` step paired with an openai-live target is a config error up front,
naming the step's file and key and what to write instead, not a client_error once the session
is open. The same scenario on a Realtime target is fine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from probes.script import parse_script, unplayable_step
from voicepulse.config import load_config
from voicepulse.configkit import ConfigError

LIVE = "  live: {provider: openai-live, url: 'ws://127.0.0.1:9/v1/live/sessions', model: m}\n"
RT = "  rt: {url: 'ws://127.0.0.1:9/v1/realtime', model: m}\n"
TYPED = "  typed: {steps: [{say: 0.5}, wait_reply, {text: 'and tomorrow?'}, wait_reply]}\n"


def _write(tmp_path, text: str):
    f = tmp_path / "vp.yaml"
    f.write_text(text)
    return f


def test_a_probe_job_pairing_text_with_gpt_live_names_the_step(tmp_path):
    f = _write(tmp_path, "targets:\n" + LIVE + RT + "scenarios:\n" + TYPED
               + "probes:\n  - {target: rt, scenario: typed, every: 1m}\n"
                 "  - {target: live, scenario: typed, every: 1m}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    e = ei.value
    assert (e.file, e.key) == (str(f), "scenarios.typed.steps[2].text"), str(e)
    assert "no typed user message" in e.message and "say" in e.message
    assert "probes[1]" in e.message and "openai-live" in e.message


def test_a_text_step_in_a_scenario_file_repeat_names_that_file(tmp_path):
    sc = tmp_path / "chat.yaml"
    sc.write_text("steps:\n  - repeat:\n      times: 2\n      steps: [{say: 0.5}, {text: hi},"
                  " wait_reply]\n")
    f = _write(tmp_path, "targets:\n" + LIVE + "scenarios:\n  chat: {file: chat.yaml}\n"
               "probes:\n  - {target: live, scenario: chat, every: 1m}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert (ei.value.file, ei.value.key) == (str(sc), "steps[0].repeat.steps[1].text"), str(ei.value)


def test_the_same_steps_are_fine_elsewhere():
    script = parse_script([{"say": 0.5}, "wait_reply", {"text": "hi"}, "wait_reply"])
    assert unplayable_step(script, "openai") is None
    assert unplayable_step(script, "gemini") is None
    err = unplayable_step(script, "openai-live")
    assert err is not None and err.key == "steps[2].text"
    assert unplayable_step(parse_script([{"say": 0.5}, "wait_reply"]), "openai-live") is None


def _vp(*args, cwd):
    return subprocess.run([sys.executable, "-m", "voicepulse.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env={**os.environ, "SIM_API_KEY": "k"})


@pytest.mark.parametrize("command", [["probe", "live"], ["load", "live", "--rate", "1",
                                                         "--duration", "2s"]])
def test_probe_and_load_refuse_it_before_connecting(tmp_path, command):
    """Exit 2 (a config error) with the file and key, and nothing dialled: the target's port is
    9 on loopback, where nobody listens, so a session would have failed (exit 1) instead."""
    f = _write(tmp_path, "targets:\n" + LIVE + "scenarios:\n" + TYPED)
    out = _vp(*command, "--config", str(f), "--scenario", "typed", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{f}: scenarios.typed.steps[2].text: GPT-Live has no typed user message" in out.stderr
    assert not (tmp_path / "voicepulse.db").exists()  # nothing ran, nothing was recorded


@pytest.mark.parametrize(("setting", "key"), [
    ("turn_mode: manual", "turn_mode"), ("silence_ms: 500, trailing_silence_s: 1.0", "silence_ms"),
    ("interrupt_response: false", "interrupt_response")])
def test_turn_settings_the_model_owns_are_refused_up_front(tmp_path, setting, key):
    """GPT-Live decides when to answer and lets the user cut in: a scenario asking otherwise is
    a config error naming its key (in the config, or in the scenario file it came from), not a
    client_error once a session runs; the same scenario on a Realtime target loads."""
    f = _write(tmp_path, "targets:\n" + LIVE + RT + "scenarios:\n  s: {turns: 1, " + setting
               + "}\nprobes:\n  - {target: rt, scenario: s, every: 1m}\n"
                 "  - {target: live, scenario: s, every: 1m}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    e = ei.value
    assert (e.file, e.key) == (str(f), f"scenarios.s.{key}"), str(e)
    assert "the model" in e.message and "probes[1]" in e.message
    assert load_config(_write(tmp_path, "targets:\n" + RT + "scenarios:\n  s: {turns: 1, "
                              + setting + "}\nprobes:\n  - {target: rt, scenario: s, every: 1m}\n"))
    sc = tmp_path / "own.yaml"
    sc.write_text(setting.replace(", ", "\n") + "\n")
    out = _vp("probe", "live", "--config", str(_write(tmp_path, "targets:\n" + LIVE)),
              "--scenario", str(sc), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{sc}: {key}: GPT-Live has" in out.stderr
