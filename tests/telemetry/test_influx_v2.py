"""The v2 path: influxdb-client (SYNCHRONOUS) writes through the outbox into a real
/api/v2/write server (VictoriaMetrics), read back through its export API."""

import time

import pytest

from telemetry.points import Point
from telemetry.sinks import InfluxV2Sink
from telemetry.wiring import build_sink

pytestmark = pytest.mark.system


def test_v2_writes_reach_victoria_metrics(victoria_metrics, tmp_path, monkeypatch):
    monkeypatch.setenv("VP_TEST_TOKEN", "not-checked-by-vm")
    cfg = InfluxV2Sink(
        url=victoria_metrics.url,
        org="acme",
        bucket="voicepulse",
        token_env="VP_TEST_TOKEN",
        gzip=True,
    )
    sink = build_sink([cfg], outbox_dir=str(tmp_path))
    base = (time.time_ns() // 10**9 - 600) * 10**9  # recent: VM drops points outside retention
    points = [
        Point(
            "probe",
            {"target": "sim fast", "kind": "probe"},
            {"ttfa_ms": 300.0 + i, "stalls": i},
            base + i * 1_000_000_000,
        )
        for i in range(50)
    ]
    sink.write(points)
    assert sink.flush(10.0)
    h = sink.health()
    assert (h["delivered"], h["retried"], h["dead_lettered"]) == (50, 0, 0)
    sink.close()
    series = victoria_metrics.export_until(
        '{__name__="probe_ttfa_ms"}', lambda s: sum(len(x["values"]) for x in s) >= 50
    )
    (s,) = series
    assert s["metric"] == {"__name__": "probe_ttfa_ms", "target": "sim fast", "kind": "probe"}
    assert s["values"] == [300.0 + i for i in range(50)]
    assert s["timestamps"] == [
        (base + i * 1_000_000_000) // 1_000_000 for i in range(50)
    ]  # VM keeps ms
    (stalls,) = victoria_metrics.export_until('{__name__="probe_stalls"}', lambda s: bool(s))
    assert stalls["values"] == list(range(50))


def test_v2_unreachable_server_keeps_points_pending(tmp_path):
    from tests.servers import free_port

    port = free_port()
    cfg = InfluxV2Sink(url=f"http://127.0.0.1:{port}", org="orgname", bucket="bucketname")
    sink = build_sink([cfg], outbox_dir=str(tmp_path), backoff_initial_s=0.05, backoff_max_s=0.1)
    sink.write([Point("m", {}, {"v": 1.0}, 1)])
    assert not sink.flush(1.0)
    h = sink.health()
    assert h["pending"] == 1 and h["retried"] >= 2 and h["dead_lettered"] == 0
    # the error says why and where, without the write URL's query string (org, bucket)
    err = h["last_error"]
    assert "Connection refused" in err and f"port={port}" in err, err
    assert "?" not in err and "orgname" not in err and "bucketname" not in err, err
    assert not sink.close(0.1)
    # pending means on disk: the next process finds the point and would deliver it
    again = build_sink([cfg], outbox_dir=str(tmp_path), start=False)
    assert again.health()["pending"] == 1
    again.close(0)
