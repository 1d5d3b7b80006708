"""Capacity of one Locust worker process running standard voice sessions.

Standard session (docs/design.md): 100 ms input chunks in real time, the reply in 100 ms deltas at 2x
real time (simulator defaults: 2 s reply, TTFA ~250 ms). For each level, a closed-model run of N
concurrent sessions in ONE Locust process (the master shares it, as in a local run) against the
simulator in its own process on the same machine, and over a steady window:

- worker CPU %           the Locust process's CPU time / wall time (psutil, from outside)
- CPU ms / session-s     that CPU time / the session-seconds active in the window
- send lag p50 / p99     chunk send lag (actual - intended): median of the turns' p50s and
                         p99 of the turns' p99s (the engine reports per-turn percentiles)
- loop lag p99           the event loop's wake-up lag (generator health probe)
- GC max                 the longest cyclic-GC pause in the worker (it stops every session)
- sim CPU %              the simulator process's CPU (a saturated target back-pressures sends)
- TTFA err p50 / p99     measured first-audio mark - the simulator's ground-truth write mark

    python benchmarks/capacity.py                      # 50..1000 sessions
    python benchmarks/capacity.py --levels 100,200 --steady 8
    python benchmarks/capacity.py --profile 200        # cProfile one level, top functions

Prints a table; not a test.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtests.plan import LoadConfig, Plan, default_target  # noqa: E402
from loadtests.run import child_env, locust_argv  # noqa: E402
from loadtests.summary import LoadSummary  # noqa: E402
from probes.spec import Scenario  # noqa: E402
from tests.sim_server import SimProcess  # noqa: E402

STANDARD = Scenario(name="standard", turns=4, utterance_s=2.0, trailing_silence_s=0.8,
                    pause_s=0.5, chunk_ms=100)
WARMUP_S = 3.0


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v))) - 1))]


def run_level(sim: SimProcess, n: int, steady_s: float, tmp: str, profile: str | None = None):
    sim.reset()
    results = os.path.join(tmp, f"r{n}.jsonl")
    summary = os.path.join(tmp, f"s{n}.json")
    lc = LoadConfig(users=n, duration_s=WARMUP_S + steady_s + 1.0, drain_s=30.0,
                    overload_lag_ms=10.0, closed_stagger_s=1.0)
    plan = Plan(default_target(sim.ws_url + "/v1/realtime", "sim-fast"), STANDARD, lc,
                record=False, summary_json=summary, results_jsonl=results)
    argv = locust_argv(plan, loglevel="INFO")
    if profile:
        argv = [argv[0], "-m", "cProfile", "-o", profile] + argv[1:]
    env = child_env()
    env["SIM_API_KEY"] = "bench"
    proc = subprocess.Popen(argv, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    spawned = threading.Event()

    def watch():
        for line in proc.stderr:
            if "All users spawned" in line:
                spawned.set()

    threading.Thread(target=watch, daemon=True).start()
    ps = psutil.Process(proc.pid)
    if not spawned.wait(60):
        proc.kill()
        raise RuntimeError("locust did not spawn its users")
    time.sleep(WARMUP_S)  # stagger (1 s), connects, first turns under way
    simps = psutil.Process(sim.pid)
    w0, c0, w0_ns, s0 = time.monotonic(), ps.cpu_times(), time.perf_counter_ns(), simps.cpu_times()
    time.sleep(steady_s)
    w1, c1, w1_ns, s1 = time.monotonic(), ps.cpu_times(), time.perf_counter_ns(), simps.cpu_times()
    proc.wait(timeout=180)
    cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
    sim_cpu_s = (s1.user + s1.system) - (s0.user + s0.system)
    wall = w1 - w0
    rows = [orjson.loads(x) for x in Path(results).read_bytes().splitlines()] \
        if os.path.exists(results) else []
    sess_s = 0.0
    lag50, lag99, ttfa_err = [], [], []
    truth = {(t["session_id"], t["turn_index"]): t for t in sim.truth()["turns"]}
    for r in rows:
        a = r["connect_start_ns"] or 0
        b = a + int(r["duration_s"] * 1e9)
        sess_s += max(0, min(b, w1_ns) - max(a, w0_ns)) / 1e9
        for t in r["turns"]:
            if t["send_lag_p50_ms"] is not None:
                lag50.append(t["send_lag_p50_ms"])
            if t["send_lag_p99_ms"] is not None:
                lag99.append(t["send_lag_p99_ms"])
            tt = truth.get((r.get("server_session_id"), t["index"]))
            if tt and t.get("first_audio_ns") and tt.get("first_audio_ns"):
                ttfa_err.append((t["first_audio_ns"] - tt["first_audio_ns"]) / 1e6)
    s = LoadSummary.from_dict(orjson.loads(Path(summary).read_bytes())) \
        if os.path.exists(summary) else None
    loop99 = s.metric("loop_lag_ms").p99 if s and s.metric("loop_lag_ms") else None
    gcmax = s.metric("gc_pause_ms").max if s and s.metric("gc_pause_ms") else None
    ok = s.counters["sessions_ok"] if s else 0
    total = s.counters["sessions"] if s else 0
    return {
        "n": n, "cpu_pct": 100 * cpu_s / wall, "cpu_ms_per_ss": 1000 * cpu_s / sess_s if sess_s else None,
        "concurrency": sess_s / wall, "lag50": pct(lag50, 50), "lag99": pct(lag99, 99),
        "loop99": loop99, "gcmax": gcmax, "sim_cpu": 100 * sim_cpu_s / wall, "err50": pct(ttfa_err, 50), "err99": pct(ttfa_err, 99),
        "sessions": f"{ok}/{total}",
    }


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="50,100,200,400,600,800,1000")
    ap.add_argument("--steady", type=float, default=10.0, help="seconds measured per level")
    ap.add_argument("--profile", type=int, default=0, help="cProfile this level instead")
    args = ap.parse_args()
    with SimProcess(args=["--delta-ms", "100", "--speed", "2.0"]) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            prof = os.path.join(tmp, "worker.prof")
            run_level(sim, args.profile, args.steady, tmp, profile=prof)
            st = pstats.Stats(prof)
            st.sort_stats("tottime").print_stats(25)
            return
        print(f"{'sessions':>8} {'active':>7} {'CPU %':>6} {'CPU ms/sess-s':>13} "
              f"{'send lag p50':>12} {'p99':>6} {'loop lag p99':>12} {'GC max':>7} "
              f"{'TTFA err p50':>12} {'p99':>6} {'sim CPU %':>9} {'ok/all':>9}   (ms)")
        best = None
        for n in (int(x) for x in args.levels.split(",")):
            r = run_level(sim, n, args.steady, tmp)
            print(f"{n:>8} {fmt(r['concurrency'], '.0f'):>7} {fmt(r['cpu_pct'], '.0f'):>6} "
                  f"{fmt(r['cpu_ms_per_ss'], '.2f'):>13} {fmt(r['lag50'], '.2f'):>12} "
                  f"{fmt(r['lag99'], '.1f'):>6} {fmt(r['loop99'], '.1f'):>12} "
                  f"{fmt(r['gcmax'], '.1f'):>7} {fmt(r['err50'], '.2f'):>12} "
                  f"{fmt(r['err99'], '.1f'):>6} {fmt(r['sim_cpu'], '.0f'):>9} {r['sessions']:>9}",
                  flush=True)
            if r["lag99"] is not None and r["lag99"] <= 10.0:
                best = n
        print(f"largest count with send lag p99 <= 10 ms: {best if best else 'none'}")


if __name__ == "__main__":
    main()
