"""How long one evaluation of the alert rules takes, against the embedded store and (with
--influx) a real influxd 1.6.7, as the stored history grows.

Each target gets the issue's rule set (availability + latency SLO = 6 burn-rate rules, one
threshold, one regression); the history is probes every 30 s with 2 turns each. Prints a table.

    python benchmarks/alert_eval.py                 # embedded store
    python benchmarks/alert_eval.py --influx        # also influxd (Debian package)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from probes.results import SessionResult, TurnResult  # noqa: E402
from scheduler.alerts import AlertEngine, build_rules  # noqa: E402
from scheduler.config import RegressionRule, ServiceConfig, Slo, ThresholdRule  # noqa: E402
from scheduler.source import TelemetrySource  # noqa: E402
from telemetry.embedded import EmbeddedStore  # noqa: E402
from telemetry.points import session_points, to_lines  # noqa: E402
from telemetry.query import EmbeddedQuery, InfluxQuery  # noqa: E402


def history(targets: int, hours: float, now: float, rng) -> list:
    points = []
    n = int(hours * 3600 / 30)
    for t in range(targets):
        name = f"target-{t}"
        for i in range(n):
            at = now - (n - i) * 30
            ok = rng.random() > 0.002
            turns = [TurnResult(index=k, ttfa_ms=float(rng.lognormal(np.log(450), 0.25)))
                     for k in range(2)] if ok else []
            r = SessionResult(target=name, provider="openai", model=name, started_at=at,
                              outcome="ok" if ok else "http_503", session_id=f"{name}-{i}",
                              turns=turns, agent="bench", duration_s=3.0)
            points.extend(session_points(r))
    return points


def config(targets: int) -> ServiceConfig:
    cfg = ServiceConfig()
    for t in range(targets):
        name = f"target-{t}"
        cfg.slos += [Slo(f"{name}-avail", name, "availability", 0.995),
                     Slo(f"{name}-ttfa", name, "latency", 0.95, below_ms=800)]
        cfg.thresholds.append(ThresholdRule(f"{name}-p95", name, "ttfa_ms", "p95", ">", 900))
        cfg.regressions.append(RegressionRule(f"{name}-reg", name))
    return cfg


def measure(source, cfg: ServiceConfig, now: float, repeats: int = 3) -> float:
    engine = AlertEngine(build_rules(cfg), source)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.evaluate(now)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--influx", action="store_true")
    ap.add_argument("--targets", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    now = time.time()
    influx = None
    if args.influx:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
        from tests.servers import InfluxServer

        influx = InfluxServer()
        influx.start()
    rows = []
    try:
        for hours in (6, 24, 72):
            pts = history(args.targets, hours, now, rng)
            cfg = config(args.targets)
            rules = len(build_rules(cfg))
            with tempfile.TemporaryDirectory() as d:
                store = EmbeddedStore(os.path.join(d, "b.db"))
                store.write(pts)
                emb = measure(TelemetrySource(EmbeddedQuery(store)), cfg, now)
                store.close()
            inf = None
            if influx is not None:
                db = f"bench{hours}"
                influx.create_database(db)
                lines = to_lines(pts).splitlines()
                for i in range(0, len(lines), 5000):
                    assert influx.write("\n".join(lines[i:i + 5000]), db) == 204
                inf = measure(TelemetrySource(InfluxQuery(influx.url, db)), cfg, now)
            rows.append((hours, args.targets, sum(p.measurement == "session" for p in pts),
                         sum(p.measurement == "turn" for p in pts), rules, emb, inf))
    finally:
        if influx is not None:
            influx.cleanup()
    print(f"{'history':>8} {'targets':>7} {'sessions':>9} {'turns':>7} {'rules':>5} "
          f"{'embedded ms':>12} {'influxd ms':>11}")
    for h, t, s, tu, r, e, i in rows:
        print(f"{h:>7}h {t:>7} {s:>9} {tu:>7} {r:>5} {e * 1000:>12.0f} "
              f"{'-' if i is None else f'{i * 1000:.0f}':>11}")


if __name__ == "__main__":
    main()
