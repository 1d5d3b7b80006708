"""Capacity of one Locust worker process running standard voice sessions.

Standard session (docs/design.md): 100 ms input chunks in real time, the reply in 100 ms deltas at 2x
real time (simulator defaults: 2 s reply, TTFA ~250 ms). For each level, a closed-model run of N
concurrent sessions in ONE Locust process (the master shares it, as in a local run) against the
simulator in its own process. With two or more cores the simulator is pinned to the last core and
the worker(s) to the others (taskset / sched_setaffinity), and the header says so; with one core
they share it. Over a steady window:

- worker CPU %           the Locust process tree's CPU time / wall time (psutil, from outside)
- CPU ms / session-s     that CPU time / the session-seconds active in the window
- us / wire msg          that CPU time / the data frames exchanged in the window (the simulator's
                         /stats frames in + out: every message the worker sent or received)
- send lag p50 / p99     chunk send lag (actual - intended): median of the turns' p50s and
                         p99 of the turns' p99s (the engine reports per-turn percentiles)
- loop lag p99           the event loop's wake-up lag (generator health probe)
- GC max                 the longest cyclic-GC pause in the worker (it stops every session)
- TTFA err p50 / p99     measured first-audio mark - the simulator's ground-truth write mark
- stall p99              the turns' longest gap in the reply audio (ms)
- sim CPU % / late p99   the simulator process's CPU, and its own delta lateness p99 (ms): a
                         late simulator, not the generator, would then be what is measured
- verdict                the run's own overload verdict (loadtests/overload.py)

It ends with the largest level at which send lag p99 <= 10 ms and TTFA error p99 <= 5 ms.

    python benchmarks/capacity.py                      # 50..1000 sessions
    python benchmarks/capacity.py --levels 100,300 --steady 15
    python benchmarks/capacity.py --levels 300 --processes 2   # two worker processes
    python benchmarks/capacity.py --profile 200        # cProfile one level, top functions

Prints a table; not a test. On a machine shared with other work the lags and pauses include
other processes' time slices: compare CPU per session-second and per message, not lone times.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
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


def cores() -> tuple[list[int], int | None]:
    """(worker cores, simulator core): split when there are two or more, else shared."""
    have = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(have) < 2:
        return have, None
    return have[:-1], have[-1]


def pin_tree(pid: int, cpus: list[int]) -> None:
    """Pin a process and every thread of it (taskset -a semantics)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), set(cpus))
    except (OSError, AttributeError):
        pass


def tree_cpu_s(ps: psutil.Process) -> float:
    total = 0.0
    for p in [ps, *ps.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_level(sim: SimProcess, n: int, steady_s: float, tmp: str, profile: str | None = None,
              processes: int = 0, worker_cpus: list[int] | None = None):
    sim.reset()
    results = os.path.join(tmp, f"r{n}.jsonl")
    summary = os.path.join(tmp, f"s{n}.json")
    lc = LoadConfig(users=n, duration_s=WARMUP_S + steady_s + 1.0, drain_s=30.0,
                    overload_lag_ms=10.0, closed_stagger_s=1.0)
    plan = Plan(default_target(sim.ws_url + "/v1/realtime", "sim-fast"), STANDARD, lc,
                record=False, summary_json=summary, results_jsonl=results)
    argv = locust_argv(plan, loglevel="INFO", processes=processes or None)
    if profile:
        argv = [argv[0], "-m", "cProfile", "-o", profile] + argv[1:]
    if worker_cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, worker_cpus))] + argv
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
    sim.stats(reset=True)
    w0, c0, w0_ns, s0 = time.monotonic(), tree_cpu_s(ps), time.perf_counter_ns(), simps.cpu_times()
    time.sleep(steady_s)
    w1, c1, w1_ns, s1 = time.monotonic(), tree_cpu_s(ps), time.perf_counter_ns(), simps.cpu_times()
    st = sim.stats()
    proc.wait(timeout=180)
    cpu_s = c1 - c0
    sim_cpu_s = (s1.user + s1.system) - (s0.user + s0.system)
    wall = w1 - w0
    frames = st.get("frames") or {}
    wire = (frames.get("in") or 0) + (frames.get("out") or 0)
    rows = [orjson.loads(x) for x in Path(results).read_bytes().splitlines()] \
        if os.path.exists(results) else []
    sess_s = 0.0
    lag50, lag99, ttfa_err, stalls = [], [], [], []
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
            if t.get("stall_ms") is not None:
                stalls.append(t["stall_ms"])
            tt = truth.get((r.get("server_session_id"), t["index"]))
            if tt and t.get("first_audio_ns") and tt.get("first_audio_ns"):
                ttfa_err.append((t["first_audio_ns"] - tt["first_audio_ns"]) / 1e6)
    s = LoadSummary.from_dict(orjson.loads(Path(summary).read_bytes())) \
        if os.path.exists(summary) else None
    loop99 = s.metric("loop_lag_ms").p99 if s and s.metric("loop_lag_ms") else None
    gcmax = s.metric("gc_pause_ms").max if s and s.metric("gc_pause_ms") else None
    ok = s.counters["sessions_ok"] if s else 0
    total = s.counters["sessions"] if s else 0
    lat = st.get("delta_lateness") or {}
    return {
        "n": n, "cpu_pct": 100 * cpu_s / wall,
        "cpu_ms_per_ss": 1000 * cpu_s / sess_s if sess_s else None,
        "us_per_msg": 1e6 * cpu_s / wire if wire else None,
        "concurrency": sess_s / wall, "lag50": pct(lag50, 50), "lag99": pct(lag99, 99),
        "loop99": loop99, "gcmax": gcmax, "err50": pct(ttfa_err, 50), "err99": pct(ttfa_err, 99),
        "stall99": pct(stalls, 99), "sim_cpu": 100 * sim_cpu_s / wall,
        "sim_late99": lat.get("p99_ms"), "sessions": f"{ok}/{total}",
        "overloaded": None if s is None else s.overloaded,
    }


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


COLUMNS = (("sessions", "n", "d", 8), ("active", "concurrency", ".0f", 6),
           ("CPU %", "cpu_pct", ".0f", 5), ("ms/sess-s", "cpu_ms_per_ss", ".2f", 9),
           ("us/msg", "us_per_msg", ".0f", 6), ("lag p50", "lag50", ".2f", 7),
           ("lag p99", "lag99", ".1f", 7), ("loop p99", "loop99", ".1f", 8),
           ("GC max", "gcmax", ".1f", 6), ("err p50", "err50", ".2f", 7),
           ("err p99", "err99", ".1f", 7), ("stall p99", "stall99", ".0f", 9),
           ("sim CPU%", "sim_cpu", ".0f", 8), ("sim late p99", "sim_late99", ".1f", 12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="50,100,200,400,600,800,1000")
    ap.add_argument("--steady", type=float, default=10.0, help="seconds measured per level")
    ap.add_argument("--profile", type=int, default=0, help="cProfile this level instead")
    ap.add_argument("--processes", type=int, default=0, help="Locust worker processes (0: one)")
    args = ap.parse_args()
    worker_cpus, sim_cpu = cores()
    with SimProcess(args=["--delta-ms", "100", "--speed", "2.0"]) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        if sim_cpu is not None:
            pin_tree(sim.pid, [sim_cpu])
            print(f"pinned: simulator on core {sim_cpu}, worker(s) on core(s) "
                  f"{','.join(map(str, worker_cpus))}")
        else:
            print("not pinned: one core, the simulator and the worker share it")
        if args.profile:
            prof = os.path.join(tmp, "worker.prof")
            run_level(sim, args.profile, args.steady, tmp, profile=prof,
                      worker_cpus=worker_cpus if sim_cpu is not None else None)
            st = pstats.Stats(prof)
            st.sort_stats("tottime").print_stats(25)
            return
        print(" ".join(f"{h:>{w}}" for h, _, _, w in COLUMNS) + f" {'ok/all':>9} verdict   (ms)")
        best = None
        for n in (int(x) for x in args.levels.split(",")):
            r = run_level(sim, n, args.steady, tmp, processes=args.processes,
                          worker_cpus=worker_cpus if sim_cpu is not None else None)
            verdict = "-" if r["overloaded"] is None else \
                "OVERLOADED" if r["overloaded"] else "ok"
            print(" ".join(f"{fmt(r[k], spec):>{w}}" for _, k, spec, w in COLUMNS)
                  + f" {r['sessions']:>9} {verdict}", flush=True)
            if (r["lag99"] is not None and r["lag99"] <= 10.0 and r["err99"] is not None
                    and r["err99"] <= 5.0):
                best = n
        print("largest level with send lag p99 <= 10 ms and TTFA error p99 <= 5 ms: "
              f"{best if best else 'none'}")


if __name__ == "__main__":
    main()
