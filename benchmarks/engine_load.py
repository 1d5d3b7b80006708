"""The engine alone under load: N concurrent standard sessions as greenlets in ONE gevent process
(no Locust), against the simulator in another process, measured over a steady window.

What it is for: before/after comparisons of the engine's hot path (probes/transport.py, the
dialect fast path, the marks) and of the worker's GC policy, without Locust's own costs. Use
CPU time, not wall time, on a shared machine.

Prints one JSON line: CPU ms per session-second, µs CPU per wire message (frames received +
messages sent, as the simulator's /stats frames count them), loop lag p99 (50 ms probe), GC pauses (count and max per generation), send lag
p99 (over the turns' p99s), TTFA error vs the simulator's truth p50/p99, stalls.

    python benchmarks/engine_load.py --sessions 300 --steady 15
    python benchmarks/engine_load.py --sessions 300 --gc worker     # loadtests/worker.py's policy
    python benchmarks/engine_load.py --sessions 300 --profile /tmp/engine.prof

Not a test.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from time import perf_counter_ns  # noqa: E402

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probes.session import prepare, run_session  # noqa: E402
from probes.spec import Scenario, Target  # noqa: E402
from simulator.process import SimProcess  # noqa: E402

STANDARD = Scenario(name="standard", turns=4, utterance_s=2.0, trailing_silence_s=0.8,
                    pause_s=0.5, chunk_ms=100)


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v))) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--steady", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=6.0)
    ap.add_argument("--gc", default="default",
                    help="default | worker (loadtests/worker.py's policy) | T0,T1,T2 thresholds "
                         "after a freeze")
    ap.add_argument("--profile", default="", help="cProfile the steady window to this file")
    ap.add_argument("--sim-cpu", type=int, default=-1, help="pin the simulator to this CPU")
    args = ap.parse_args()
    sim_args = ["--delta-ms", "100", "--speed", "2.0"]
    with SimProcess(args=sim_args) as sim:
        if args.sim_cpu >= 0 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(sim.pid, {args.sim_cpu})
        tg = Target("sim", sim.ws_url + "/v1/realtime", "sim-fast")
        prepare(tg, STANDARD)
        pauses: list[tuple[int, float]] = []
        start = [0]

        cpu0 = [0]
        found = [0]

        def gc_cb(phase, info):
            if phase == "start":
                start[0] = perf_counter_ns()
                cpu0[0] = time.thread_time_ns()
            else:
                pauses.append((info["generation"], (perf_counter_ns() - start[0]) / 1e6,
                               (time.thread_time_ns() - cpu0[0]) / 1e6))
                found[0] += info["collected"]

        if args.gc == "worker":
            from loadtests.worker import apply_gc_policy
            apply_gc_policy()
        elif args.gc != "default":
            gc.collect()
            gc.freeze()
            gc.set_threshold(*(int(x) for x in args.gc.split(",")))
        gc.callbacks.append(gc_cb)
        stop_at = time.monotonic() + args.warmup + args.steady
        results = []
        loop_lags: list[float] = []

        def slot(i):
            gevent.sleep(i / args.sessions)  # spread over 1 s
            while time.monotonic() < stop_at:
                results.append(run_session(tg, STANDARD, kind="load", api_key="x"))

        def loop_probe():
            while True:
                t = perf_counter_ns()
                gevent.sleep(0.05)
                loop_lags.append(max(0.0, (perf_counter_ns() - t) / 1e6 - 50))

        jobs = [gevent.spawn(slot, i) for i in range(args.sessions)]
        probe = gevent.spawn(loop_probe)
        gevent.sleep(args.warmup)
        n_pauses, n_loop, f0 = len(pauses), len(loop_lags), found[0]
        sim.stats(reset=True)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0_ns = perf_counter_ns()
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        gevent.sleep(args.steady)
        if prof:
            prof.disable()
        t1_ns = perf_counter_ns()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        frames = sim.stats()["frames"]
        wire, f1 = frames["in"] + frames["out"], found[0]
        steady_pauses = pauses[n_pauses:]
        tracked = len(gc.get_objects())  # what a full collection scans now (not frozen)
        c0, f0_ns = time.thread_time_ns(), perf_counter_ns()
        gc.collect()  # one full collection with every session live: the pause it costs
        full = ((perf_counter_ns() - f0_ns) / 1e6, (time.thread_time_ns() - c0) / 1e6)
        steady_loop = loop_lags[n_loop:]
        gevent.joinall(jobs, timeout=120)
        probe.kill()
        if prof:
            prof.dump_stats(args.profile)
        truth = {(t["session_id"], t["turn_index"]): t for t in sim.truth()["turns"]}
    cpu_s = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    wall = (t1_ns - t0_ns) / 1e9
    sess_s, lag99, err, stalls, ok = 0.0, [], [], [], 0
    for r in results:
        ok += r.ok
        a = r.connect_start_ns or 0
        b = a + int((r.duration_s or 0) * 1e9)
        sess_s += max(0, min(b, t1_ns) - max(a, t0_ns)) / 1e9
        for t in r.turns:
            if t.send_lag_p99_ms is not None:
                lag99.append(t.send_lag_p99_ms)
            if t.stall_ms is not None:
                stalls.append(t.stall_ms)
            tt = truth.get((r.server_session_id, t.index))
            if tt and t.first_audio_ns and tt.get("first_audio_ns"):
                err.append((t.first_audio_ns - tt["first_audio_ns"]) / 1e6)
    by_gen = {}
    for g, ms, cpu_ms in steady_pauses:
        n, mx, mc, tot = by_gen.get(g, (0, 0.0, 0.0, 0.0))
        by_gen[g] = (n + 1, max(mx, ms), max(mc, cpu_ms), tot + cpu_ms)
    print(json.dumps({
        "sessions": args.sessions, "gc_policy": args.gc, "cpu_pct": round(100 * cpu_s / wall, 1),
        "cpu_ms_per_session_s": round(1000 * cpu_s / sess_s, 3) if sess_s else None,
        "us_per_wire_msg": round(1e6 * cpu_s / wire, 1) if wire else None,
        "wire_msgs_per_s": round(wire / wall),
        "loop_lag_p99_ms": pct(steady_loop, 99),
        # per generation: collections, max pause (wall: includes preemption on a shared
        # machine), max and total CPU of the collector itself; objects it found (cycles)
        "gc": {str(g): {"count": n, "max_ms": round(mx, 2), "max_cpu_ms": round(mc, 2),
                        "cpu_ms_per_s": round(tot / wall, 2)}
               for g, (n, mx, mc, tot) in sorted(by_gen.items())},
        "gc_found": f1 - f0, "tracked_objects": tracked,
        "full_gc_now_ms": round(full[0], 2), "full_gc_now_cpu_ms": round(full[1], 2),
        "send_lag_p99_ms": pct(lag99, 99), "ttfa_err_p50_ms": pct(err, 50),
        "ttfa_err_p99_ms": pct(err, 99), "stall_p99_ms": pct(stalls, 99),
        "ok": f"{ok}/{len(results)}"}))


if __name__ == "__main__":
    main()
