"""The Recorder under gevent monkey-patching (Locust workers), and fan-out isolation."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from telemetry.points import session_points
from telemetry.sinks import InfluxV1Sink
from telemetry.wiring import build_sink

from .helpers import make_result

pytestmark = pytest.mark.system
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GEVENT_CHILD = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import sys, time, gevent
    from telemetry.sinks import InfluxV1Sink
    from telemetry.wiring import build_sink
    from telemetry.recorder import Recorder
    from tests.telemetry.helpers import make_result
    rec = Recorder(build_sink([InfluxV1Sink(url=sys.argv[1], database="gev")],
                              outbox_dir=sys.argv[2]), interval_s=0.5)
    def worker(k):
        for i in range(50):
            rec.record(make_result(k * 1000 + i, started_at=time.time() - 100))
            gevent.sleep(0.002)
    gevent.joinall([gevent.spawn(worker, k) for k in range(10)], timeout=30)
    ok = rec.close(20)
    h = rec.health()
    print(ok, h["delivered"], h["pending"], h["write_errors"])
    """
)


def test_recorder_under_gevent_monkey_patching(influxd, tmp_path):
    influxd.create_database("gev")
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_CHILD, influxd.url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ok, delivered, pending, errors = out.stdout.split()
    assert (ok, pending, errors) == ("True", "0", "0")
    (turns,) = influxd.rows("SELECT count(ttfa_ms) FROM turn", "gev")
    (sessions,) = influxd.rows("SELECT count(ok) FROM session", "gev")
    assert (turns["count"], sessions["count"]) == (1000, 500)
    (lat,) = influxd.rows("SELECT sum(count) FROM latency WHERE metric = 'ttfa_ms'", "gev")
    assert lat["sum"] == 1000  # every turn's TTFA landed in exactly one interval
    assert int(delivered) >= 1500


def test_a_hanging_sink_does_not_stall_the_other(influxd, tmp_path):
    influxd.create_database("fan")
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # accepts, never answers
    try:
        sink = build_sink(
            [
                InfluxV1Sink(url=f"http://127.0.0.1:{hang.getsockname()[1]}", database="x"),
                InfluxV1Sink(url=influxd.url, database="fan"),
            ],
            outbox_dir=str(tmp_path),
        )
        pts = [p for i in range(50) for p in session_points(make_result(i))]
        sink.write(pts)
        good = sink.sinks[1]
        assert good.flush(10.0)
        h = sink.health()
        assert h["sinks"][sink.names[1]]["delivered"] == 150
        assert h["sinks"][sink.names[0]]["pending"] == 150
        assert not sink.close(0.2)
    finally:
        hang.close()
    (row,) = influxd.rows("SELECT count(ok) FROM session", "fan")
    assert row["count"] == 50
