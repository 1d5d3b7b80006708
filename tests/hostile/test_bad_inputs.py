"""Table-driven bad configs and CLI options beyond targets/scenarios (tests/cli/test_config.py
has those): probes, slos, alerts, notifiers, status, service, time_scale, load, sinks.

Each one is a single line naming the file and the key, exit status 2, and nothing
half-started: no store file, no outbox directory, no process left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from voicepulse.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

T = "targets: {a: {url: 'ws://127.0.0.1:1/v1/realtime', model: m}}\n"
P = "probes:\n  - {target: a, every: 10s}\n"

BAD = [
    # (yaml, the key the message names, words of the expectation)
    (T + "probes:\n  - {target: a, every: 10s, colour: red}\n", "probes[0].colour", "unknown key"),
    ("targets: {a: {url: 'ws://127.0.0.1:1/v1/realtime', model: m, prices: {audo_in: 3}}}\n",
     "targets.a.prices.audo_in", "unknown key (known here: active_per_min, audio_cached"),
    ("targets: {a: {url: 'ws://127.0.0.1:1/v1/realtime', model: m, prices: {audio_in: -3}}}\n",
     "targets.a.prices.audio_in", "at least 0"),
    (T + "probes:\n  - {target: a, every: 0s}\n", "probes[0].every", "above zero"),
    (T + "probes:\n  - {target: a, every: -5s}\n", "probes[0].every", "duration"),
    (T + "probes:\n  - {target: a, every: soon}\n", "probes[0].every", "duration"),
    (T + "probes:\n  - {target: a}\n", "probes[0]", "exactly one of"),
    (T + "probes:\n  - {target: a, every: 1m, cron: '* * * * *'}\n", "probes[0]", "exactly one"),
    (T + "probes:\n  - {target: a, cron: '*/0 * * * *'}\n", "probes[0].cron", "crontab"),
    (T + "probes:\n  - {target: a, cron: '61 * * * *'}\n", "probes[0].cron", "crontab"),
    (T + "probes:\n  - {target: a, cron: '* * *'}\n", "probes[0].cron", "crontab"),
    (T + "probes:\n  - {target: a, cron: 5}\n", "probes[0].cron", "string"),
    (T + "probes:\n  - {target: b, every: 10s}\n", "probes[0].target", "no such target"),
    (T + "probes:\n  - {target: a, scenario: nope, every: 10s}\n", "probes[0].scenario",
     "no such scenario"),
    (T + "probes:\n  - {target: a, every: 10s, jitter: -1s}\n", "probes[0].jitter",
     "expected a duration like 30s, 5m, 1h or 3d, got '-1s'"),
    (T + "probes: {target: a}\n", "probes.target", "mapping"),
    (T + "probes:\n  - {target: a, every: 10s}\n  - {target: a, every: 20s}\n", "probes[1]",
     "duplicate"),
    (T + P + "slos:\n  - {name: s, target: a, kind: availability, objective: 100}\n",
     "slos[0].objective", "below 100"),
    (T + P + "slos:\n  - {name: s, target: a, kind: availability, objective: high}\n",
     "slos[0].objective", "expected a percentage like 15%, got 'high'"),
    (T + P + "slos:\n  - {name: s, target: a, kind: availability, objective: -5}\n",
     "slos[0].objective", "expected a percentage from 0 to 100, got -5"),
    (T + P + "slos:\n  - {name: s, target: a, kind: uptime, objective: 99}\n", "slos[0].kind",
     "availability"),
    (T + P + "slos:\n  - {name: s, target: a, kind: availability, objective: 99, period: 0s}\n",
     "slos[0].period", "above zero"),
    (T + P + "slos:\n  - {name: s, target: a, kind: latency, objective: 99, below_ms: -1}\n",
     "slos[0].below_ms", "above zero"),
    (T + P + "alerts:\n  - {name: r, kind: threshold, target: a, expr: 'ttfa_ms.p95 >> 9'}\n",
     "alerts[0].expr", "metric.stat OP number"),
    (T + P + "alerts:\n  - {name: r, kind: threshold, target: a, expr: 'ttfa_ms.p42 > 9'}\n",
     "alerts[0].expr", "unknown statistic"),
    (T + P + "alerts:\n  - {name: r, kind: threshold, target: a, expr: 'error_rate.p95 > 1'}\n",
     "alerts[0].expr", "no statistic"),
    (T + P + "alerts:\n  - {name: r, kind: threshold, target: a, expr: 'ttfa_ms.p95 > 9',"
     " over: -1m}\n", "alerts[0].over", "duration"),
    (T + P + "alerts:\n  - {name: r, kind: magic, target: a}\n", "alerts[0].kind", "threshold"),
    (T + P + "alerts:\n  - {name: r, kind: regression, target: a, p_value: 2}\n",
     "alerts[0].p_value", "at most"),
    (T + P + "alerts:\n  - {name: r, kind: regression, target: a, min_samples: 1}\n",
     "alerts[0].min_samples", "at least"),
    (T + P + "notifiers:\n  - {type: webhook, url_env: VP_SURELY_UNSET_HOOK}\n",
     "notifiers[0].url_env", "VP_SURELY_UNSET_HOOK"),
    (T + P + "notifiers:\n  - {type: webhook, url_env: 'http://x/hook'}\n",
     "notifiers[0].url_env", "environment variable"),
    (T + P + "notifiers:\n  - {type: pager}\n", "notifiers[0].type", "webhook"),
    (T + P + "notifiers:\n  - {type: log, retries: -1}\n", "notifiers[0].retries", "at least"),
    (T + P + "notifiers:\n  - {type: log, timeout: 0s}\n", "notifiers[0].timeout", "above zero"),
    (T + P + "status: {port: 70000}\n", "status.port", "at most"),
    (T + P + "status: {port: http}\n", "status.port", "whole number"),
    (T + P + "status: {bind: x}\n", "status.bind", "unknown key"),
    (T + P + "service: {workers: 0}\n", "service.workers", "at least 1"),
    (T + P + "service: {evaluate_every: 0s}\n", "service.evaluate_every", "above zero"),
    (T + P + "time_scale: 0\n", "time_scale", "above zero"),
    (T + P + "time_scale: -1\n", "time_scale", "above zero"),
    (T + P + "agent: [1]\n", "agent", "string"),
    ("load: {rate: -1}\n", "load.rate", "above zero"),
    ("load: {rate: 0}\n", "load.rate", "above zero"),
    ("load: {rate: lots}\n", "load.rate", "number"),
    ("load: {users: 0}\n", "load.users", "at least 1"),
    ("load: {rate: 5, users: 5}\n", "load.users", "exclude"),
    ("load: {rate: 5, duration: 0s}\n", "load.duration", "above zero"),
    ("load: {rate: 5, thresholds: ['ttfa_ms.p95<<800']}\n", "load.thresholds[0]",
     "threshold 'ttfa_ms.p95<<800': expected e.g. ttfa_ms.p95<800"),
    ("load: {rate: 5, thresholds: ['nonsense']}\n", "load.thresholds[0]",
     "threshold 'nonsense': expected e.g. ttfa_ms.p95<800"),
    ("load: {rate: 5, thresholds: [42]}\n", "load.thresholds[0]", "expression"),
    ("load: {rate: 5, overload_cpu_pct: 150}\n", "load.overload_cpu_pct", "at most 100"),
    ("load: {rate: 5, shape: zigzag}\n", "load.shape", "ramp"),
    ("load: {rate: 5, stages: 'x:y'}\n", "load.stages",
     "stage 'x:y': expected DURATION:TARGET like 30s:10"),
    ("load: {rate: 5, arrivals: bursty}\n", "load.arrivals",
     "expected one of constant | poisson, got 'bursty'"),
    ("load: {rate: 5, warp: 9}\n", "load.warp", "unknown key"),
    ("sinks:\n  - {type: influx, api: v1, url: 'http://x', database: d, token_env: 'my token'}\n",
     "sinks[0].token_env", "environment variable"),
    ("sinks:\n  - {type: influx, api: v2, url: 'http://x', org: o, bucket: b, gzip: maybe}\n",
     "sinks[0].gzip", "expected true or false, got 'maybe'"),
    ("sinks: {type: influx}\n", "sinks.type", "mapping"),
]


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text + f"store: {tmp_path / 'store.db'}\noutbox: {tmp_path / 'outbox'}\n")
    return p


def assert_one_line(output: str, path: Path, key: str, expect: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert str(path) in lines[0], lines[0]
    assert f": {key}: " in lines[0], lines[0]
    assert expect in lines[0], lines[0]


def assert_nothing_started(tmp_path: Path) -> None:
    assert not (tmp_path / "store.db").exists(), "a store file was created"
    assert not (tmp_path / "outbox").exists(), "an outbox directory was created"


@pytest.mark.parametrize(("text", "key", "expect"), BAD, ids=[b[1] for b in BAD])
def test_config_check(tmp_path, text, key, expect):
    path = write(tmp_path, text)
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 2, out.output
    assert_one_line(out.output, path, key, expect)
    assert_nothing_started(tmp_path)


def cli(args: list[str], tmp_path: Path, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VP_")}
    e.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "voicepulse.cli", *args], cwd=str(tmp_path),
                          env=e, capture_output=True, text=True, timeout=timeout)


def no_process_mentions(marker: str) -> bool:
    """No live process (a Locust worker, a simulator...) was started with `marker` in argv."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in a for a in p.info["cmdline"] or ()):
                    left.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if not left:
            return True
        time.sleep(0.2)
    return False


# one representative per section through the real commands (separate processes)
SERVE_BAD = [BAD[1], BAD[7], BAD[16], BAD[22], BAD[29], BAD[34], BAD[39]]


@pytest.mark.parametrize(("text", "key", "expect"), SERVE_BAD, ids=[b[1] for b in SERVE_BAD])
def test_serve_refuses_bad_config(tmp_path, text, key, expect):
    path = write(tmp_path, text)
    t0 = time.monotonic()
    p = cli(["serve", "--config", str(path), "--duration", "30s"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert time.monotonic() - t0 < 20  # it did not start serving
    assert "serving:" not in p.stderr
    assert_one_line(p.stderr, path, key, expect)
    assert_nothing_started(tmp_path)
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.parametrize(("args", "key", "expect"), [
    (["--rate", "-1"], "--rate", "expected sessions per second above zero, got -1"),
    (["--rate", "0"], "--rate", "expected sessions per second above zero, got 0"),
    (["--users", "0"], "--users", "0 is not in the range x>=1"),  # click's own range check
    (["--rate", "2", "--users", "2"], "--rate",
     "--rate (open model) and --users (closed model) exclude each other"),
    (["--rate", "2", "--duration", "0s"], "--duration", "expected a duration above zero"),
    (["--rate", "2", "--duration", "soon"], "--duration",
     "expected a duration like 30s or 5m, got 'soon'"),
    (["--rate", "2", "--threshold", "ttfa_ms.p95<<800"], "--threshold",
     "threshold 'ttfa_ms.p95<<800': expected e.g. ttfa_ms.p95<800"),
    (["--rate", "2", "--threshold", "error_rate<"], "--threshold",
     "threshold 'error_rate<': expected e.g. ttfa_ms.p95<800"),
    (["--rate", "2", "--shape", "zigzag"], "--shape",
     "shape 'zigzag': expected one of ramp, step, spike, soak"),
    (["--rate", "2", "--stages", "x:y"], "--stages",
     "stage 'x:y': expected DURATION:TARGET like 30s:10"),
    (["--rate", "2", "--web-port", "8090"], "--web-port", "--web-port is for --web"),
    (["--rate", "2", "--web", "--web-port", "0"], "--web-port", "0 is not in the range"),
    (["--rate", "2", "--master-bind-host", "127.0.0.1"], "--master-bind-host",
     "--master-bind-host is for --master"),
])
def test_load_refuses_bad_options(tmp_path, args, key, expect):
    cfg = write(tmp_path, T.replace("a:", "sim-fast:"), "ok.yaml")
    marker = str(tmp_path)
    p = cli(["load", "sim-fast", "--config", str(cfg), *args], tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    text = p.stderr.strip() or p.stdout.strip()
    # the line naming the option says what was expected
    named = [line for line in text.splitlines() if key in line]
    assert named and expect in named[-1], text
    assert_nothing_started(tmp_path)
    assert no_process_mentions(marker), "a process of the refused run is still alive"


def test_load_refuses_bad_load_section(tmp_path):
    path = write(tmp_path, T.replace("a:", "sim-fast:") + "load: {rate: -3}\n")
    p = cli(["load", "sim-fast", "--config", str(path)], tmp_path)
    assert p.returncode == 2, p.stderr
    assert_one_line(p.stderr, path, "load.rate", "above zero")
    assert_nothing_started(tmp_path)
    assert no_process_mentions(str(tmp_path))


def test_probe_with_missing_key_env_starts_nothing(tmp_path):
    path = write(tmp_path, "targets: {a: {url: 'ws://127.0.0.1:1/v1', model: m,"
                           " api_key_env: VP_SURELY_UNSET_KEY}}\n")
    p = cli(["probe", "a", "--config", str(path)], tmp_path)
    assert p.returncode == 2, p.stderr
    assert_one_line(p.stderr, path, "targets.a.api_key_env", "VP_SURELY_UNSET_KEY")
    assert_nothing_started(tmp_path)


@pytest.mark.slow
def test_unreadable_config_is_one_line(tmp_path):
    d = tmp_path / "dir.yaml"
    d.mkdir()
    p = cli(["serve", "--config", str(d)], tmp_path)  # click's usage error
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "is a directory" in p.stderr
    missing = tmp_path / "missing.yaml"
    p = cli(["serve", "--config", str(missing)], tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"voicepulse: {missing}: file not found"
    assert not list(tmp_path.glob("*.db"))


# ---- bugs this file found, fixed: non-UTF-8 files, NaN/inf, unset secrets at start --------------


def test_non_utf8_config_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"agent: caf\xe9\n")
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 2, out.output
    assert str(path) in out.output and "Traceback" not in out.output


@pytest.mark.parametrize(("text", "key"), [("load: {rate: .nan}\n", "load.rate"),
                                           (T + P + "time_scale: .nan\n", "time_scale"),
                                           ("load: {rate: .inf}\n", "load.rate")])
def test_nan_and_inf_are_refused(tmp_path, text, key):
    path = write(tmp_path, text)
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 2, out.output
    assert f": {key}: " in out.output


@pytest.mark.parametrize("command", ["serve", "probe"])
def test_missing_sink_token_env_starts_nothing(tmp_path, command):
    path = write(tmp_path, T + P + "sinks: [{type: influx, api: v1, url: 'http://127.0.0.1:1',"
                                   " database: d, token_env: VP_SURELY_UNSET_TOKEN}]\n")
    args = [command, "--config", str(path)] + (["--duration", "3s"] if command == "serve"
                                                else ["a"])
    p = cli(args, tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert_one_line(p.stderr, path, "sinks[0].token_env", "VP_SURELY_UNSET_TOKEN")
    assert_nothing_started(tmp_path)


def test_serve_with_missing_target_key_env_starts_nothing(tmp_path):
    path = write(tmp_path, "targets: {a: {url: 'ws://127.0.0.1:1/v1', model: m,"
                           " api_key_env: VP_SURELY_UNSET_KEY}}\n" + P + "status: {port: 0}\n")
    p = cli(["serve", "--config", str(path), "--duration", "3s"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert_one_line(p.stderr, path, "targets.a.api_key_env", "VP_SURELY_UNSET_KEY")
    assert_nothing_started(tmp_path)
