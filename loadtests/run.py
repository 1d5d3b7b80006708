"""Running Locust for a plan: the command line it needs, and `run_load`, the programmatic entry
(`voicepulse demo` uses it) that runs a bounded load test and returns its `LoadSummary`.

Locust runs as a child process: importing locust monkey-patches the whole interpreter (gevent),
which must not happen to the CLI or a caller's process. The plan travels as `--vp-plan` JSON,
which Locust forwards to every worker, local or remote.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import orjson

from loadtests.plan import Plan
from loadtests.summary import LoadSummary

LOCUSTFILE = str(Path(__file__).with_name("locustfile.py"))
ROOT = str(Path(__file__).resolve().parents[1])


def locust_argv(plan: Plan | None, *, processes: int | None = None, master: bool = False,
                worker: bool = False, master_host: str | None = None, web: bool = False,
                expect_workers: int | None = None, web_port: int | None = None,
                master_bind_host: str | None = None, loglevel: str = "WARNING") -> list[str]:
    """`python -m locust ...` for this plan and role (a worker needs no plan: it gets it from
    the master with the spawn message)."""
    argv = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--loglevel", loglevel]
    if worker:
        argv += ["--worker", "--master-host", master_host or "127.0.0.1"]
        if processes:
            argv += ["--processes", str(processes)]
        return argv
    assert plan is not None
    argv += ["--vp-plan", plan.to_json()]
    if web:
        argv += ["--autostart", "--autoquit", "10", "--web-host", "127.0.0.1"]
        if web_port:
            argv += ["--web-port", str(web_port)]
    else:
        argv += ["--headless", "--only-summary"]
    if master:  # remote workers connect to :5557 on every interface (Locust's default)
        bind = ["--master-bind-host", master_bind_host] if master_bind_host else []
        return argv + ["--master", *bind, "--expect-workers",
                       str(expect_workers or processes or 1)]
    if processes:
        # local workers: the master listens on loopback only, on a free port, so two runs on
        # one machine never collide on Locust's default 5557
        port = str(free_port())
        argv += ["--processes", str(processes), "--master-bind-host", "127.0.0.1",
                 "--master-bind-port", port, "--master-port", port]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ, VOICEPULSE_WRAPPED="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def time_limit_s(plan: Plan) -> float:
    """How long the child may take at most: arrivals + drain + start-up and shutdown slack."""
    lc = plan.load
    return lc.profile().duration_s + lc.drain_s + 60.0


def run_locust(argv: list[str], timeout_s: float, *, quiet: bool = False,
               log: IO[bytes] | None = None) -> int:
    """Run Locust; its output goes to our stderr (our stdout is the summary), to `log` when
    given, or nowhere when quiet. Bounded."""
    out = log if log is not None else subprocess.DEVNULL if quiet else sys.stderr
    proc = subprocess.Popen(argv, env=child_env(), stdout=out, stderr=out, cwd=ROOT)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        return 124
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        raise


def read_summary(path: str) -> LoadSummary | None:
    try:
        return LoadSummary.from_dict(orjson.loads(Path(path).read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


def run_load(plan: Plan, *, processes: int | None = None, quiet: bool = True,
             timeout_s: float | None = None) -> LoadSummary:
    """Run a bounded load test for `plan` and return its summary (raises RuntimeError when
    Locust ended without one)."""
    with tempfile.TemporaryDirectory(prefix="voicepulse-load-") as tmp:
        keep = plan.summary_json
        path = keep or os.path.join(tmp, "summary.json")
        plan.summary_json = path
        with tempfile.TemporaryFile() as log:
            try:
                rc = run_locust(locust_argv(plan, processes=processes),
                                timeout_s or time_limit_s(plan), quiet=quiet,
                                log=log if quiet else None)
            finally:
                plan.summary_json = keep
            summary = read_summary(path)
            if summary is None:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"the load test ended without a summary (locust exit status "
                                   f"{rc}){': ' + tail if tail else ''}")
        return summary
