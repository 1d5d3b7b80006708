"""Points/s through outbox + v1 sink into a local influxd, and the outbox's memory and disk
during an outage at a fixed rate. Prints measured tables; not a test.

    python benchmarks/sink_throughput.py [--points 200000] [--outage-s 60] [--rate 5000]

Throughput counts the whole path: Point -> line protocol -> SQLite outbox -> batch POST /write
-> accepted by influxd -> deleted from the outbox. "CPU s" is this process's user+sys time
(influxd runs in its own process), so points per CPU second is the one-core figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402

from telemetry.points import Point  # noqa: E402
from telemetry.sinks import InfluxV1Sink  # noqa: E402
from telemetry.wiring import build_sink  # noqa: E402
from tests.servers import InfluxServer  # noqa: E402

BASE = 1_790_000_000_000_000_000


def make_points(start: int, n: int) -> list[Point]:
    return [
        Point(
            "turn",
            {
                "target": f"sim-{i % 4}",
                "provider": "openai",
                "model": "gpt-realtime",
                "kind": "load",
                "scenario": "default",
                "outcome": "ok",
            },
            {
                "ttfa_ms": 250.0 + (i % 997) / 3,
                "turn_ms": 900.5,
                "rtf": 1.4,
                "stalls": i % 3,
                "turn_index": i % 4,
                "session_id": f"s{i // 4}",
            },
            BASE + i * 1000,
        )
        for i in range(start, start + n)
    ]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def throughput(server: InfluxServer, n: int, chunk: int) -> None:
    server.create_database("bench")
    out = tempfile.mkdtemp(prefix="vp-bench-outbox-")
    pts = make_points(0, n)
    sink = build_sink([InfluxV1Sink(url=server.url, database="bench")], outbox_dir=out)
    c0, t0 = cpu_s(), time.perf_counter()
    for i in range(0, n, chunk):
        sink.write(pts[i : i + chunk])
    t_write = time.perf_counter() - t0
    ok = sink.flush(300)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    h = sink.health()
    sink.close()
    count = server.rows("SELECT count(ttfa_ms) FROM turn", "bench")[0]["count"]
    print("\n## throughput: outbox + v1 sink -> influxd 1.6.7 (loopback)\n")
    print(
        "| points | write() calls of | write() wall s | end-to-end wall s | points/s (wall) | process CPU s | points per CPU s | delivered | stored in influxd |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {n:,} | {chunk} | {t_write:.2f} | {wall:.2f} | {n / wall:,.0f} | {cpu:.2f} | {n / cpu:,.0f} | {h['delivered']:,} | {count:,} |"
    )
    if not ok:
        print("(flush timed out: not every point was delivered)")


def outage(server: InfluxServer, seconds: float, rate: int) -> None:
    server.create_database("bench_outage")
    out = tempfile.mkdtemp(prefix="vp-bench-outage-")
    sink = build_sink(
        [InfluxV1Sink(url=server.url, database="bench_outage")],
        outbox_dir=out,
        backoff_initial_s=0.5,
        backoff_max_s=2.0,
    )
    proc = psutil.Process()
    server.stop()
    print(f"\n## outage: influxd stopped, writing {rate:,} points/s for {seconds:.0f} s\n")
    print("| t s | points written | pending | outbox disk MB | RSS MB | worst write() ms |")
    print("|---|---|---|---|---|---|")
    step = 0.1
    per_step = int(rate * step)
    i, worst = 0, 0.0
    t0 = time.monotonic()
    next_report = 0.0
    rss, lat = [], []
    while True:
        now = time.monotonic() - t0
        if now >= next_report:
            r = proc.memory_info().rss / 1e6
            rss.append(r)
            h = sink.health()
            print(
                f"| {now:.0f} | {i:,} | {h['pending']:,} | {dir_bytes(out) / 1e6:.1f} | {r:.1f} | {worst * 1000:.1f} |"
            )
            next_report += 10.0
        if now >= seconds:
            break
        t = time.perf_counter()
        sink.write(make_points(i, per_step))
        lat.append(time.perf_counter() - t)
        worst = max(worst, lat[-1])
        i += per_step
        time.sleep(max(0.0, t0 + (i / rate) - time.monotonic()))
    server.start()
    t1 = time.monotonic()
    ok = sink.flush(600)
    drain = time.monotonic() - t1
    h = sink.health()
    sink.close()
    count = server.rows("SELECT count(ttfa_ms) FROM turn", "bench_outage")[0]["count"]
    print(
        f"\nafter restart: drained {h['delivered']:,} points in {drain:.1f} s "
        f"({h['delivered'] / max(drain, 1e-9):,.0f} points/s), stored {count:,}, "
        f"dropped {h['dropped']}, RSS min/max during outage {min(rss):.1f}/{max(rss):.1f} MB, ok={ok}"
    )
    lat.sort()
    print(
        f"write() of {per_step} points during the outage: p50 {lat[len(lat) // 2] * 1e3:.2f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms ({len(lat)} calls)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=5000)
    a = ap.parse_args()
    server = InfluxServer()
    server.start()
    try:
        throughput(server, a.points, a.chunk)
        if a.outage_s > 0:
            outage(server, a.outage_s, a.rate)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
