"""The v1 path against a real influxd 1.6.7: exact round trip, dead letters, the query layer."""

import json
import os
import time

import pytest

from telemetry.embedded import EmbeddedStore
from telemetry.hdr import IntervalAggregator
from telemetry.points import Point, session_points
from telemetry.query import open_query
from telemetry.sinks import InfluxV1Sink
from telemetry.wiring import build_sink

from .helpers import make_result

pytestmark = pytest.mark.system

TRICKY = [
    "plain",
    "with space",
    "comma,inside",
    "equals=sign",
    'double "quotes"',
    "single 'quote'",
    "back\\slash",
    "unicode ünïcødé 語 🎙",
]


def _db(influxd, name):
    influxd.create_database(name)
    return InfluxV1Sink(url=influxd.url, database=name)


def test_round_trip_exact_types_timestamps_and_tricky_values(influxd, tmp_path):
    cfg = _db(influxd, "rt")
    sink = build_sink([cfg], outbox_dir=str(tmp_path))
    base = 1_790_000_000_123_456_789
    points = []
    for i, v in enumerate(TRICKY):
        points.append(
            Point(
                "round trip",
                {"target": v, "kind": "probe"},
                {"text": v + "\nsecond line", "f": 1.0 + i, "n": i, "b": i % 2 == 0},
                base + i,
            )
        )
    sink.write(points)
    assert sink.flush(10.0)
    assert sink.health()["delivered"] == len(points)
    sink.close()
    rows = influxd.rows('SELECT * FROM "round trip"', "rt")
    assert len(rows) == len(TRICKY)
    for i, (row, v) in enumerate(zip(rows, TRICKY, strict=True)):
        assert row["time"] == base + i  # ns exact
        assert row["target"] == v
        assert row["text"] == v + "\nsecond line"
        assert row["n"] == i and row["f"] == 1.0 + i and row["b"] is (i % 2 == 0)
    types = {
        r["fieldKey"]: r["fieldType"]
        for r in influxd.rows('SHOW FIELD KEYS FROM "round trip"', "rt")
    }
    assert types == {"text": "string", "f": "float", "n": "integer", "b": "boolean"}


def test_session_points_round_trip(influxd, tmp_path):
    cfg = _db(influxd, "sess")
    sink = build_sink([cfg], outbox_dir=str(tmp_path))
    results = [make_result(i, run_id="r1") for i in range(20)]
    expected = [p for r in results for p in session_points(r)]
    sink.write(expected)
    assert sink.flush(10.0)
    sink.close()
    rows = influxd.rows("SELECT * FROM turn GROUP BY *", "sess")
    assert len(rows) == 40
    got = {(r["session_id"], r["turn_index"]): r for r in rows}
    for p in expected:
        if p.measurement != "turn":
            continue
        row = got[(p.fields["session_id"], p.fields["turn_index"])]
        assert row["time"] == p.time_ns
        assert row["ttfa_ms"] == pytest.approx(p.fields["ttfa_ms"], rel=1e-15)
        assert row["target"] == p.tags["target"] and row["outcome"] == "ok"


def test_missing_database_is_dead_lettered_with_server_reason(influxd, tmp_path):
    sink = build_sink(
        [InfluxV1Sink(url=influxd.url, database="does_not_exist")], outbox_dir=str(tmp_path)
    )
    sink.write([Point("m", {}, {"v": 1}, 1)])
    assert sink.flush(10.0)  # nothing pending: the batch went to the dead letter
    h = sink.health()
    assert h["dead_lettered"] == 1 and h["delivered"] == 0
    dead = sink.dead_letter_path
    sink.close()
    (rec,) = [json.loads(x) for x in open(dead)]
    assert rec["status"] == 404 and "database not found" in rec["reason"]
    assert rec["lines"] == "m v=1i 1"


def test_bad_batch_is_dead_lettered_and_later_batches_delivered(influxd, tmp_path):
    cfg = _db(influxd, "conflict")
    sink = build_sink([cfg], outbox_dir=str(tmp_path))
    sink.write([Point("m", {}, {"v": 1}, 1_000)])
    assert sink.flush(10.0)
    sink.write([Point("m", {}, {"v": "now a string"}, 2_000)])  # field type conflict -> 400
    assert sink.flush(10.0)
    sink.write([Point("m", {}, {"v": 3}, 3_000)])
    assert sink.flush(10.0)
    h = sink.health()
    assert (h["delivered"], h["dead_lettered"], h["pending"]) == (2, 1, 0)
    rec = json.loads(open(sink.dead_letter_path).read().splitlines()[0])
    assert rec["status"] == 400 and "field type conflict" in rec["reason"]
    sink.close()
    assert [r["v"] for r in influxd.rows("SELECT v FROM m", "conflict")] == [1, 3]


def test_bad_credentials_are_dead_lettered(influx_factory, tmp_path, monkeypatch):
    server = influx_factory(auth=True)
    server.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES")
    server.query('CREATE DATABASE "authdb"', auth=("admin", "right"))
    monkeypatch.setenv("VP_TEST_USER", "admin")
    monkeypatch.setenv("VP_TEST_PASSWORD", "wrong")
    cfg = InfluxV1Sink(
        url=server.url,
        database="authdb",
        username_env="VP_TEST_USER",
        password_env="VP_TEST_PASSWORD",
    )
    sink = build_sink([cfg], outbox_dir=str(tmp_path / "bad"))
    sink.write([Point("m", {}, {"v": 1}, 1)])
    assert sink.flush(10.0)
    assert sink.health()["dead_lettered"] == 1
    rec = json.loads(open(sink.dead_letter_path).read())
    assert rec["status"] == 401 and "authorization failed" in rec["reason"]
    assert "wrong" not in open(sink.dead_letter_path).read()  # no secret in the dead letter
    sink.close()
    monkeypatch.setenv("VP_TEST_PASSWORD", "right")
    good = build_sink([cfg], outbox_dir=str(tmp_path / "good"))
    good.write([Point("m", {}, {"v": 1}, 1)])
    assert good.flush(10.0) and good.health()["delivered"] == 1
    good.close()


def test_query_layer_gives_the_same_answers_from_influxd_and_embedded(influxd, tmp_path):
    cfg = _db(influxd, "q")
    store = EmbeddedStore(str(tmp_path / "vp.db"))
    sink = build_sink([cfg], outbox_dir=str(tmp_path / "ob"))
    agg = IntervalAggregator(10)
    results = [make_result(i, target=t) for i in range(30) for t in ("sim-fast", "sim-slow")]
    results += [
        make_result(100 + i, outcome=o)
        for i, o in enumerate(["http_429", "http_429", "timeout:connect"])
    ]
    points = []
    for r in results:
        points += session_points(r)
        agg.add(r, now_s=r.started_at)
    points += agg.flush(force=True)
    store.write(points)
    sink.write(points)
    assert sink.flush(15.0)
    sink.close()
    emb, ifx = open_query(str(tmp_path / "vp.db")), open_query(influx=cfg)
    w = {"start_ns": 0, "end_ns": time.time_ns()}
    s_emb, s_ifx = emb.summary(**w), ifx.summary(**w)
    assert s_emb == s_ifx
    fast = [s for s in s_emb if s.target == "sim-fast"][0]
    assert (
        fast.sessions == 33
        and fast.ok_sessions == 30
        and fast.errors == {"http_429": 2, "timeout:connect": 1}
    )
    raw = sorted(t.ttfa_ms for r in results if r.target == "sim-fast" for t in r.turns)
    assert fast.ttfa_max == raw[-1]
    assert emb.percentiles_over_time("ttfa_ms", 60, **w) == ifx.percentiles_over_time(
        "ttfa_ms", 60, **w
    )
    assert emb.error_counts(bucket_s=60, **w) == ifx.error_counts(bucket_s=60, **w)
    assert emb.turn_values("ttfa_ms", targets=["sim-slow"], **w) == ifx.turn_values(
        "ttfa_ms", targets=["sim-slow"], **w
    )
    assert emb.success_ratio(**w) == ifx.success_ratio(**w)
    assert emb.count_below("ttfa_ms", 300.0, **w) == ifx.count_below("ttfa_ms", 300.0, **w)
    # the backend primitive, even for tags alone (InfluxQL needs a field: the layer adds one)
    for m, cols in (
        ("session", ("target", "kind", "outcome", "run_id")),
        ("latency", ("target", "kind", "scenario", "agent")),
        ("turn", ("target", "outcome")),
    ):
        e, i = emb.select(m, cols, 0, w["end_ns"]), ifx.select(m, cols, 0, w["end_ns"])
        assert len(e) == sum(p.measurement == m for p in points)
        assert sorted(e, key=repr) == sorted(i, key=repr), m
    assert os.path.exists(tmp_path / "vp.db")


def test_a_rejected_batch_is_split_so_only_the_bad_write_is_dead_lettered(influxd, tmp_path):
    cfg = _db(influxd, "split")
    influxd.write("m v=0i 1", "split")  # v is an integer field from now on
    sink = build_sink([cfg], outbox_dir=str(tmp_path), start=False)
    sink.write([Point("m", {}, {"v": i}, 1000 + i) for i in range(10)])
    sink.write([Point("m", {}, {"v": "text"}, 5000)])  # field type conflict
    sink.write([Point("m", {}, {"v": i}, 1000 + i) for i in range(10, 20)])
    sink.start()  # all three writes are pending: the first attempt sends them as one batch
    assert sink.flush(10.0)
    h = sink.health()
    assert (h["delivered"], h["dead_lettered"]) == (20, 1)
    (rec,) = [json.loads(x) for x in open(sink.dead_letter_path)]
    assert rec["lines"] == 'm v="text" 5000' and rec["status"] == 400
    sink.close()
    assert [r["v"] for r in influxd.rows("SELECT v FROM m WHERE time >= 1000", "split")] == list(
        range(20)
    )
