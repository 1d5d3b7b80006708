"""`voicepulse alerts check` exits 2 on a config error, as a real process: one stderr line naming
the file and key, no table on stdout, and nothing evaluated (the store is never opened). So a CI
gate can tell "the config is broken" (2) from "an alert fires" (1) and "the store is down" (3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
targets:
  t1: {url: "ws://127.0.0.1:9/v1/realtime", model: m, api_key_env: SIM_API_KEY}
store: %(store)s
slos:
  - {name: t1-availability, target: t1, kind: availability, objective: 99}
alerts:
  - {name: t1-p95, kind: threshold, target: t1, expr: ttfa_ms.p95 > 900, over: 10m}
"""


def check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SIM_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "voicepulse", "alerts", "check", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vp.yaml"
    path.write_text(text % {"store": tmp_path / "store.db"})
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (("expr: ttfa_ms.p95 > 900", "expr: ttfa_ms.p95 >> 900"),
     "vp.yaml: alerts[0].expr: expected `metric.stat OP number`"),
    (("over: 10m}", "over: 10m, severty: page}"), "vp.yaml: alerts[0].severty: unknown key"),
    (("target: t1, expr", "target: t9, expr"), "vp.yaml: alerts[0].target:"),
    (("objective: 99}", "objective: 150}"), "vp.yaml: slos[0].objective:"),
    (("slos:", "slos: [\n"), "vp.yaml: not valid YAML at line"),
])
def test_config_errors_exit_2(tmp_path, edit, message) -> None:
    cfg = write(tmp_path, GOOD.replace(*edit))
    r = check(tmp_path, "--config", str(cfg))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""  # no table: nothing was evaluated
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"voicepulse: {cfg}"), r.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "store.db").exists()


def test_no_rules_no_file_no_config_exit_2(tmp_path) -> None:
    cfg = tmp_path / "bare.yaml"
    cfg.write_text('targets:\n  t1: {url: "ws://127.0.0.1:9/v1/realtime", model: m}\n')
    cases = [
        (("--config", str(cfg)), f"voicepulse: {cfg}: slos/alerts: no rules to check"),
        (("--config", str(tmp_path / "nope.yaml")), f"voicepulse: {tmp_path}/nope.yaml: "
                                                    "file not found"),
        ((), "voicepulse: no config: pass --config FILE (or put a voicepulse.yaml here)"),
    ]
    for args, message in cases:
        r = check(tmp_path, *args)  # cwd has no voicepulse.yaml
        assert (r.returncode, r.stdout, r.stderr.strip()) == (2, "", message), args


def test_a_valid_config_evaluates_and_exits_0(tmp_path) -> None:
    """The same config without the error: the table, every rule inactive on an empty store."""
    r = check(tmp_path, "--config", str(write(tmp_path, GOOD)))
    assert r.returncode == 0, r.stderr
    rows = [line.split()[0] for line in r.stdout.splitlines()[1:-1]]
    assert rows == ["t1-availability:page-1h", "t1-availability:page-6h",
                    "t1-availability:ticket-3d", "t1-p95"]
    assert r.stdout.rstrip().endswith("4 rules, 0 firing")
