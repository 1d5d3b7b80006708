"""The demo's scenario step on a machine with neither espeak-ng nor the espeakng-loader wheel:
a clear skip, not a crash (with the wheel alone it plays: tests/probes/test_speech_wheel.py)."""

from __future__ import annotations

from probes import audio
from telemetry.wiring import Telemetry
from voicepulse import demo


def test_demo_skips_the_scenarios_without_espeak(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(audio, "espeak_available", lambda: False)

    class NoSim:  # never reached: the scenarios are refused before any session starts
        def set_profile(self, **kw):
            raise AssertionError("a session was attempted")

    demo.run_scenarios(Telemetry(store=str(tmp_path / "vp.db")), NoSim(), None)
    out = capsys.readouterr().out
    assert "skipped:" in out and "support-call.yaml" in out and "espeak-ng" in out


def test_the_demo_scenarios_exist():
    assert all((demo.SCENARIO_DIR / f).is_file() for f in demo.DEMO_SCENARIOS)
