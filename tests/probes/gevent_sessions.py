"""Run N sessions as greenlets in a gevent-monkey-patched process; print JSON results.

Used by tests/probes/test_session_sim.py in a subprocess, because monkey-patching must happen
before anything imports socket/threading, exactly as in a Locust worker.
usage: python gevent_sessions.py WS_URL MODEL N TURNS STAGGER_MS [PROVIDER]
       python gevent_sessions.py --serve WS_URL MODEL [PROVIDER]
The second form stays up (patched, imported) and runs one batch per stdin line
"N TURNS STAGGER_MS", printing one JSON line each, so a caller can watch this process's CPU
wait across a measurement (tests/timing.bounded) and repeat it without a new start-up.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from probes.session import run_session  # noqa: E402
from probes.spec import Scenario, Target  # noqa: E402


def run(url: str, model: str, n: int, turns: int, stagger_ms: int,
        provider: str | None = None) -> dict:
    """N sessions of `turns` plain turns, the i-th due `stagger_ms` after the one before."""
    target = Target("sim", url, model, **({"provider": provider} if provider else {}))
    scenario = Scenario(turns=turns, utterance_s=1.0, pause_s=0.2)
    t0 = time.perf_counter_ns() + 50_000_000
    os_threads: list[int] = []

    def watch() -> None:
        for _ in range(200):
            os_threads.append(len(os.listdir("/proc/self/task")))
            gevent.sleep(0.05)

    w = gevent.spawn(watch)
    jobs = [
        gevent.spawn(
            run_session, target, scenario, kind="load", api_key="x",
            intended_start_ns=t0 + i * stagger_ms * 1_000_000,
        )
        for i in range(n)
    ]
    gevent.joinall(jobs, timeout=60)
    w.kill()
    return {
        "patched": monkey.is_module_patched("socket") and monkey.is_module_patched("threading"),
        "thread_class": threading.Thread.__module__,
        "max_os_threads": max(os_threads),
        "sessions": [
            {
                "outcome": j.value.outcome,
                "error": j.value.error,
                "server_session_id": j.value.server_session_id,
                "turns": [
                    {"ttfa_ms": t.ttfa_ms, "ttfa_audible_ms": t.ttfa_audible_ms,
                     "speech_end_ns": t.speech_end_ns, "first_audio_ns": t.first_audio_ns,
                     "response_done_ns": t.response_done_ns, "outcome": t.outcome}
                    for t in j.value.turns
                ],
            }
            for j in jobs
            if j.value is not None
        ],
    }


def main() -> None:
    if sys.argv[1] == "--serve":
        url, model, *provider = sys.argv[2:]
        print("ready", flush=True)
        for line in sys.stdin:
            n, turns, stagger_ms = map(int, line.split())
            print(json.dumps(run(url, model, n, turns, stagger_ms, *provider)), flush=True)
        return
    url, model, n, turns, stagger_ms = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    print(json.dumps(run(url, model, n, turns, stagger_ms, *sys.argv[6:7])))


if __name__ == "__main__":
    main()
