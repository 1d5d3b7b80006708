"""Scenario files through the real CLI: every bad one stops `config check`, `probe`, `serve` and
`load` with exit status 2 and one line naming the scenario file and the key; `config check`
lists the scripted scenarios."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from voicepulse.cli import main

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
targets:
  t: {url: "ws://127.0.0.1:9/v1/realtime", model: m, api_key_env: SIM_API_KEY}
scenarios:
  s: {file: %s}
probes:
  - {target: t, scenario: s, every: 30s}
"""

# (scenario file text or None for no file, key named, words of the message, in which file)
BAD = {
    "missing-file": (None, "scenarios.s.file", "no such file", "config"),
    "unknown-step": ("steps:\n  - say: 1.0\n  - dance: 3\n", "steps[1].dance",
                     "unknown step 'dance'", "scenario"),
    "bad-value": ("steps:\n  - say: {duration: -1}\n", "steps[0].say.duration",
                  "expected 0.05..600", "scenario"),
    "missing-wav": ("steps:\n  - say: {wav: gone.wav}\n  - wait_reply\n", "steps[0].say.wav",
                    "no such file", "scenario"),
    "not-yaml": ("steps: [\n  - say: {duration: 1\n", "scenarios.s.file", "not valid YAML at line",
                 "scenario"),
    "not-a-mapping": ("just some words\n", "(top level)", "expected a mapping of scenario",
                      "scenario"),
    "expect-without-repeat": ("expect: session_expired\nsteps:\n  - say: 1.0\n  - wait_reply\n",
                              "expect", "needs a `repeat` step", "scenario"),
}

COMMANDS = {
    "config-check": lambda cfg: ["config", "check", str(cfg)],
    "probe": lambda cfg: ["probe", "t", "--config", str(cfg), "--no-store"],
    "serve": lambda cfg: ["serve", "--config", str(cfg), "--duration", "1s"],
    "load": lambda cfg: ["load", "t", "--config", str(cfg), "--rate", "1", "--duration", "1s"],
}


def make(tmp_path: Path, case: str) -> tuple[Path, Path]:
    text = BAD[case][0]
    scenario = tmp_path / "scenarios" / "bad.yaml"
    scenario.parent.mkdir(exist_ok=True)
    if text is not None:
        scenario.write_text(text)
    config = tmp_path / "voicepulse.yaml"
    config.write_text(CONFIG % "scenarios/bad.yaml")
    return config, scenario


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD))
def test_bad_scenario_file_names_file_and_key(tmp_path, monkeypatch, case, command):
    monkeypatch.setenv("SIM_API_KEY", "k")
    monkeypatch.chdir(tmp_path)
    config, scenario = make(tmp_path, case)
    _, key, words, where = BAD[case]
    line = one_line(CliRunner().invoke(main, COMMANDS[command](config)))
    assert line.startswith("voicepulse: ")
    assert words in line
    assert f"{key}: " in line or f"({key} in " in line, line
    if where == "config":
        assert f"{config}: scenarios.s.file: no such file: {scenario}" in line
    else:  # the scenario file first, then which config entry pointed at it
        assert line.startswith(f"voicepulse: {scenario}: ")
        assert line.endswith(f"(scenarios.s.file in {config})")


@pytest.mark.parametrize("case", [c for c in BAD if BAD[c][0] is not None])
def test_probe_scenario_path_names_the_file_and_key(tmp_path, monkeypatch, case):
    """`probe --scenario path.yaml`: no config points at the file; the line names it alone."""
    _, scenario = make(tmp_path, case)
    monkeypatch.chdir(scenario.parent)  # no ./voicepulse.yaml here: the built-in targets
    _, key, words, _ = BAD[case]
    line = one_line(CliRunner().invoke(main, ["probe", "sim-fast", "--scenario", str(scenario),
                                              "--no-store"]))
    assert line.startswith(f"voicepulse: {scenario}: ") and words in line
    if not key.startswith("scenarios."):
        assert f"{scenario}: {key}: " in line


def test_probe_scenario_path_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line(CliRunner().invoke(main, ["probe", "sim-fast", "--scenario",
                                              str(tmp_path / "nope.yaml"), "--no-store"]))
    assert f"{tmp_path / 'nope.yaml'}: file not found" in line


def test_config_check_lists_scripted_scenarios(tmp_path):
    config = tmp_path / "voicepulse.yaml"
    config.write_text(textwrap.dedent(f"""
        targets:
          t: {{url: "ws://127.0.0.1:9/v1/realtime", model: m}}
        scenarios:
          plain: {{turns: 2}}
          support: {{file: {ROOT}/scenarios/support-call.yaml}}
          long: {{file: {ROOT}/scenarios/long-call.yaml}}
          inline:
            steps:
              - say: 1.0
              - wait_reply
        """))
    out = CliRunner().invoke(main, ["config", "check", str(config)])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[0].startswith(f"{config}: ok (1 targets, 5 scenarios")
    assert lines[1:] == [
        "  scenario support: scripted, 7 steps",
        "  scenario long: scripted, 1 step, expects session_expired, may run 65m",
        "  scenario inline: scripted, 2 steps",
    ]


def test_the_deploy_example_checks_with_its_scenario_files():
    """deploy/voicepulse.yaml points at the repository's scenario files (relative to itself)."""
    config = ROOT / "deploy" / "voicepulse.yaml"
    out = CliRunner().invoke(main, ["config", "check", str(config)])
    assert out.exit_code == 0, out.output
    assert "  scenario support: scripted, 7 steps" in out.output
    assert "  scenario interrupting: scripted, 6 steps" in out.output
