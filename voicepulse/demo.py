"""`voicepulse demo`: the whole pipeline on embedded defaults, bounded in time.

It starts the reference simulator in a child process (its own CPU and GIL, so the probes'
timing is not disturbed by the server), runs the probe service against two simulated targets
with different latency profiles (and the same simulator speaking Gemini Live and GPT-Live),
makes one of them slower half way through so the regression alert fires, runs a short load
test, then prints the summary a user would later get from `voicepulse results` and writes an
HTML report.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import click

from probes.spec import Scenario, Target
from simulator.process import SimProcess
from voicepulse.term import paint

DEMO_MODELS = ("sim-fast", "sim-slow")


def step(n: int, total: int, text: str) -> None:
    click.echo(paint(f"[{n}/{total}] ", "bold") + text, nl=True)


DEMO_SCENARIO = Scenario(name="default", turns=2, utterance_s=0.5, trailing_silence_s=0.5,
                         pause_s=0.1)
#: GPT-Live: one turn (its replies are paced in real time and end after quiet_ms of quiet
#: output), so a session stays well under the 4 s probe interval
LIVE_MODEL = "sim-live-demo"  # priced per second like gpt-live-1 (probes/prices.py)
LIVE_SCENARIO = Scenario(name="live", turns=1, utterance_s=0.5, quiet_ms=500.0)


def run_demo(cfg, *, seconds: float, store: str | None, load_s: float = 10.0,
             report: str | None = "voicepulse-demo.html") -> int:
    """Probe service with a regression half way through, a short load run, summary, report."""
    from loadtests.plan import LoadConfig, Plan, sink_dict
    from loadtests.run import run_load
    from scheduler.presets import demo_service_config
    from scheduler.service import ProbeService
    from scheduler.source import TelemetrySource
    from voicepulse.config import sim_target
    from voicepulse.render import summary_table
    from voicepulse.wiring import telemetry_for

    total = 7
    # skipped runs are counted and shown by the service; its per-skip warning is noise here
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    os.environ.setdefault("SIM_API_KEY", "local-simulator")
    tel = telemetry_for(cfg, store)
    started_ns = time.time_ns()
    step(1, total, "starting the reference simulator (OpenAI Realtime profiles sim-fast and "
                   "sim-slow, a Gemini Live and a GPT-Live endpoint)")
    with SimProcess() as sim:
        click.echo(f"      simulator at {sim.ws_url}, control API at {sim.control_url}")
        targets = {m: sim_target(m, sim.realtime_url()) for m in DEMO_MODELS}
        # the same simulator speaking Gemini Live, with its default latency profile
        targets["gemini-sim"] = Target(name="gemini-sim", url=sim.gemini_url(), model="sim-live",
                                       provider="gemini", api_key_env="SIM_API_KEY")
        # and GPT-Live (/v1/live/sessions): audible-onset TTFA, quiet-based turn end
        # (a steady TTFA: its regression rule has nothing to find)
        sim.set_profile(model=LIVE_MODEL, ttfa_ms={"dist": "fixed", "value": 300}, reply_s=0.8)
        targets["gpt-live-sim"] = Target(name="gpt-live-sim", url=sim.ws_url + "/v1/live/sessions",
                                         model=LIVE_MODEL, provider="openai-live",
                                         api_key_env="SIM_API_KEY")
        service_cfg = demo_service_config(list(targets), seconds, every_s=4.0)
        service_cfg.probes = [dataclasses.replace(j, scenario="live")
                              if j.target == "gpt-live-sim" else j for j in service_cfg.probes]
        step(2, total, f"probe service: {', '.join(targets)} every 4 s for {seconds:.0f} s "
                       f"into {tel.where}; alert rules: availability SLO burn rate, TTFA regression")
        events: list = []
        recorder = tel.recorder()
        query = tel.query()
        service = ProbeService(service_cfg, targets,
                               {"default": DEMO_SCENARIO, "live": LIVE_SCENARIO}, recorder,
                               TelemetrySource(query), extra_listeners=[events.append]).start()
        try:
            watch_service(service, events, seconds, inject_at=seconds / 2,
                          inject=lambda: sim.set_profile(model="sim-fast", ttfa_scale=2.0))
        finally:
            service.stop(timeout=10.0, close_recorder=False)
            recorder.close(timeout=15.0)

        step(3, total, f"load test: open model, 2 sessions/s for {load_s:.0f} s against sim-slow")
        plan = Plan(target=targets["sim-slow"], scenario=DEMO_SCENARIO,
                    load=LoadConfig(rate=2.0, duration_s=load_s, drain_s=15.0),
                    sinks=[sink_dict(s) for s in tel.sinks],
                    store=None if tel.sinks else str(Path(tel.store).resolve()),
                    outbox=str(Path(tel.outbox).resolve()))
        summary = run_load(plan)
        click.echo("\n".join("      " + line for line in summary.table().splitlines()))

        step(4, total, "summary of the probes, from the store")
        rows = query.summary(start_ns=started_ns, kind="probe")
        click.echo(summary_table(rows))
        step(5, total, "alerts")
        fired = [e for e in events if getattr(e, "state", "") == "firing"]
        for e in events:
            click.echo(f"      {e.state:<9} {e.rule} ({e.target}): {e.message}")
        if not fired:
            click.echo("      no alert fired")

        step(6, total, "voice scenarios against sim-fast: a support call with a tool lookup and "
                       "a caller who talks over the answer")
        run_scenarios(tel, sim, targets["sim-fast"])
    if report:
        from reports import build_report, load_summary_extras

        step(7, total, "HTML report")
        out = build_report(query, report, start_ns=started_ns, end_ns=time.time_ns() + 1,
                           title="VoicePulse demo", **load_summary_extras(summary))
        click.echo(f"      wrote {out}")
    query.close()
    again = "--config FILE" if tel.sinks else f"--store {tel.store}"
    click.echo(f"\nsee it again with: voicepulse results {again} --since 1h")
    return 0 if rows else 1


#: the example scenarios the demo plays (shipped in the repository's scenarios/ folder)
DEMO_SCENARIOS = ("support-call.yaml", "interrupting-caller.yaml")
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"


def run_scenarios(tel, sim, target: Target) -> None:
    """Play the example scenarios at the same time, store them (in `tel`, the demo's telemetry)
    and print their timelines."""
    import threading

    from probes.session import run_session
    from voicepulse.config import load_scenario_file
    from voicepulse.configkit import ConfigError
    from voicepulse.render import probe_timeline

    files = [SCENARIO_DIR / f for f in DEMO_SCENARIOS if (SCENARIO_DIR / f).is_file()]
    if not files:
        click.echo(f"      (no example scenarios in {SCENARIO_DIR}: skipped)")
        return
    try:  # the examples speak: espeak-ng, else the espeakng-loader wheel pip installed
        scenarios = [load_scenario_file(f) for f in files]
    except ConfigError as e:
        click.echo(f"      skipped: {e}")
        return
    # the simulator stops a reply ~180 ms after it hears the caller, as real services do
    sim.set_profile(model=target.model, cancel_delay_ms={"dist": "lognormal", "median": 180,
                                                         "sigma": 0.15, "floor": 80})
    results: list = [None] * len(files)

    def play(i: int) -> None:
        results[i] = run_session(target, scenarios[i], kind="probe")

    threads = [threading.Thread(target=play, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder = tel.recorder()
    for r in results:
        recorder.record(r)
        click.echo("\n".join("      " + line for line in probe_timeline(r).splitlines()))
    recorder.close(timeout=15.0)


def watch_service(service, events: list, seconds: float, *, inject_at: float, inject) -> None:
    """Show each probe and alert as it happens; inject the regression at `inject_at`."""
    t0 = time.monotonic()
    injected = False
    seen: dict[str, int] = {}
    shown_events = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        if not injected and elapsed >= inject_at:
            inject()
            injected = True
            click.echo(paint(f"      t={elapsed:4.0f}s  regression injected: sim-fast TTFA "
                             "x2 via the simulator's control API", "yellow"))
        for state in service.target_states().values():
            if state.runs != seen.get(state.target) and state.last:
                seen[state.target] = state.runs
                last = state.last
                ok = last["outcome"] == "ok"
                figure = (f"ttfa {last['ttfa_ms']:.0f} ms" if ok and last["ttfa_ms"] is not None
                          else last["error"][:60])
                click.echo(f"      t={elapsed:4.0f}s  {state.target:<12} "
                           f"{paint(last['outcome'], 'green' if ok else 'red'):<8} {figure}")
        for e in events[shown_events:]:
            click.echo(paint(f"      t={elapsed:4.0f}s  alert {e.state}: {e.rule} ({e.target})",
                             "red" if e.state == "firing" else "blue"))
        shown_events = len(events)
        time.sleep(0.25)
