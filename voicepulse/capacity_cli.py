"""`voicepulse load --find-capacity`: the CLI side of the capacity search (loadtests.capacity
decides, loadtests.capacity_run runs the steps). Prints a line per step as it goes (stderr), the
step table and the finding (stdout), writes `--summary-json` and the report.

Exit status: 0 a breaking point was found, or every bound held up to a budget guard or
--max-level (then the finding is a floor and says so); 1 no finding (the generator was
overloaded, the start level already broke, a step ended without a summary).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import click
import orjson


def search_config(plan, *, step_hold, step_factor, precision, max_level, max_sessions,
                  max_cost, usage):
    from loadtests.capacity import SearchConfig
    from voicepulse.configkit import parse_duration

    lc = plan.load
    try:
        hold = parse_duration(step_hold) if step_hold else 60.0
    except ValueError:
        raise usage(f"--step-hold: expected a duration like 60s, got {step_hold!r}") from None
    if hold <= 0:
        raise usage("--step-hold: expected a duration above zero")
    if not lc.thresholds:
        raise usage("--find-capacity needs at least one --threshold (or load.thresholds): "
                    "the bounds a level must hold, e.g. --threshold 'error_rate<0.01'")
    if lc.stages or lc.shape:
        raise usage("--find-capacity sets the level itself: drop --stages/--shape")
    if max_cost is not None:
        _require_price(plan.target, usage)
    closed = lc.model == "closed"
    cfg = SearchConfig(start=lc.level, integer=closed, factor=step_factor,
                       precision=precision, hold_s=hold, max_level=max_level,
                       max_sessions=max_sessions, max_cost_usd=max_cost,
                       unit="users" if closed else "sessions/s")
    try:
        cfg.validate()
    except ValueError as exc:
        raise usage(str(exc)) from None
    return cfg


def _require_price(target, usage) -> None:
    """--max-cost needs a price for the target's model (the table, or the target's prices)."""
    from probes.prices import price_for, second_price_for, with_override

    if with_override(price_for(target.model), target.prices) is None and \
            second_price_for(target.model, target.prices) is None:
        raise usage(f"--max-cost: no price for model {target.model!r} (probes/prices.py); "
                    "give the target `prices:` to guard its cost")


def run_capacity(plan, cfg, *, processes, summary_json, report_path, config_path,
                 run_with_progress) -> int:
    from loadtests import capacity as cap
    from loadtests import run as lrun
    from loadtests.capacity_run import search

    started_ns = time.time_ns()
    click.echo(f"capacity search: {plan.target.name} ({plan.target.model}), scenario "
               f"{plan.scenario.name}, {'closed' if cfg.integer else 'open'} model from "
               f"{cfg.start:g} {cfg.unit}, x{cfg.factor:g} per step, bounds "
               f"{', '.join(plan.load.thresholds)}", err=True)

    def run_step(step_plan):
        with tempfile.TemporaryDirectory(prefix="voicepulse-step-") as tmp:
            step_plan.summary_json = os.path.join(tmp, "summary.json")
            step_plan.status_jsonl = os.path.join(tmp, "status.jsonl")
            argv = lrun.locust_argv(step_plan, processes=processes)
            run_with_progress(lrun, argv, lrun.time_limit_s(step_plan), step_plan)
            return lrun.read_summary(step_plan.summary_json)

    def on_step(s: cap.Step) -> None:
        b = s.failed_bound
        what = ("held every bound" if s.passed else f"generator overloaded: {s.health}"
                if s.overloaded else f"broke {b['expr']} ({b['actual']})")
        click.echo(f"step {s.level:g} {cfg.unit}: {s.turns} turns, {what}", err=True)

    res, summaries = search(plan, cfg, run_step, on_step)
    click.echo(cap.table(res))
    doc = {"run_id": plan.run_id, "target": plan.target.name, "model": plan.target.model,
           "scenario": plan.scenario.name, "load_model": "closed" if cfg.integer else "open",
           "bounds": list(plan.load.thresholds),
           "search": {"start": cfg.start, "factor": cfg.factor, "precision": cfg.precision,
                      "step_hold_s": cfg.hold_s, "max_level": cfg.max_level,
                      "max_sessions": cfg.max_sessions, "max_cost_usd": cfg.max_cost_usd},
           "capacity": {**res.to_dict(), "bounds": list(plan.load.thresholds)},
           "step_summaries": summaries}
    if summary_json:
        with open(summary_json, "wb") as f:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if report_path:
        write_report(config_path, doc, report_path, started_ns)
    ok = res.found or (res.stop in (cap.BUDGET, cap.MAX_LEVEL) and res.floor is not None)
    sys.stdout.flush()
    return 0 if ok else 1


def write_report(config_path, doc: dict, path: str, started_ns: int) -> None:
    """The search's HTML report: every step's sessions from the store, plus the capacity
    section (latency percentiles and error rate against level)."""
    from reports import build_report
    from voicepulse.wiring import load_or_default, telemetry_for

    res = doc["capacity"]
    params = {"search": (f"{doc['load_model']} model from {doc['search']['start']:g} "
                         f"{res['unit']}, x{doc['search']['factor']:g} per step, hold "
                         f"{doc['search']['step_hold_s']:g} s, precision "
                         f"{doc['search']['precision']:.0%}"),
              "bounds": ", ".join(doc["bounds"]), "stopped": res["message"]}
    query = telemetry_for(load_or_default(config_path)).query()
    try:
        out = build_report(query, path, start_ns=started_ns, end_ns=time.time_ns() + 1,
                           run_id=doc["run_id"], params=params, capacity=res)
    finally:
        query.close()
    click.echo(f"report: {out}")
