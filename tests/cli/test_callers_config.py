"""A scenario's `callers:` in voicepulse.yaml (issue 20): kept as validated data on the scenario,
shipped with a load plan, and refused with file, key and expectation when wrong."""

from __future__ import annotations

import pytest

from loadtests.plan import Plan, default_target
from voicepulse.config import ConfigError, parse_config

CALLERS = {"noise_snr_db": [5, 30], "noise": ["pink", "babble"], "voices": ["en-us", "en-gb"],
           "rate_wpm": [140, 200], "pitch": [30, 70], "pause_ms": [-100, 300], "variants": 6}


def test_callers_ride_on_the_scenario_and_the_plan():
    cfg = parse_config({"scenarios": {"crowd": {"turns": 2, "callers": CALLERS}}}, "vp.yaml")
    sc = cfg.scenario("crowd")
    assert sc.callers == CALLERS
    again = Plan.from_json(Plan(default_target(), sc).to_json())
    assert again.scenario.callers == CALLERS
    assert parse_config({"scenarios": {"plain": {}}}, "vp.yaml").scenario("plain").callers is None


@pytest.mark.parametrize("bad, key, expect", [
    ({"pitch": [30, 170]}, "pitch", "expected 0 <= low <= high <= 99"),
    ({"noise_snr_db": "loud"}, "noise_snr_db", "expected a number or [low, high]"),
    ({"noise": ["traffic"]}, "noise", "expected kinds from white, pink, hum, babble"),
    ({"variants": 100}, "variants", "expected an integer 1..64"),
    ({"colour": 1}, "colour", "unknown key"),
])
def test_bad_callers_name_file_key_and_expectation(bad, key, expect):
    with pytest.raises(ConfigError) as e:
        parse_config({"scenarios": {"crowd": {"callers": bad}}}, "vp.yaml")
    assert str(e.value).startswith(f"vp.yaml: scenarios.crowd.callers.{key}: ") and expect in str(e.value)


def test_callers_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^vp.yaml: scenarios.crowd.callers: expected a mapping"):
        parse_config({"scenarios": {"crowd": {"callers": [5, 30]}}}, "vp.yaml")


def test_more_renderings_than_the_caches_keep_is_refused():
    """(64 callers + the scenario) x 4 turns = 260 renderings, over the 200 the engine's caches
    keep for a run, so sessions would render audio while others are timed."""
    with pytest.raises(ConfigError) as e:
        parse_config({"scenarios": {"crowd": {"turns": 4, "callers": {"variants": 64}}}}, "vp.yaml")
    assert str(e.value).startswith("vp.yaml: scenarios.crowd.callers.variants: 64 callers ")
    assert "at most 200" in str(e.value)
    parse_config({"scenarios": {"crowd": {"turns": 4, "callers": {"variants": 49}}}}, "vp.yaml")
