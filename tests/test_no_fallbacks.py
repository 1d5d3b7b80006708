"""A broken module fails loudly: no import is swallowed, no signature guessed twice.

Each test breaks one module by hand (an import that raises, a changed signature) and checks the
failure reaches the caller instead of being papered over.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_make_point_builds_a_telemetry_point():
    from scheduler.points import make_point
    from telemetry.points import Point

    p = make_point("schedule", {"target": "t", "agent": ""}, {"runs": 1, "lateness_ms": None}, 1.5)
    assert isinstance(p, Point)
    assert (p.measurement, p.tags, p.fields, p.time_ns) == (
        "schedule", {"target": "t"}, {"runs": 1}, 1_500_000_000)


def test_make_point_does_not_retry_a_changed_point(monkeypatch):
    """A Point whose fields were renamed raises, instead of a positional retry that would put
    the time into whatever the fourth field has become."""
    from scheduler import points
    from telemetry import points as built  # make_point builds through telemetry's build_point

    class Renamed:
        def __init__(self, measurement, tags, fields, at_ns=0):
            self.at_ns = at_ns

    monkeypatch.setattr(built, "Point", Renamed)
    with pytest.raises(TypeError):
        points.make_point("schedule", {}, {"runs": 1}, 2.0)


def test_scheduler_points_need_telemetry(monkeypatch):
    """With telemetry.points broken, scheduler.points does not import (it used to build
    look-alike `StoredPoint`s that no sink knows)."""
    monkeypatch.setitem(sys.modules, "telemetry.points", None)  # importing it raises
    monkeypatch.delitem(sys.modules, "scheduler.points", raising=False)
    with pytest.raises(ImportError, match="telemetry.points"):
        importlib.import_module("scheduler.points")


# -- voicepulse/cli: every command module is imported like any other ---------------------------
BROKEN_CLI = """
import importlib.abc, importlib.machinery, sys

class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # voicepulse.cmd_load raises ImportError while it runs, as with a bad import inside it
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "voicepulse.cmd_load" else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ImportError("cannot import name 'LoadConfig' (broken on purpose)")

sys.meta_path.insert(0, Broken())
from voicepulse.cli import main
main()
"""


def run_cli(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_cli_lists_every_command():
    out = run_cli("from voicepulse.cli import main; main()", "--help")
    assert out.returncode == 0, out.stderr
    commands = out.stdout.split("Commands:")[1].split()
    assert {"load", "report", "serve", "alerts", "sim", "probe", "results"} <= set(commands)


def test_a_broken_command_module_stops_the_cli_naming_it():
    """It used to be swallowed: `voicepulse --help` listed no `load`, and `voicepulse load`
    said only "No such command"."""
    out = run_cli(BROKEN_CLI, "load", "--help")
    assert out.returncode != 0
    assert "ImportError: cannot import name 'LoadConfig' (broken on purpose)" in out.stderr, \
        out.stderr
    assert "from voicepulse.cmd_load import load" in out.stderr, out.stderr  # where it broke
    assert "No such command" not in out.stderr + out.stdout


# -- voicepulse/config: the service and load sections' parsers are imported directly ----------
def test_a_broken_section_parser_fails_the_config_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "voicepulse.config_load", None)
    monkeypatch.delitem(sys.modules, "voicepulse.config", raising=False)
    with pytest.raises(ImportError, match="voicepulse.config_load"):
        importlib.import_module("voicepulse.config")


def test_a_missing_section_parser_is_an_error_not_an_absent_section(monkeypatch):
    """A config_service without `parse_service` used to parse every file as having no service
    section (probes, SLOs and alerts silently dropped)."""
    monkeypatch.setitem(sys.modules, "voicepulse.config_service",
                        types.ModuleType("voicepulse.config_service"))
    monkeypatch.delitem(sys.modules, "voicepulse.config", raising=False)
    with pytest.raises(ImportError, match="parse_service"):
        importlib.import_module("voicepulse.config")


def test_the_sections_are_parsed(tmp_path):
    from voicepulse.config import load_config

    path = tmp_path / "voicepulse.yaml"
    path.write_text("targets:\n  sim-fast: {url: 'ws://127.0.0.1:8765/v1/realtime', model: "
                    "sim-fast}\nprobes:\n  - {target: sim-fast, every: 30s}\nload:\n  rate: 2\n")
    cfg = load_config(path)
    assert [j.target for j in cfg.service.probes] == ["sim-fast"]
    assert cfg.load.rate == 2
