"""`voicepulse load`: an open-model (or closed-model) voice load test on Locust, bounded in time,
judged by thresholds on exactly merged HDR histograms."""

from __future__ import annotations

import dataclasses
import os
import sys

import click

from voicepulse.configkit import ConfigError, parse_duration

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _usage(message: str):
    from voicepulse.errors import ConfigErrorExit

    return ConfigErrorExit(message)


@click.command("load", context_settings=CONTEXT)
@click.argument("target", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="voicepulse.yaml (targets, scenarios, sinks, `load:` defaults); default "
                   "./voicepulse.yaml if present, else the built-in simulator targets.")
@click.option("--scenario", default=None,
              help="Scenario name from the config, or a scenario file (scenarios/support-call.yaml); "
                   "default: the config's `default` scenario.")
@click.option("--rate", type=float, default=None, metavar="SESSIONS_PER_S",
              help="Open model (the default): sessions arriving per second, whatever the "
                   "target's speed.")
@click.option("--users", type=click.IntRange(1), default=None, metavar="N",
              help="Closed model: N sessions back to back, concurrently.")
@click.option("--stages", default=None, metavar="D:L,...",
              help="Level over time: duration:target pairs, linear ramps, e.g. 10s:5,30s:5,10s:0.")
@click.option("--shape", default=None, metavar="NAME[:k=v,...]",
              help="ramp|step|spike|soak peaking at --rate/--users over --duration; parameters "
                   "e.g. ramp:ramp_up=10s,ramp_down=5s  step:steps=4  spike:at=20s,length=5s,"
                   "base=0.2  soak:ramp_up=30s.")
@click.option("--duration", default=None, metavar="D",
              help="How long sessions arrive (default from config, else 30s); in-flight sessions "
                   "then get up to load.drain (30s) to finish.")
@click.option("--processes", type=click.IntRange(1), default=None, metavar="N",
              help="Locust worker processes on this machine (with --master: remote workers to "
                   "wait for).")
@click.option("--master", is_flag=True, help="Be the Locust master for workers on other machines.")
@click.option("--worker", is_flag=True, help="Be a Locust worker of the master at --master-host.")
@click.option("--master-host", default=None, metavar="H", help="The master's address (--worker).")
@click.option("--web", is_flag=True, help="Show Locust's web UI on http://127.0.0.1:8089 while "
                                          "the run goes (it starts at once and quits after).")
@click.option("--web-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="--web: the UI's port (default 8089, or LOCUST_WEB_PORT).")
@click.option("--master-bind-host", default=None, metavar="ADDR",
              help="--master: the address workers connect to (default every interface, as "
                   "Locust's; 127.0.0.1 accepts workers on this machine only).")
@click.option("--threshold", "thresholds", multiple=True, metavar="EXPR",
              help="Pass/fail rule on the merged results, repeatable: ttfa_ms.p95<800, "
                   "turn_ms.p99<2500, error_rate<0.01, late_starts==0, ttfa_ms.p95[60s]<800; "
                   "append ' abort_on_fail' to stop the run as soon as it fails.")
@click.option("--run-id", default=None, metavar="ID", help="Run id (stored with every point).")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the end-of-run summary as JSON.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Also write a self-contained HTML report of this run.")
@click.option("--find-capacity", is_flag=True,
              help="Search for the breaking point: hold levels from --rate (or --users) "
                   "upwards, each judged by the --threshold bounds on its own window, then "
                   "bisect between the last good and the first bad level.")
@click.option("--step-hold", default=None, metavar="D",
              help="--find-capacity: how long each level is held (default 60s; longer when "
                   "that would give fewer than 30 turns).")
@click.option("--step-factor", type=float, default=2.0, show_default=True, metavar="F",
              help="--find-capacity: each step's level is the last good one times F.")
@click.option("--precision", type=float, default=0.10, show_default=True, metavar="FRACTION",
              help="--find-capacity: bisect until the last good and first bad levels are "
                   "within this fraction of each other.")
@click.option("--max-level", type=float, default=None, metavar="L",
              help="--find-capacity: never hold a level above L.")
@click.option("--max-sessions", type=click.IntRange(1), default=None, metavar="N",
              help="--find-capacity: stop before a step would take the search over N sessions.")
@click.option("--max-cost", type=float, default=None, metavar="USD",
              help="--find-capacity: stop before a step would take the search over USD "
                   "(from the price table, projected from the cost per session so far).")
def load(target, config_path, scenario, rate, users, stages, shape, duration, processes, master,
         worker, master_host, web, web_port, master_bind_host, thresholds, run_id, summary_json, report_path,
         find_capacity, step_hold, step_factor, precision, max_level, max_sessions,
         max_cost) -> None:
    """Load-test TARGET with concurrent voice sessions (Locust), then print percentiles from
    exactly merged HDR histograms, errors, arrivals and the generator's own health.

    \b
    Exit status: 0 all thresholds passed, 1 a threshold failed (or the run was aborted),
    2 a usage or config error.

    \b
    Examples:
      voicepulse load sim-fast --rate 5 --duration 30s
      voicepulse load sim-fast --rate 50 --shape ramp:ramp_up=20s --processes 4 \\
          --threshold 'ttfa_ms.p95<800' --threshold 'error_rate<0.01'
      voicepulse load sim-fast --users 20 --duration 1m
      voicepulse load --worker --master-host 10.0.0.5
    """
    from loadtests import run as lrun

    if worker:
        if master:
            raise _usage("--master and --worker exclude each other")
        if not master_host:
            raise _usage("--worker needs --master-host")
        argv = lrun.locust_argv(None, worker=True, master_host=master_host, processes=processes)
        sys.exit(lrun.run_locust(argv, timeout_s=24 * 3600))
    if master_host and not worker:
        raise _usage("--master-host is for --worker")
    if web_port and not web:
        raise _usage("--web-port is for --web")
    if master_bind_host and not master:
        raise _usage("--master-bind-host is for --master")
    plan = build_plan(target, config_path, scenario, rate, users, stages, shape, duration,
                      thresholds, run_id, summary_json)
    _require_env(config_path, plan.target)
    if not find_capacity and (step_hold or max_level is not None or max_sessions is not None
                              or max_cost is not None):
        raise _usage("--step-hold, --max-level, --max-sessions and --max-cost are for "
                     "--find-capacity")
    if find_capacity:
        from voicepulse import capacity_cli

        if master or web:
            raise _usage("--find-capacity runs its own steps: drop --master/--web")

        cfg = capacity_cli.search_config(plan, step_hold=step_hold, step_factor=step_factor,
                                         precision=precision, max_level=max_level,
                                         max_sessions=max_sessions, max_cost=max_cost,
                                         usage=_usage)
        sys.exit(capacity_cli.run_capacity(plan, cfg, processes=processes,
                                           summary_json=summary_json, report_path=report_path,
                                           config_path=config_path,
                                           run_with_progress=_run_with_progress))
    import tempfile
    import time

    started_ns = time.time_ns()
    with tempfile.TemporaryDirectory(prefix="voicepulse-load-") as tmp:
        path = summary_json or os.path.join(tmp, "summary.json")
        plan.summary_json = os.path.abspath(path)
        plan.status_jsonl = os.path.join(tmp, "status.jsonl")
        argv = lrun.locust_argv(plan, processes=processes, master=master, web=web,
                                web_port=web_port, master_bind_host=master_bind_host)
        limit = lrun.time_limit_s(plan) + (3600 if master else 0)
        rc = _run_with_progress(lrun, argv, limit, plan)
        summary = lrun.read_summary(plan.summary_json)
    if summary is None:
        click.echo(f"voicepulse: the load test ended without a summary (locust exit status {rc})",
                   err=True)
        sys.exit(1)
    click.echo(summary.table())
    if report_path:
        write_report(config_path, summary, report_path, started_ns)
    sys.exit(0 if summary.passed and not summary.aborted else 1)


def write_report(config_path, summary, path: str, started_ns: int) -> None:
    """The run's HTML report, read back from the store it was written to."""
    import time

    from reports import build_report, load_summary_extras
    from voicepulse.wiring import load_or_default, telemetry_for

    query = telemetry_for(load_or_default(config_path)).query()
    try:
        out = build_report(query, path, start_ns=started_ns, end_ns=time.time_ns() + 1,
                           run_id=summary.run_id, **load_summary_extras(summary))
    finally:
        query.close()
    click.echo(f"report: {out}")


def _run_with_progress(lrun, argv, limit, plan) -> int:
    """Run Locust while a live status block (stderr) follows the master's status file."""
    import threading

    from voicepulse.progress import Progress, follow_jsonl

    finished = threading.Event()
    lc = plan.load
    progress = Progress(lc.profile().duration_s, stream=sys.stderr,
                        lag_warn_ms=lc.overload_lag_ms, cpu_warn_pct=lc.overload_cpu_pct)
    t = threading.Thread(target=follow_jsonl, args=(plan.status_jsonl, progress, finished.is_set),
                         kwargs={"timeout_s": limit + 30}, daemon=True)
    t.start()
    try:
        return lrun.run_locust(argv, timeout_s=limit)
    finally:
        finished.set()
        t.join(timeout=5)
        progress.close()


def build_plan(target, config_path, scenario, rate, users, stages, shape, duration, thresholds,
               run_id, summary_json):
    """The run's Plan from the config file and the options (options win). Usage errors exit 2."""
    from loadtests.plan import LoadConfig, Plan, sink_dict
    from loadtests.profile import parse_shape, parse_stages, shape_stages
    from loadtests.thresholds import parse_threshold
    from voicepulse.config import check_playable
    from voicepulse.wiring import load_or_default

    cfg = load_or_default(config_path)
    if rate is not None and users is not None:
        raise _usage("--rate (open model) and --users (closed model) exclude each other")
    if stages and shape:
        raise _usage("--stages and --shape exclude each other")
    if rate is not None and not rate > 0:
        raise _usage(f"--rate: expected sessions per second above zero, got {rate}")
    try:
        name = target or next(iter(cfg.targets), None)
        if name is None:
            raise _usage(f"{cfg.file}: targets: no target configured")
        tgt = cfg.target(name)
        sc = cfg.scenario(scenario)
        check_playable(tgt, sc, "load", cfg.file)
    except ConfigError as exc:
        raise _usage(str(exc)) from None
    lc = dataclasses.replace(cfg.load) if cfg.load is not None else LoadConfig()
    if rate is not None:
        lc.rate, lc.users = rate, None
    if users is not None:
        lc.users, lc.rate = users, None
    if duration is not None:
        try:
            lc.duration_s = parse_duration(duration)
        except ValueError:
            raise _usage(f"--duration: expected a duration like 30s or 5m, got {duration!r}") from None
        if lc.duration_s <= 0:
            raise _usage("--duration: expected a duration above zero")
    try:
        if stages:
            lc.stages, lc.shape = parse_stages(stages), None
        if shape:
            lc.shape, lc.shape_params = parse_shape(shape)
            lc.stages = None
        if lc.shape:
            shape_stages(lc.shape, lc.level, lc.duration_s, lc.shape_params)
    except ValueError as exc:
        raise _usage(f"--{'stages' if stages else 'shape'}: {exc}") from None
    if thresholds:
        for t in thresholds:
            try:
                parse_threshold(t)
            except ValueError as exc:
                raise _usage(f"--threshold: {exc}") from None
        lc.thresholds = list(thresholds)
    return Plan(target=tgt, scenario=sc, load=lc, run_id=run_id or "",
                sinks=[sink_dict(s) for s in cfg.sinks], store=os.path.abspath(cfg.store),
                outbox=os.path.abspath(cfg.outbox), summary_json=summary_json)


def _require_env(config_path, target) -> None:
    """The sinks' and the target's secrets are in the environment before anything starts."""
    from voicepulse import config as cfgmod
    from voicepulse.wiring import load_or_default

    cfg = load_or_default(config_path)
    try:
        cfgmod.require_env(cfg, [target])
    except ConfigError as exc:
        raise _usage(str(exc)) from None
