"""`voicepulse demo`: the whole pipeline on embedded defaults, bounded in time.

It starts the reference simulator in a child process (its own CPU and GIL, so the probes'
timing is not disturbed by the server), probes two simulated targets with different latency
profiles, stores every result and prints the summary a user would later get from
`voicepulse results`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
import time

import click

from probes.spec import Scenario
from voicepulse.term import paint

DEMO_MODELS = ("sim-fast", "sim-slow")


class SimulatorProcess:
    """The simulator as a child process on free loopback ports."""

    def __init__(self, *args: str, start_timeout: float = 15.0):
        cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", "0",
               "--control-port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.ws_url = self.control_url = None
        deadline = time.monotonic() + start_timeout
        lines: list[str] = []
        while time.monotonic() < deadline and not (self.ws_url and self.control_url):
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if m := re.match(r"listening (ws\S+)", line):
                self.ws_url = m.group(1)
            if m := re.match(r"control (http\S+)", line):
                self.control_url = m.group(1)
        if not (self.ws_url and self.control_url):
            self.stop()
            raise RuntimeError("the simulator did not start: " + " | ".join(lines[-5:]))
        # keep draining its output so a chatty simulator never blocks on a full pipe
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def realtime_url(self) -> str:
        return f"{self.ws_url}/v1/realtime"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def step(n: int, total: int, text: str) -> None:
    click.echo(paint(f"[{n}/{total}] ", "bold") + text)


def probe_loop(target, scenario: Scenario, until: float, recorder, results: list, lock) -> None:
    """Probe one target back to back until the deadline (the scheduler does this on a clock)."""
    from probes.session import run_session

    while time.monotonic() < until:
        r = run_session(target, scenario, kind="probe", agent="demo")
        recorder.record(r)
        with lock:
            results.append(r)


def run_demo(cfg, *, seconds: float, store: str | None) -> int:
    from telemetry.recorder import Recorder
    from telemetry.sinks import build_sink
    from voicepulse.cli import query_summary
    from voicepulse.config import sim_target
    from voicepulse.render import summary_table

    total = 3
    os.environ.setdefault("SIM_API_KEY", "demo-key")
    step(1, total, "starting the reference simulator (profiles sim-fast and sim-slow)")
    with SimulatorProcess() as sim:
        click.echo(f"      simulator at {sim.ws_url}, control API at {sim.control_url}")
        targets = [sim_target(m, sim.realtime_url()) for m in DEMO_MODELS]
        scenario = dataclasses.replace(cfg.scenario(None), turns=2)
        store_path = store or cfg.store
        where = "InfluxDB" if cfg.sinks else f"the embedded store {store_path}"
        step(2, total, f"probing {', '.join(t.name for t in targets)} for {seconds:.0f} s "
                       f"into {where}")
        sink = build_sink(cfg.sinks, store_path=store_path, outbox_dir=cfg.outbox)
        recorder = Recorder(sink)
        results: list = []
        lock = threading.Lock()
        started = time.time()
        until = time.monotonic() + seconds
        workers = [threading.Thread(target=probe_loop, args=(t, scenario, until, recorder,
                                                             results, lock), daemon=True)
                   for t in targets]
        for w in workers:
            w.start()
        shown = 0
        while any(w.is_alive() for w in workers):
            time.sleep(0.5)
            with lock:
                new = results[shown:]
                shown = len(results)
            for r in new:
                ttfa = [t.ttfa_ms for t in r.turns if t.ttfa_ms is not None]
                figure = f"ttfa {min(ttfa):.0f}-{max(ttfa):.0f} ms" if ttfa else r.error[:60]
                colour = "green" if r.ok else "red"
                click.echo(f"      {r.target:<9} {paint(r.outcome, colour):<8} {figure}")
        recorder.close(timeout=15.0)
    step(3, total, "summary of this run, from the store")
    rows = query_summary(cfg, store_path if not cfg.sinks else None,
                         since_s=time.time() - started + 1, kind="probe")
    click.echo(summary_table(rows))
    click.echo(f"\nsee it again with: voicepulse results --store {store_path} --since 1h")
    return 0 if results else 1
