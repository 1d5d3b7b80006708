"""SIM_API_KEY on this machine: a target naming it on a loopback URL needs no exported key, with
or without a config file (the simulator takes any key unless started with --api-key), while any
other variable, or the same one for a target elsewhere, must be set before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from simulator.process import SimProcess
from voicepulse import config as cfgmod
from voicepulse.configkit import ConfigError


def _unset(monkeypatch, var: str) -> None:
    monkeypatch.setenv(var, "x")  # recorded, so whatever require_env sets is undone afterwards
    monkeypatch.delenv(var)


def _config(tmp_path, url: str, var: str = "SIM_API_KEY"):
    path = tmp_path / "voicepulse.yaml"
    path.write_text(f"targets:\n  t: {{url: '{url}', model: sim-fast, api_key_env: {var}}}\n")
    return cfgmod.load_config(path)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_config_files_loopback_target_gets_the_placeholder(monkeypatch, tmp_path, host):
    _unset(monkeypatch, "SIM_API_KEY")
    cfg = _config(tmp_path, f"ws://{host}:8765/v1/realtime")
    cfgmod.require_env(cfg, [cfg.targets["t"]])
    assert os.environ["SIM_API_KEY"] == cfgmod.SIM_PLACEHOLDER_KEY


def test_an_exported_key_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("SIM_API_KEY", "mine")
    cfg = _config(tmp_path, "ws://127.0.0.1:8765/v1/realtime")
    cfgmod.require_env(cfg, [cfg.targets["t"]])
    assert os.environ["SIM_API_KEY"] == "mine"


@pytest.mark.parametrize(("url", "var"), [
    ("ws://sim:8765/v1/realtime", "SIM_API_KEY"),  # the simulator elsewhere (compose): export it
    ("wss://api.openai.com/v1/realtime", "SIM_API_KEY"),
    ("ws://127.0.0.1:8765/v1/realtime", "OPENAI_API_KEY"),  # a real provider's variable
])
def test_anything_else_must_be_exported(monkeypatch, tmp_path, url, var):
    _unset(monkeypatch, var)
    cfg = _config(tmp_path, url, var)
    with pytest.raises(ConfigError) as exc:
        cfgmod.require_env(cfg, [cfg.targets["t"]])
    assert str(exc.value) == (f"{tmp_path}/voicepulse.yaml: targets.t.api_key_env: "
                              f"environment variable {var} is not set")
    assert var not in os.environ


def _probe(cfg_path, cwd, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "SIM_API_KEY"}
    return subprocess.run([sys.executable, "-m", "voicepulse.cli", "probe", "t", "--config",
                           str(cfg_path), "--json", "--no-store"], capture_output=True, text=True,
                          timeout=90, env={**clean, **env}, cwd=cwd)


@pytest.mark.slow
def test_probe_with_a_config_file_and_no_exported_key(tmp_path):
    """The README's config example, end to end: no `export SIM_API_KEY`, a real session."""
    with SimProcess() as sim:
        path = tmp_path / "voicepulse.yaml"
        path.write_text(f"targets:\n  t: {{url: '{sim.ws_url}/v1/realtime', model: sim-fast, "
                        "api_key_env: SIM_API_KEY}\nscenarios:\n  default: {turns: 1}\n")
        out = _probe(path, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert orjson.loads(out.stdout)["outcome"] == "ok"


@pytest.mark.slow
def test_a_simulator_with_its_own_key_refuses_the_placeholder(tmp_path):
    """Started with --api-key, the simulator wants that key: the placeholder is refused (exit 1,
    an auth failure), and exporting the key fixes it."""
    with SimProcess(args=["--api-key", "sim-secret-h21"]) as sim:
        path = tmp_path / "voicepulse.yaml"
        path.write_text(f"targets:\n  t: {{url: '{sim.ws_url}/v1/realtime', model: sim-fast, "
                        "api_key_env: SIM_API_KEY}\nscenarios:\n  default: {turns: 1}\n")
        refused = _probe(path, tmp_path)
        accepted = _probe(path, tmp_path, SIM_API_KEY="sim-secret-h21")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    doc = orjson.loads(refused.stdout)
    assert doc["outcome"] != "ok" and "401" in str(doc["error"]), doc["error"]
    assert "sim-secret-h21" not in refused.stdout + refused.stderr
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
