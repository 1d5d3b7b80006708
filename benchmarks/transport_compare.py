"""WebSocket vs WebRTC against the simulator: the same scenario and profile over both transports,
N concurrent sessions in one gevent-patched process (as a Locust worker runs them).

Per transport it prints TTFA (audible) p50/p99, the TTFA error against the simulator's truth,
stall_ms, send lag p99, and CPU per session-second (this process only: user + system time of
all its threads over the run, divided by the sessions' summed duration), with where that CPU
went by thread (the gevent main thread, the WebRTC event loop thread, others).

Truth: WebSocket, the simulator's first_audio_ns per turn (the first delta written to the
socket; the engine's first_audio_ns is its arrival). WebRTC, the RTP send of the packet that
our gate found each reply's audible onset in, matched by RTP sequence number to the
simulator's onset record (see tests/probes/test_rtc_sim.py).

    python benchmarks/transport_compare.py [--sessions 20] [--turns 3] [--only webrtc] [--faults]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes import playback  # noqa: E402
from probes.session import prepare, run_session  # noqa: E402
from probes.spec import Scenario, Target, Timeouts  # noqa: E402
from simulator.process import SimProcess  # noqa: E402

TICK_NS = 20_000_000
SIM_ARGS = ["--http-port", "0", "--ttfa-ms", "150", "--reply-s", "0.8"]
FAULTS = [("rtp_loss 1 %", {"kind": "rtp_loss", "rate": 0.01}),
          ("rtp_loss 5 %", {"kind": "rtp_loss", "rate": 0.05}),
          ("rtp_jitter 30 ms", {"kind": "rtp_jitter", "min_ms": 0, "max_ms": 30})]


def _threads() -> dict[str, float]:
    """CPU seconds so far of each thread of this process, summed by thread name."""
    out: dict[str, float] = {}
    hz = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                st = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / hz
        key = "main" if tid == str(os.getpid()) else name
        out[key] = out.get(key, 0.0) + cpu
    return out


def _proc_cpu(pid: int) -> float:
    """CPU seconds so far of another process (the simulator), all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runq_ms() -> float:
    """Time this process's threads spent runnable but waiting for a CPU (schedstat), ms."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    return playback.percentile(xs, p) if xs else None


def _fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def _target(sim, transport: str) -> Target:
    if transport == "websocket":
        return Target("ws", sim.realtime_url(), "sim-fast")
    return Target("rtc", sim.http_url + "/v1/realtime", "sim-fast", transport="webrtc")


def _send_ns(o: dict, k: int, seq: int) -> int:
    """The send of the k-th packet after the simulator's stamped onset packet (as
    tests/probes/test_rtc_sim.py: its own carrier stamp when it has one, else the schedule)."""
    if o.get("carrier_seq") == seq:
        return o["carrier_send_ns"]
    if k == 0:
        return o["rtp_send_ns"]
    late = o["rtp_send_ns"] - o["frame_due_ns"]
    return max(o["frame_due_ns"] + k * TICK_NS, o["rtp_send_ns"]) + (late if late < 2e6 else 0)


def run(sim, transport: str, n: int, turns: int, spread_s: float) -> dict:
    target = _target(sim, transport)
    sc = Scenario(turns=turns, utterance_s=1.0, pause_s=0.3,
                  timeouts=Timeouts(connect=20, ready=20, session=120))
    prepare(target, sc)
    logs: dict[str, list] = {}
    orig_finish = None
    if transport == "webrtc":
        from probes import rtc_session

        orig_finish = rtc_session.finish

        def finish(s, res, turns_):
            orig_finish(s, res, turns_)
            logs[res.session_id] = list(s._ws.listener.onset_log) if s._ws else []

        rtc_session.finish = finish
    t_start = time.perf_counter_ns() + 200_000_000
    cpu0, th0, wall0, sim0 = _cpu(), _threads(), time.monotonic(), _proc_cpu(sim.pid)
    rq0 = _runq_ms()
    jobs = [gevent.spawn(run_session, target, sc, kind="load", api_key="k",
                         intended_start_ns=t_start + int(i * spread_s * 1e9 / max(1, n)))
            for i in range(n)]
    gevent.joinall(jobs, timeout=300)
    cpu1, th1, wall1, sim1 = _cpu(), _threads(), time.monotonic(), _proc_cpu(sim.pid)
    runq = _runq_ms() - rq0
    if orig_finish is not None:
        from probes import rtc_session

        rtc_session.finish = orig_finish
    results = [j.value for j in jobs if j.value is not None]
    errs: list[float] = []
    if transport == "websocket":
        for r in results:
            truth = sim.truth(session_id=r.server_session_id)["turns"] if r.server_session_id \
                else []
            for mine, tt in zip(r.turns, truth, strict=False):
                if mine.first_audio_ns and tt.get("first_audio_ns"):
                    errs.append((mine.first_audio_ns - tt["first_audio_ns"]) / 1e6)
    else:
        for r in results:
            if not r.server_session_id:
                continue
            with urllib.request.urlopen(f"{sim.http_url}/truth/webrtc?session_id="
                                        f"{r.server_session_id}", timeout=10) as f:
                onsets = json.loads(f.read())["onsets"]
            for seq, at in logs.get(r.session_id, []):
                if not onsets:
                    break
                o = min(onsets, key=lambda o, seq=seq: (seq - o["rtp_seq"]) % 65536)
                k = (seq - o["rtp_seq"]) % 65536
                if k <= 2:
                    errs.append((at - _send_ns(o, k, seq)) / 1e6)
    turns_all = [t for r in results for t in r.turns]
    session_s = sum(r.duration_s for r in results)
    cpu = cpu1 - cpu0
    by_thread = {k: th1.get(k, 0.0) - th0.get(k, 0.0) for k in th1}
    return {
        "transport": transport, "sessions": n, "ok": sum(r.ok for r in results),
        "outcomes": sorted({r.outcome for r in results if not r.ok}),
        "ttfa_p50": _pct([t.ttfa_audible_ms for t in turns_all], 50),
        "ttfa_p99": _pct([t.ttfa_audible_ms for t in turns_all], 99),
        "err_p50": _pct([abs(e) for e in errs], 50), "err_p99": _pct([abs(e) for e in errs], 99),
        "err_n": len(errs),
        "stall_p99": _pct([t.stall_ms for t in turns_all], 99),
        "lag_p99": _pct([r.send_lag_p99_ms for r in results], 99),
        "lag_max": max((t.send_lag_max_ms or 0 for t in turns_all), default=None),
        "lag_p99_by_turn": [_pct([r.turns[i].send_lag_p99_ms for r in results
                                  if len(r.turns) > i], 99) for i in range(turns)],
        "playout_p50": _pct([t.playout_delay_ms for t in turns_all], 50),
        "rtp_loss_pct": (100 * sum(r.rtp_lost or 0 for r in results)
                         / max(1, sum((r.rtp_lost or 0) + (r.rtp_received or 0)
                                      for r in results))) if transport == "webrtc" else None,
        "rtp_jitter_ms": _pct([r.rtp_jitter_ms for r in results], 50),
        "cpu_s": cpu, "session_s": session_s, "wall_s": wall1 - wall0,
        "sim_cpu_pct": 100 * (sim1 - sim0) / (wall1 - wall0), "runq_ms": runq,
        "cpu_per_session_s": cpu / session_s if session_s else None,
        "threads": {k: round(v, 2) for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1])
                    if v >= 0.05},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20, help="concurrent sessions per transport")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--spread-s", type=float, default=2.0, help="session starts spread over")
    ap.add_argument("--only", choices=("websocket", "webrtc"), default=None)
    ap.add_argument("--faults", action="store_true",
                    help="also WebRTC under rtp_loss 1 %% and 5 %% and rtp_jitter 0..30 ms")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the WebRTC loop thread; print its top functions")
    args = ap.parse_args()
    prof = None
    if args.profile:
        import cProfile

        from probes import rtc_loop

        prof = cProfile.Profile()
        rtc_loop.loop().call_soon_threadsafe(prof.enable)
    transports = [args.only] if args.only else ["websocket", "webrtc"]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with SimProcess(SIM_ARGS) as sim:
        for tr in transports:
            rows.append(run(sim, tr, args.sessions, args.turns, args.spread_s))
        if args.faults:
            for label, spec in FAULTS:
                fid = sim.fault(**spec)
                try:
                    row = run(sim, "webrtc", args.sessions, args.turns, args.spread_s)
                finally:
                    sim.stop_fault(fid)
                row["transport"] = f"webrtc {label}"
                rows.append(row)
    cols = ("transport", "sessions ok", "TTFA p50", "TTFA p99", "err p50", "err p99",
            "stall p99", "lag p99", "playout p50", "RTP lost %", "jitter p50", "CPU ms/session-s",
            "sessions/core")
    print(" | ".join(cols))
    for r in rows:
        per = r["cpu_per_session_s"]
        print(" | ".join([
            r["transport"], f"{r['ok']}/{r['sessions']}", _fmt(r["ttfa_p50"]),
            _fmt(r["ttfa_p99"]), _fmt(r["err_p50"], 2), _fmt(r["err_p99"], 2),
            _fmt(r["stall_p99"]), _fmt(r["lag_p99"]), _fmt(r["playout_p50"]),
            _fmt(r["rtp_loss_pct"], 2), _fmt(r["rtp_jitter_ms"]),
            _fmt(per * 1000 if per else None), _fmt(1 / per if per else None, 0)]))
    if prof is not None:
        import io
        import pstats

        from probes import rtc_loop

        rtc_loop.loop().call_soon_threadsafe(prof.disable)
        time.sleep(0.2)
        out = io.StringIO()
        st = pstats.Stats(prof, stream=out)
        st.sort_stats("tottime").print_stats(20)
        st.sort_stats("cumulative").print_stats(30)
        print(out.getvalue())
    for r in rows:
        print(f"{r['transport']}: outcomes {r['outcomes'] or 'all ok'}, truth matches "
              f"{r['err_n']}, CPU {r['cpu_s']:.1f} s over {r['session_s']:.0f} session-s "
              f"({r['wall_s']:.0f} s wall; simulator {r['sim_cpu_pct']:.0f} % of a core; this process waited {r['runq_ms']:.0f} ms for a CPU), send lag max {_fmt(r['lag_max'])} ms, "
              f"CPU by thread (s): {r['threads']}, send lag p99 by turn "
              f"{[_fmt(x) for x in r['lag_p99_by_turn']]}")


if __name__ == "__main__":
    main()
