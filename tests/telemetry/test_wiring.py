"""telemetry.wiring: one destination gives the sink, the recorder and the query, and what the
recorder writes is what the query reads."""

from __future__ import annotations

import os

from telemetry.embedded import EmbeddedStore
from telemetry.outbox import Outbox
from telemetry.query import EmbeddedQuery, InfluxQuery
from telemetry.recorder import FanOut
from telemetry.sinks import InfluxV1Sink, InfluxV2Sink, outbox_name
from telemetry.wiring import Telemetry

from .helpers import make_result


def test_without_sinks_the_recorder_writes_where_the_query_reads(tmp_path):
    tel = Telemetry(store=str(tmp_path / "vp.db"), outbox=str(tmp_path / "outbox"))
    assert tel.where == f"the embedded store {tmp_path / 'vp.db'}"
    recorder = tel.recorder(interval_s=3600)
    for i in range(3):
        recorder.record(make_result(i, started_at=1_790_000_000.0))
    assert recorder.close(timeout=10.0)
    query = tel.query()
    try:
        assert isinstance(query, EmbeddedQuery)
        (row,) = query.summary(start_ns=0, end_ns=2_000_000_000 * 10**9)
        assert (row.target, row.sessions, row.turns) == ("sim-fast", 3, 6)
    finally:
        query.close()
    assert not os.path.exists(tmp_path / "outbox")  # no network sink: no outbox made


def test_one_influx_sink_is_written_through_its_outbox_and_read_by_influxql(tmp_path):
    cfg = InfluxV1Sink(url="http://127.0.0.1:9/", database="vp")  # nothing listens: never sent
    tel = Telemetry(sinks=(cfg,), store=str(tmp_path / "unused.db"), outbox=str(tmp_path / "ob"))
    assert tel.where == "InfluxDB"
    sink = tel.sink(start=False)  # outbox options pass through; no delivery thread
    try:
        assert isinstance(sink, Outbox)
        assert sink.path == str(tmp_path / "ob" / (outbox_name(cfg) + ".sqlite"))
    finally:
        sink.close(timeout=0.1)
    query = tel.query()
    try:
        assert isinstance(query, InfluxQuery)
        assert (query.url, query.database) == ("http://127.0.0.1:9", "vp")
    finally:
        query.close()
    assert not os.path.exists(tmp_path / "unused.db")  # the embedded store was not touched


def test_two_sinks_fan_out_and_the_first_answers_queries(tmp_path):
    v2 = InfluxV2Sink(url="http://127.0.0.1:9", org="o", bucket="b2")
    v1 = InfluxV1Sink(url="http://127.0.0.1:9", database="d1")
    tel = Telemetry(sinks=(v2, v1), outbox=str(tmp_path / "ob"))
    sink = tel.sink(start=False)
    try:
        assert isinstance(sink, FanOut)
        assert sink.names == [outbox_name(v2), outbox_name(v1)]
        assert all(isinstance(s, Outbox) for s in sink.sinks)
    finally:
        sink.close(timeout=0.1)
    query = tel.query()
    try:
        assert query.database == "b2"
    finally:
        query.close()


def test_none_means_the_defaults(tmp_path, monkeypatch):
    """A load plan without a store (recording into InfluxDB) passes None: the defaults apply."""
    monkeypatch.chdir(tmp_path)
    sink = Telemetry(store=None, outbox=None).sink()
    try:
        assert isinstance(sink, EmbeddedStore) and sink.path == "voicepulse.db"
    finally:
        sink.close()
