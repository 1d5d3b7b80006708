"""The outbox's byte bound end to end, without writing 512 MiB: the same bound, set small.

During a real influxd outage, points go through `build_sink` (the path `serve`, `load` and
`probe` use) into an outbox whose `max_bytes` is 64 KiB. Pending bytes never pass the bound;
the oldest points are dropped, counted (`dropped`, also in `/status` and `/metrics` of the probe
service) and logged; when influxd is back, exactly the newest points arrive, intact. And the
bound a user gets when nothing is set is 512 MiB.
"""

from __future__ import annotations

import inspect
import logging

import pytest

from telemetry.outbox import Outbox
from telemetry.points import Point
from telemetry.sinks import InfluxV1Sink
from telemetry.wiring import build_sink

BOUND = 64 * 1024


def points(a: int, b: int) -> list[Point]:
    # ~90 bytes of line protocol each; a per-point payload so arrival can be checked exactly
    return [Point("bound", {"target": "t1"}, {"seq": i, "pad": f"p{i:08d}-" + "x" * 30},
                  1_700_000_000_000_000_000 + i * 1000) for i in range(a, b)]


def test_the_default_bound_is_512_mib(tmp_path) -> None:
    assert inspect.signature(Outbox).parameters["max_bytes"].default == 512 * 1024 * 1024
    sink = build_sink([InfluxV1Sink(url="http://127.0.0.1:9", database="d")],
                      outbox_dir=str(tmp_path))
    try:
        assert sink.max_bytes == 512 * 1024 * 1024 and sink.max_points == 2_000_000
    finally:
        sink.close(timeout=0.1)


@pytest.mark.system
def test_byte_bound_drops_the_oldest_counts_and_delivers_the_newest(
        influx_factory, tmp_path, caplog) -> None:
    from scheduler.config import ServiceConfig
    from scheduler.service import ProbeService
    from scheduler.status_http import StatusServer
    from telemetry.recorder import Recorder

    server = influx_factory()
    server.create_database("bound")
    server.stop()  # the outage
    sink = build_sink([InfluxV1Sink(url=server.url, database="bound")],
                      outbox_dir=str(tmp_path / "outbox"), max_bytes=BOUND,
                      backoff_initial_s=0.05, backoff_max_s=0.2)
    assert isinstance(sink, Outbox) and sink.max_bytes == BOUND
    recorder = Recorder(sink)
    svc = ProbeService(ServiceConfig(agent="bound-test", probes=[]), {}, {}, recorder)
    caplog.set_level(logging.WARNING, logger="telemetry.outbox")
    written, worst = 0, 0
    for a in range(0, 4000, 100):  # ~360 KB of line protocol in 40 writes
        sink.write(points(a, a + 100))
        written += 100
        h = sink.health()
        worst = max(worst, h["pending_bytes"])
        assert h["pending"] + h["dropped"] == written  # every point pending or counted
    h = sink.health()
    print(f"\n{written} points written during the outage: {h['pending']} pending "
          f"({h['pending_bytes']} bytes, bound {BOUND}), {h['dropped']} dropped")
    assert worst <= BOUND and h["dropped"] > 0 and h["delivered"] == 0
    assert BOUND - 100 * 100 < h["pending_bytes"]  # dropped only what was needed (~1 write)
    full = [r for r in caplog.records if "full" in r.getMessage()]
    assert len(full) == 1 and f"{BOUND} bytes max" in full[0].getMessage()  # once a minute

    status = svc.status()["outbox"]  # what /status shows
    assert (status["dropped"], status["pending"]) == (h["dropped"], h["pending"])
    http = StatusServer(svc.status, "127.0.0.1", 0).start()
    try:
        import urllib.request

        with urllib.request.urlopen(http.url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        http.stop()
    assert f'voicepulse_outbox{{stat="dropped"}} {h["dropped"]}' in metrics

    server.start()  # influxd is back on the same port and data dir
    assert sink.flush(30.0)
    rows = server.rows('SELECT "seq", "pad" FROM "bound"', "bound")
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(written - h["pending"], written))  # the newest, in order, no gap
    assert all(r["pad"] == f"p{r['seq']:08d}-" + "x" * 30 for r in rows)  # intact
    assert sink.health()["dropped"] == h["dropped"]  # delivery drops nothing more
    recorder.close(timeout=5)
