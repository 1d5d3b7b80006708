"""`voicepulse probe`, `results` and `demo` with an `influx` sink in the config write to (and read
from) a real influxd; the embedded store is left alone."""

import os
import subprocess
import sys

import pytest

from simulator.process import SimProcess

pytestmark = pytest.mark.system
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vp(*args, cwd, timeout=120):
    env = dict(os.environ, SIM_API_KEY="k", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "voicepulse.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def simulator():
    with SimProcess() as sim:
        yield sim


def config(simulator, influxd, tmp_path, name: str, database: str):
    cfg = tmp_path / name
    cfg.write_text(
        f"""
targets:
  sim-fast:
    url: {simulator.realtime_url()}
    model: sim-fast
    api_key_env: SIM_API_KEY
sinks:
  - type: influx
    api: v1
    url: {influxd.url}
    database: {database}
outbox: {tmp_path}/outbox-{database}
"""
    )
    return cfg


def test_probe_and_demo_write_to_influx_when_configured(simulator, influxd, tmp_path):
    influxd.create_database("cli")
    influxd.create_database("cli_demo")
    cfg = config(simulator, influxd, tmp_path, "voicepulse.yaml", "cli")
    # the demo (~35 s, mostly waiting) runs into its own database while probe and results run
    demo_cfg = config(simulator, influxd, tmp_path, "demo.yaml", "cli_demo")
    env = dict(os.environ, SIM_API_KEY="k", PYTHONPATH=ROOT)
    with open(tmp_path / "demo.out", "w") as dout:
        demo = subprocess.Popen([sys.executable, "-m", "voicepulse.cli", "demo", "--config",
                                 str(demo_cfg), "--duration", "4s", "--load", "3s"],
                                stdout=dout, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=tmp_path)
    try:
        out = vp("probe", "sim-fast", "--config", str(cfg), "--turns", "2", cwd=tmp_path)
        assert out.returncode == 0, out.stderr + out.stdout
        turns = influxd.rows(
            "SELECT ttfa_ms, session_id, outcome FROM turn WHERE target = 'sim-fast'", "cli"
        )
        assert len(turns) == 2 and all(t["outcome"] == "ok" and t["ttfa_ms"] > 0 for t in turns)
        (sess,) = influxd.rows("SELECT ok, turns FROM session", "cli")
        assert (sess["ok"], sess["turns"]) == (1, 2)
        assert not (tmp_path / "voicepulse.db").exists()  # the embedded store was not used
        res = vp("results", "--config", str(cfg), "--since", "1h", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "sim-fast" in res.stdout and "100.0 %" in res.stdout

        assert demo.wait(timeout=120) == 0, (tmp_path / "demo.out").read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)
    (n,) = influxd.rows("SELECT count(ok) FROM session", "cli_demo")
    assert n["count"] > 1
    assert not (tmp_path / "voicepulse.db").exists()
