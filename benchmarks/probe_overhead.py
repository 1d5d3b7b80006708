"""Engine overhead and accuracy: CPU per session-second and TTFA error vs the simulator's truth.

Runs N concurrent sessions (OS threads) of run_session against a simulator child process with a
fixed-TTFA profile, for N in --levels, and prints one row per level:
- CPU ms per session-second: this process's user+system CPU over the run / the sum of session
  durations (the budget from issue 6 is <= 1 ms per session-second);
- TTFA error: our first-audio mark minus the simulator's ground-truth first-audio write, per
  turn, on the shared CLOCK_MONOTONIC (positive = we saw it later than it was written);
- the sender's own send lag p99.
The simulator shares the machine's cores, so at high N its own lateness shows up too.

    python benchmarks/probe_overhead.py [--levels 1,50,200] [--turns 3] [--gevent]

--gevent runs the sessions as greenlets in a monkey-patched process (a Locust worker's setup)
instead of OS threads.
"""

from __future__ import annotations

import sys

if "--gevent" in sys.argv:  # patch before anything imports socket/threading, as Locust does
    from gevent import monkey

    monkey.patch_all()

import argparse
import os
import resource
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes.session import prepare, run_session  # noqa: E402
from probes.spec import Scenario, Target  # noqa: E402
from tests.sim_server import SimProcess  # noqa: E402


def cpu_s() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(int(-(-p / 100 * len(s) // 1)) - 1, 0)
    return s[min(k, len(s) - 1)]


def run_level(sim: SimProcess, n: int, sc: Scenario, ramp_s: float) -> dict:
    target = Target("sim", sim.ws_url + "/v1/realtime", "sim-fast")
    prepare(target, sc)
    sim.reset()
    results: list = [None] * n
    t0 = time.perf_counter_ns() + 100_000_000
    step = int(ramp_s * 1e9 / n) if n > 1 else 0

    def one(i: int) -> None:
        results[i] = run_session(target, sc, kind="load", api_key="x",
                                 intended_start_ns=t0 + i * step)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    (u0, s0), w0 = cpu_s(), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    u1, s1 = cpu_s()
    wall = time.monotonic() - w0
    cpu, sys_cpu = (u1 - u0) + (s1 - s0), s1 - s0
    ok = [r for r in results if r is not None and r.outcome == "ok"]
    session_s = sum(r.duration_s for r in results if r is not None)
    errs: list[float] = []
    for r in ok:
        truth = sorted(
            (t for t in sim.turns(r.server_session_id) if t["first_audio_ns"] is not None),
            key=lambda t: t["turn_index"],
        )
        for mine, tt in zip(r.turns, truth, strict=False):
            errs.append((mine.first_audio_ns - tt["first_audio_ns"]) / 1e6)
    lags = [r.send_lag_p99_ms for r in ok if r.send_lag_p99_ms is not None]
    outcomes: dict[str, int] = {}
    for r in results:
        key = r.outcome if r is not None else "hung"
        outcomes[key] = outcomes.get(key, 0) + 1
    return {
        "n": n, "ok": len(ok), "outcomes": outcomes, "wall": wall, "session_s": session_s,
        "cpu": cpu, "sys": sys_cpu, "errs": errs, "lag_p99": max(lags) if lags else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,50,200")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--utterance-s", type=float, default=1.5)
    ap.add_argument("--ttfa-ms", default="300")
    ap.add_argument("--reply-s", default="2.0")
    ap.add_argument("--ramp-s", type=float, default=2.0, help="spread session starts over this")
    ap.add_argument("--gevent", action="store_true", help="greenlets in a patched process")
    a = ap.parse_args()
    sc = Scenario(turns=a.turns, utterance_s=a.utterance_s, pause_s=0.3)
    levels = [int(x) for x in a.levels.split(",")]
    print(f"# probe_overhead: {a.turns} turns x {a.utterance_s} s speech, server_vad, "
          f"sim fixed TTFA {a.ttfa_ms} ms, reply {a.reply_s} s at 2x; "
          f"{'gevent greenlets' if a.gevent else 'OS threads'}; {os.cpu_count()} CPUs, "
          f"load avg before: {os.getloadavg()[0]:.2f}")
    rows = []
    with SimProcess(args=["--ttfa-ms", a.ttfa_ms, "--reply-s", a.reply_s]) as sim:
        for n in levels:
            rows.append(run_level(sim, n, sc, a.ramp_s))
    print()
    print("| sessions | ok | wall s | session-s | CPU s (of it kernel) | CPU ms / session-s "
          "| CPU % of a core | TTFA err p50 ms | TTFA err p99 ms | TTFA err max ms "
          "| send lag p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        e = r["errs"]
        print(f"| {r['n']} | {r['ok']} | {r['wall']:.1f} | {r['session_s']:.1f} "
              f"| {r['cpu']:.2f} ({r['sys']:.2f}) "
              f"| {1000 * r['cpu'] / max(r['session_s'], 1e-9):.3f} "
              f"| {100 * r['cpu'] / r['wall']:.1f} "
              f"| {pct(e, 50):.2f} | {pct(e, 99):.2f} | {max(e, default=float('nan')):.2f} "
              f"| {r['lag_p99']:.2f} |")
    bad = {k: v for r in rows for k, v in r["outcomes"].items() if k != "ok"}
    if bad:
        print(f"\nnon-ok outcomes: {bad}")
    print(f"load avg after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
