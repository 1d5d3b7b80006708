"""The CLI end to end, as a user runs it: real `voicepulse` processes against a real simulator
process over loopback, results in a real SQLite store."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import orjson
import pytest

from simulator.process import SimProcess


def vp(*args: str, timeout: float = 90, env: dict | None = None, cwd=None):
    return subprocess.run([sys.executable, "-m", "voicepulse.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def simulator():
    with SimProcess() as sim:
        yield sim


DEMO_TIMEOUT_S = 150


@pytest.fixture(scope="module", autouse=True)
def demo_run(request, tmp_path_factory):
    """test_demo_runs_end_to_end's `voicepulse demo`, started with the module so that its ~80 s,
    mostly waiting (a 50 s probe service, a load run, two scenarios), overlaps the module's
    other tests (CLI runs with no timing bound) instead of following them. Nothing is started
    when that test is not selected. Yields (process, its directory, start time) or None."""
    if not any(i.name == "test_demo_runs_end_to_end" for i in request.session.items):
        yield None
        return
    d = tmp_path_factory.mktemp("demo")
    with open(d / "stdout", "w") as out, open(d / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "voicepulse.cli", "demo", "--store",
                                 str(d / "demo.db")], stdout=out, stderr=err, text=True, cwd=d,
                                env={**os.environ, "NO_COLOR": "1"})
    try:
        yield proc, d, time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
def test_probe_json_document_and_store(simulator, tmp_path):
    store = tmp_path / "vp.db"
    out = vp("probe", "--url", simulator.realtime_url(), "--model", "sim-fast", "--turns", "2",
             "--json", "--store", str(store), env={"SIM_API_KEY": "k"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    doc = orjson.loads(out.stdout)
    assert doc["outcome"] == "ok" and doc["error"] is None
    assert doc["model"] == "sim-fast"
    assert 0 < doc["connect_ms"] <= doc["ready_ms"]
    assert len(doc["turns"]) == 2
    for turn in doc["turns"]:
        for key in ("ttfa_ms", "ttft_ms", "vad_ms", "turn_ms", "audio_s", "rtf", "stall_ms",
                    "stalls", "gap_p95_ms"):
            assert key in turn
        assert 0 < turn["ttfa_ms"] < turn["turn_ms"]
        assert turn["audio_s"] > 0

    summary = vp("results", "--store", str(store), "--since", "1h", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert "sim-fast" in summary.stdout and "100.0 %" in summary.stdout


def test_probe_dead_target_exits_1_with_error_class(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = vp("probe", "--url", f"ws://127.0.0.1:{port}/v1/realtime", "--model", "sim-fast",
             "--no-store", env={"SIM_API_KEY": "k"}, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "connect_refused" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_probe_timeline_is_readable(simulator, tmp_path):
    out = vp("probe", "--url", simulator.realtime_url(), "--model", "sim-fast", "--turns", "1",
             "--no-store", env={"SIM_API_KEY": "k", "NO_COLOR": "1"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "outcome ok" in lines[0]
    header = next(line for line in lines if "ttfa ms" in line)
    row = lines[lines.index(header) + 2]
    # the ttfa value sits right under its header
    col = header.index("ttfa ms") + len("ttfa ms")
    assert row[:col].rstrip()[-1].isdigit()
    assert "\x1b[" not in out.stdout


def test_probe_unset_key_variable_is_a_config_error(tmp_path):
    cfg = tmp_path / "voicepulse.yaml"
    cfg.write_text("targets:\n  t: {url: ws://127.0.0.1:9/v1/realtime, model: m, "
                   "api_key_env: VP_TEST_UNSET_KEY}\n")
    env = {k: v for k, v in os.environ.items() if k != "VP_TEST_UNSET_KEY"}
    out = subprocess.run([sys.executable, "-m", "voicepulse.cli", "probe", "t", "--config",
                          str(cfg)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert f"{cfg}: targets.t.api_key_env: environment variable VP_TEST_UNSET_KEY is not set" \
        in out.stderr


@pytest.mark.slow
def test_load_writes_a_report_when_asked(simulator, tmp_path):
    cfg = tmp_path / "voicepulse.yaml"
    cfg.write_text(f"targets:\n  sim-fast: {{url: '{simulator.realtime_url()}', model: sim-fast, "
                   f"api_key_env: SIM_API_KEY}}\nstore: {tmp_path / 'load.db'}\n")
    out = vp("load", "sim-fast", "--config", str(cfg), "--rate", "2", "--duration", "3s",
             "--run-id", "report-run", "--report", str(tmp_path / "run.html"),
             env={"SIM_API_KEY": "k"}, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    html = (tmp_path / "run.html").read_text()
    assert "report-run" in html and "<script src" not in html
    assert "sim-fast" in html


SCENARIOS = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios")


@pytest.mark.slow
def test_probe_a_scenario_file_by_path(simulator, tmp_path):
    """`--scenario FILE` with `--url` on loopback: the simulator is steered by the script's
    hints, so the example support call makes its tool call and the JSON carries the checks."""
    out = vp("probe", "--url", simulator.realtime_url(), "--model", "sim-fast", "--json",
             "--scenario", os.path.join(SCENARIOS, "support-call.yaml"),
             "--store", str(tmp_path / "vp.db"), env={"SIM_API_KEY": "k"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    doc = orjson.loads(out.stdout)
    assert doc["scenario"] == "support-call" and doc["outcome"] == "ok"
    ask, bye = doc["turns"]
    assert ask["checks"] == {"tool_called": True, "tool_args_json": True, "tool_args_match": True,
                             "transcribed": True}
    assert ask["tool_ms"] > 0 and ask["tool_result_ms"] > 0 and ask["wer"] == 0.0
    assert bye["tool_ms"] is None and bye["wer"] == 0.0


def test_turns_option_is_refused_for_a_scripted_scenario(simulator, tmp_path):
    out = vp("probe", "--url", simulator.realtime_url(), "--model", "sim-fast", "--turns", "3",
             "--scenario", os.path.join(SCENARIOS, "interrupting-caller.yaml"),
             env={"SIM_API_KEY": "k"}, cwd=tmp_path)
    assert out.returncode == 2
    assert "--turns does not apply to the scripted scenario interrupting-caller" in out.stderr


# last in the module: the demo has run alongside the tests above
@pytest.mark.slow
def test_demo_runs_end_to_end(demo_run):
    """The README's first command: service probes (OpenAI Realtime, Gemini Live, GPT-Live), an
    injected regression that fires, a load run, the summary, two voice scenarios and a report,
    in about a minute and a half. (Started by the `demo_run` fixture with the module.)"""
    proc, tmp_path, started = demo_run
    rc = proc.wait(timeout=max(1.0, DEMO_TIMEOUT_S - (time.monotonic() - started)))
    text, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert rc == 0, text + stderr
    assert "regression injected" in text
    alerts = text[text.index("[5/7] alerts"):text.index("[6/7]")]
    assert "firing    sim-fast-ttfa-regression (sim-fast)" in alerts
    assert "sim-slow-ttfa-regression" not in alerts  # the stable target stays quiet
    summary = text[text.index("[4/7]"):text.index("[5/7]")]
    assert "sim-fast" in summary and "sim-slow" in summary
    assert re.search(r"gemini-sim +gemini +sim-live", summary)  # both providers, side by side
    assert re.search(r"gpt-live-sim +openai-live +sim-live-demo", summary)  # and GPT-Live
    assert re.search(r"t= +\d+s  gpt-live-sim +ok +ttfa \d+ ms", text)  # probed as it ran
    assert "gpt-live-sim-ttfa-regression" not in alerts  # its steady TTFA stays quiet
    assert "arrivals due" in text  # the load run's summary
    # the example voice scenarios: a tool lookup, and a barge-in the simulator stops
    scenarios = text[text.index("[6/7]"):text.index("[7/7]")]
    assert "scenario support-call)  outcome ok" in scenarios
    assert re.search(r"tool call \d+\.\d ms, result -> audio \d+\.\d ms; WER 0\.0 %", scenarios)
    assert "scenario interrupting-caller)  outcome ok" in scenarios
    assert re.search(r"barge-in stopped in \d+\.\d ms", scenarios)
    assert (tmp_path / "voicepulse-demo.html").stat().st_size > 100_000
    assert "Traceback" not in stderr
