"""The `load:` config section and the command's usage errors (no run is started)."""

import pytest
from click.testing import CliRunner

from voicepulse.cmd_load import build_plan, load
from voicepulse.config import parse_config
from voicepulse.config_load import parse_load
from voicepulse.configkit import ConfigError, Section


def parse(data):
    return parse_load(Section(data, "vp.yaml"))


def test_absent_section_is_none():
    assert parse({}) is None


def test_full_section():
    lc = parse({"load": {"rate": 20, "arrivals": "poisson", "duration": "2m", "slots": 50,
                         "shape": {"name": "spike", "at": "30s", "length": "10s"},
                         "thresholds": ["ttfa_ms.p95<800",
                                        {"expr": "error_rate<0.05", "abort_on_fail": True}]}})
    assert (lc.rate, lc.arrivals, lc.duration_s, lc.slots) == (20.0, "poisson", 120.0, 50)
    assert lc.shape == "spike" and lc.shape_params == {"at": "30s", "length": "10s"}
    assert lc.thresholds == ["ttfa_ms.p95<800", "error_rate<0.05 abort_on_fail"]
    st = parse({"load": {"users": 5, "stages": [{"duration": "10s", "target": 5},
                                                 {"duration": 0, "target": 9}]}})
    assert st.model == "closed" and len(st.stages) == 2


@pytest.mark.parametrize("data, key", [
    ({"rate": 1, "users": 2}, "load.users"),
    ({"rate": -1}, "load.rate"),
    ({"arrivals": "burst"}, "load.arrivals"),
    ({"thresholds": ["ttfa_ms<3"]}, "load.thresholds[0]"),
    ({"shape": "wave"}, "load.shape"),
    ({"shape": {"name": "ramp", "ramp_up": "99s"}, "duration": "10s"}, "load.shape"),
    ({"stages": "10s"}, "load.stages"),
    ({"bogus": 1}, "load.bogus"),
])
def test_errors_name_file_and_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse({"load": data})
    assert e.value.file == "vp.yaml" and e.value.key == key


def test_lead_config_calls_the_parser():
    cfg = parse_config({"load": {"rate": 3}}, "vp.yaml")
    assert cfg.load.rate == 3.0


def test_plan_from_options_overrides_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = build_plan(None, None, None, 7.0, None, None, "ramp:ramp_up=5s", "20s",
                      ("ttfa_ms.p95<900",), "run1", None)
    assert plan.target.model == "sim-fast" and plan.load.rate == 7.0
    assert plan.load.shape == "ramp" and plan.load.duration_s == 20.0
    assert plan.run_id == "run1" and plan.load.thresholds == ["ttfa_ms.p95<900"]
    assert isinstance(plan.target.instructions, str)
    plan.to_json()


@pytest.mark.parametrize("args, text", [
    (["--rate", "1", "--users", "2"], "exclude each other"),
    (["--stages", "10s:1", "--shape", "ramp"], "exclude each other"),
    (["--shape", "wave"], "--shape"),
    (["--stages", "x"], "--stages"),
    (["--duration", "soon"], "--duration"),
    (["--threshold", "ttfa_ms<3"], "--threshold"),
    (["--worker"], "--master-host"),
    (["nosuchtarget"], "no such target"),
])
def test_usage_errors_exit_2(args, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(load, args)
    assert r.exit_code == 2, r.output
    assert text in r.output
