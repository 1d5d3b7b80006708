"""The embedded store, the Recorder facade and the query layer over SQLite (no servers)."""

import threading
import time

import pytest

from telemetry.embedded import EmbeddedStore
from telemetry.points import LoadgenSample, Point, alert_point, session_points
from telemetry.query import open_query
from telemetry.recorder import FanOut, Recorder
from telemetry.stats import percentile as nearest_rank
from telemetry.wiring import build_sink

from .helpers import make_result


def test_build_sink_without_sinks_is_the_embedded_store(tmp_path):
    sink = build_sink([], store_path=str(tmp_path / "x.db"), outbox_dir=str(tmp_path / "ob"))
    assert isinstance(sink, EmbeddedStore) and sink.path == str(tmp_path / "x.db")
    sink.close()


def test_same_names_as_influx_and_new_fields_add_columns(tmp_path):
    store = EmbeddedStore(str(tmp_path / "vp.db"))
    store.write(session_points(make_result(1, run_id="r")))
    store.write([Point("turn", {"target": "t", "new tag": "x"}, {"brand new": 1.5}, 5)])
    cols = store.columns("turn")
    assert cols["target"] == "tag" and cols["new tag"] == "tag"
    assert (
        cols["ttfa_ms"] == "field"
        and cols["brand new"] == "field"
        and cols["session_id"] == "field"
    )
    rows = store.select("turn", ("time_ns", "brand new", "turn_index"), order="time_ns")
    assert rows[0] == (5, 1.5, None)
    store.close()
    # a second process (here: connection) sees the columns and rows
    again = EmbeddedStore(str(tmp_path / "vp.db"))
    assert again.query("SELECT count(*) FROM turn")[0][0] == 3
    again.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    store = EmbeddedStore(str(tmp_path / "vp.db"))

    def work(k):
        for i in range(50):
            store.write(session_points(make_result(k * 1000 + i)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert store.query("SELECT count(*) FROM session")[0][0] == 400
    assert store.query("SELECT count(*) FROM turn")[0][0] == 800
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    store.close()


def test_recorder_writes_results_latency_alerts_and_loadgen(tmp_path):
    path = str(tmp_path / "vp.db")
    rec = Recorder(build_sink([], store_path=path), interval_s=0.2)
    results = [make_result(i, started_at=time.time() - 120) for i in range(10)]
    for r in results:
        rec.record(r)
    now = time.time_ns()
    rec.write(
        [
            alert_point(
                rule="ttfa-p95",
                target="sim-fast",
                severity="page",
                state="firing",
                value=950.0,
                threshold=900.0,
                message="p95 950 > 900",
                time_ns=now,
            )
        ]
    )
    rec.write(
        [
            LoadgenSample(
                "run-1",
                "default",
                "w1",
                users=10,
                active_sessions=7,
                arrivals_due=5,
                arrivals_started=4,
                late_starts=1,
                send_lag_p99_ms=2.5,
                cpu_pct=40.0,
            ).point(now)
        ]
    )
    q = open_query(path)
    # the background flusher writes the closed interval's latency points by itself
    # (records made across an interval boundary land in two intervals: wait for both)
    def counted() -> int:
        h = q.merged_histograms("ttfa_ms").get("sim-fast")
        return h.get_total_count() if h else 0

    deadline = time.monotonic() + 5
    while counted() < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    hists = q.merged_histograms("ttfa_ms")
    assert hists["sim-fast"].get_total_count() == 20
    assert rec.close(5.0)
    (a,) = q.alerts()
    assert (a.rule, a.state, a.value, a.threshold, a.message) == (
        "ttfa-p95",
        "firing",
        950.0,
        900.0,
        "p95 950 > 900",
    )
    (lg,) = q.loadgen(run_id="run-1")
    assert lg.values["late_starts"] == 1 and lg.worker == "w1"
    (s,) = q.summary()
    ttfa = sorted(t.ttfa_ms for r in results for t in r.turns)
    assert s.sessions == 10 and s.turns == 20 and s.success_ratio == 1.0
    assert s.ttfa_p50 == nearest_rank(ttfa, 50) and s.ttfa_max == ttfa[-1]
    assert s.stalls == 10 and s.cost_per_audio_min == pytest.approx(0.04 / (30 / 60))
    assert q.summary(since_s=1) == []  # the results are minutes old
    assert [v.value for v in q.turn_values("ttfa_ms")] == [
        t.ttfa_ms for r in results for t in r.turns
    ]


def test_recorder_close_writes_the_open_interval(tmp_path):
    path = str(tmp_path / "vp.db")
    rec = Recorder(build_sink([], store_path=path), interval_s=3600)
    rec.record(make_result(1))
    assert open_query(path).merged_histograms("ttfa_ms") == {}
    rec.close()
    assert open_query(path).merged_histograms("ttfa_ms")["sim-fast"].get_total_count() == 2


def test_recorder_never_raises_on_a_broken_sink(tmp_path):
    class Broken:
        def write(self, points):
            raise OSError("disk full")

        def flush(self, timeout=None):
            return False

        def close(self, timeout=None):
            return False

        def health(self):
            return {}

    rec = Recorder(Broken(), interval_s=10)
    rec.record(make_result(1))
    assert rec.health()["write_errors"] == 1
    rec.close()


def test_fanout_health_and_isolation(tmp_path):
    a, b = EmbeddedStore(str(tmp_path / "a.db")), EmbeddedStore(str(tmp_path / "b.db"))
    fan = FanOut([a, b], ["a", "b"])
    fan.write(session_points(make_result(1)))
    h = fan.health()
    assert h["delivered"] == 6 and h["sinks"]["a"]["delivered"] == 3
    assert fan.close(1.0)


def test_percentile_and_error_queries(tmp_path):
    path = str(tmp_path / "vp.db")
    store = EmbeddedStore(path)
    pts = []
    for i in range(20):
        pts += session_points(make_result(i, outcome="ok" if i % 5 else "http_503"))
    store.write(pts)
    q = open_query(path)
    (r,) = q.success_ratio(start_ns=0).values()
    assert (r.ok, r.total) == (16, 20) and r.ratio == 0.8
    errs = q.error_counts(start_ns=0, bucket_s=35)
    assert sum(e.count for e in errs) == 4 and {e.outcome for e in errs} == {"http_503"}
    assert len(errs) == 4  # sessions 7 s apart * 5 = 35 s: one failure per bucket
    below = q.count_below("ttfa_ms", 350.0, start_ns=0)["sim-fast"]
    vals = [v.value for v in q.turn_values("ttfa_ms", start_ns=0)]
    assert below.total == len(vals) == 32 and below.ok == sum(v < 350 for v in vals)
    assert q.summary(start_ns=0, targets=["nope"]) == []
    assert q.summary(start_ns=0, kind="load") == []
