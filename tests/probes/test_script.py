"""Scenario steps as data: parsing, validation messages with keys, checks and simulator hints."""

from __future__ import annotations

import pytest

from probes import wer
from probes.play import simulator_hints
from probes.script import (
    ExpectTool,
    InterruptAfter,
    Repeat,
    Say,
    Silence,
    StepError,
    Text,
    ToolResult,
    WaitReply,
    check_call,
    parse_script,
)


def test_every_step_kind_parses(tmp_path):
    (tmp_path / "hi.wav").write_bytes(b"RIFF")
    sc = parse_script([
        {"say": {"duration": 1.2}},
        {"say": 0.8},
        {"say": {"wav": "hi.wav", "transcript": "hello there"}},
        {"silence": 300},
        "wait_reply",
        {"wait_reply": {}},
        {"interrupt_after": 400},
        {"interrupt_after": {"ms": 250, "say": {"duration": 0.5}}},
        {"expect_tool": {"name": "lookup", "args": {"id": "A1"}, "required": ["id"]}},
        {"tool_result": {"output": {"status": "shipped"}, "delay_ms": 100}},
        {"text": "and the invoice?"},
        {"repeat": {"times": 2, "steps": [{"say": 0.5}, "wait_reply"]}},
    ], base_dir=str(tmp_path))
    s = sc.steps
    assert s[0] == Say("synthetic", 1.2) and s[1] == Say("synthetic", 0.8)
    assert s[2].source == "wav" and s[2].path == str(tmp_path / "hi.wav") and s[2].text == "hello there"
    assert s[3] == Silence(300) and s[4] == s[5] == WaitReply()
    assert s[6] == InterruptAfter(400, Say("synthetic", 1.0))
    assert s[7] == InterruptAfter(250, Say("synthetic", 0.5))
    assert s[8] == ExpectTool("lookup", {"id": "A1"}, ("id",))
    assert s[9] == ToolResult('{"status":"shipped"}', 100)
    assert s[10] == Text("and the invoice?")
    assert isinstance(s[11], Repeat) and s[11].times == 2 and len(s[11].steps) == 2
    assert len(sc.says()) == 6  # 3 says, 2 interruptions, 1 in the repeat


@pytest.mark.parametrize(("steps", "key", "words"), [
    ([{"shout": "hi"}], "steps[0].shout", "unknown step"),
    ([{"say": {"duration": 1}}, {"wait_for": 1}], "steps[1].wait_for", "unknown step"),
    ([{"say": {"wav": "missing.wav"}}], "steps[0].say.wav", "no such file"),
    ([{"say": {"duration": 1, "speak": "x"}}], "steps[0].say", "exactly one of"),
    ([{"say": {"duration": "long"}}], "steps[0].say.duration", "expected a number"),
    ([{"say": {"duration": 1, "loud": True}}], "steps[0].say.loud", "unknown key"),
    (["wait_reply"], "steps[0]", "nothing to reply to"),
    ([{"say": 1}, {"tool_result": {"output": {}}}], "steps[1]", "needs an expect_tool"),
    ([{"say": 1}, {"silence": -5}], "steps[1].silence", "expected 1..600000"),
    ([{"say": 1}, {"expect_tool": {"args": {}}}], "steps[1].expect_tool.name", "non-empty string"),
    ([{"repeat": {"steps": [{"say": 1}]}}], "steps[0].repeat", "exactly one of times"),
    ([{"repeat": {"until": "forever", "steps": [{"say": 1}]}}], "steps[0].repeat.until", "session_expired"),
    ([{"repeat": {"times": 2, "steps": [{"say": 1}], "max": "soon"}}], "steps[0].repeat.max", "duration"),
    ([], "steps", "non-empty list"),
])
def test_bad_steps_name_the_key(tmp_path, steps, key, words):
    with pytest.raises(StepError) as e:
        parse_script(steps, base_dir=str(tmp_path))
    assert e.value.key == key and words in e.value.message, str(e.value)


def test_expect_needs_a_repeat_until_it():
    with pytest.raises(StepError) as e:
        parse_script([{"say": 1}], "session_expired")
    assert e.value.key == "expect" and "repeat" in e.value.message
    with pytest.raises(StepError) as e:
        parse_script([{"say": 1}], "timeout")
    assert e.value.key == "expect"
    ok = parse_script([{"repeat": {"until": "session_expired", "max": "2m", "steps": [{"say": 1}]}}],
                      "session_expired")
    assert ok.expect == "session_expired" and ok.longest_s() == 120


def test_check_call():
    exp = ExpectTool("lookup", {"order_id": "A1"}, ("order_id",))
    good = check_call(exp, "lookup", '{"order_id": "A1", "extra": 1}')
    assert good.called and good.json_ok and good.args_ok and not good.problems
    broken = check_call(exp, "lookup", '{"order_id": "A1"')
    assert broken.called and not broken.json_ok and not broken.args_ok
    assert "not valid JSON" in broken.problems[0]
    wrong = check_call(exp, "lookup", '{"order_id": "B2"}')
    assert wrong.json_ok and not wrong.args_ok and "order_id='B2'" in wrong.problems[0]
    other = check_call(exp, "refund", "{}")
    assert not other.called and not other.args_ok
    none = check_call(exp, None, None)
    assert not none.called and none.problems == ["no call to lookup"]


def test_simulator_hints_follow_the_user_inputs(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    sc = parse_script([
        {"say": {"wav": "a.wav", "transcript": "where is [my] order"}},
        "wait_reply",
        {"text": "the number is A1"},
        {"expect_tool": {"name": "lookup", "args": {"order_id": "A1"}}},
        {"tool_result": {"output": {"ok": True}}},
        "wait_reply",
    ], base_dir=str(tmp_path))
    hints = simulator_hints(sc)
    # the transcript of audio turn 0, brackets made safe; the call on user input 1 (the text)
    assert hints == '[transcript: where is (my) order] [call@1:lookup {"order_id": "A1"}]'
    assert simulator_hints(parse_script([{"say": 1}, "wait_reply"])) == ""


@pytest.mark.parametrize(("ref", "hyp", "want"), [
    ("Hello, world.", "hello world", 0.0),
    ("the cat sat on the mat", "the cat sat on a mat", 1 / 6),
    ("the cat sat", "", 1.0),
    ("one two three four", "one two three four five", 0.25),
    ("Don't stop", "dont stop", 0.0),
])
def test_word_error_rate(ref, hyp, want):
    assert wer.word_error_rate(ref, hyp) == pytest.approx(want)
