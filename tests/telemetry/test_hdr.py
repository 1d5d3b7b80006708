"""HDR clamping, interval aggregation and exact merging of stored blobs (pure)."""

import random

import numpy as np
import pytest

from telemetry.hdr import HIGHEST_US, IntervalAggregator, merge_blobs, percentiles_ms
from telemetry.stats import percentile as nearest_rank

from .helpers import make_result

KEY = ("sim", "m", "probe", "default", "", "ttfa_ms")


def test_out_of_range_values_are_clamped_and_counted():
    agg = IntervalAggregator(10)
    for v in (0.0, -5.0, 0.5, 700_000_000.0 / 1000 * 1000):  # 0, negative, 0.5 ms, 700 000 s
        agg.record(KEY, v, now_s=100.0)
    (p,) = agg.flush(now_s=200.0)
    assert p.fields["count"] == 4
    assert p.fields["clamped"] == 3  # 0 ms, -5 ms and 700 000 s; 0.5 ms = 500 µs is in range
    h = merge_blobs([p.fields["hdr"]])
    assert h.get_total_count() == 4
    assert h.get_max_value() >= HIGHEST_US


def test_intervals_close_on_boundaries_and_each_is_written_once():
    agg = IntervalAggregator(10)
    agg.add(make_result(1), now_s=1000.5)
    agg.add(make_result(2), now_s=1009.9)
    agg.add(make_result(3), now_s=1010.0)
    assert agg.flush(now_s=1009.99) == []
    first = agg.flush(now_s=1010.0)
    assert {p.time_ns for p in first} == {1000 * 10**9}
    ttfa = [p for p in first if p.tags["metric"] == "ttfa_ms"][0]
    assert ttfa.fields["count"] == 4  # two sessions x two turns
    assert agg.flush(now_s=1015) == []
    rest = agg.flush(force=True, now_s=1015)
    assert {p.time_ns for p in rest} == {1010 * 10**9}
    assert {p.tags["metric"] for p in rest} >= {"ttfa_ms", "turn_ms", "connect_ms", "ready_ms"}


def test_point_fields_match_raw_values():
    agg = IntervalAggregator(10)
    rng = random.Random(7)
    vals = [rng.lognormvariate(5.5, 0.4) for _ in range(5000)]
    for v in vals:
        agg.record(KEY, v, now_s=50.0)
    (p,) = agg.flush(force=True)
    s = sorted(vals)
    assert p.fields["count"] == 5000
    assert p.fields["mean"] == pytest.approx(sum(vals) / len(vals), rel=1e-12)
    assert p.fields["max"] == s[-1] and p.fields["min"] == s[0]
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        assert p.fields[name] == pytest.approx(nearest_rank(s, q), rel=1e-3)


@pytest.mark.slow
def test_merge_over_an_hour_of_intervals_equals_raw_and_averaging_does_not():
    """360 intervals of 10 s; the load changes over the hour (a slow half hour with few
    samples), so the mean of per-interval p99s is far from the p99 of the hour."""
    rng = np.random.default_rng(42)
    agg = IntervalAggregator(10)
    raw = []
    for i in range(360):
        slow = 120 <= i < 150
        n = 20 if slow else 400
        vals = rng.lognormal(np.log(900 if slow else 250), 0.25, n)
        raw.extend(vals)
        for v in vals:
            agg.record(KEY, float(v), now_s=i * 10 + 1)
    points = agg.flush(force=True)
    assert len(points) == 360
    merged = merge_blobs(p.fields["hdr"] for p in points)
    assert merged.get_total_count() == len(raw)
    s = np.sort(raw)
    ps = percentiles_ms(merged, (50, 90, 99, 99.9))
    for q, v in ps.items():
        exact = nearest_rank(s, q)
        assert v == pytest.approx(exact, rel=1e-3), q  # 3 significant digits
    averaged_p99 = float(np.mean([p.fields["p99"] for p in points]))
    assert abs(averaged_p99 - ps[99]) / ps[99] > 0.10, (averaged_p99, ps[99])


def test_worker_blobs_merge_like_one_histogram():
    rng = random.Random(3)
    workers = [IntervalAggregator(10) for _ in range(4)]
    all_vals = []
    for w in workers:
        for _ in range(1000):
            v = rng.uniform(1, 3000)
            all_vals.append(v)
            w.record(KEY, v, now_s=5)
    master = IntervalAggregator(10)
    for w in workers:
        (p,) = w.flush(force=True)
        master.add_blob(KEY, p.fields["hdr"], now_s=5)
    (m,) = master.flush(force=True)
    assert m.fields["count"] == 4000
    assert m.fields["p99"] == pytest.approx(nearest_rank(sorted(all_vals), 99), rel=1e-3)


def test_series_merge_and_wire_round_trip_are_exact():
    """Merging and the worker wire form live on SeriesHistogram: exact count, sum, min, max and
    clamped survive both, so a merged percentile never depends on which process recorded it."""
    from telemetry.hdr import SeriesHistogram

    a, b, both = SeriesHistogram(), SeriesHistogram(), SeriesHistogram()
    for i, v in enumerate([12.345, 250.5, 7.001, 999.999, 3600001.0, 41.0]):
        (a if i % 2 else b).record(v)
        both.record(v)
    merged = SeriesHistogram.from_wire(a.to_wire())
    merged.merge(SeriesHistogram.from_wire(b.to_wire()))
    merged.merge(SeriesHistogram())  # an empty series changes nothing
    assert (merged.count, merged.min_ms, merged.max_ms, merged.clamped) == (
        both.count, both.min_ms, both.max_ms, both.clamped)
    assert merged.sum_ms == pytest.approx(both.sum_ms, rel=1e-12)
    assert merged.percentiles_ms() == both.percentiles_ms()


def test_a_dropped_histogram_is_freed_without_the_cyclic_collector():
    """hdrh's histogram <-> encoder cycle kept every dropped histogram (172 KiB of counts) until a
    full collection, which a Locust worker defers for the whole run: the 60-minute chaos soak's
    workers grew 5-7 % per 10 min. Ours are freed by reference counting alone, whether made,
    decoded from a blob, merged or shipped over the wire."""
    import gc
    import weakref

    from telemetry.hdr import SeriesHistogram, decode, merge_blobs, new_histogram

    h = new_histogram()
    h.record_value(1234)
    blob = h.encode()
    sh = SeriesHistogram()
    sh.record(12.5)
    made = [h, decode(blob), merge_blobs([blob, blob]), SeriesHistogram.from_wire(sh.to_wire()).hist]
    assert [x.get_total_count() for x in made] == [1, 1, 2, 1]
    refs = [weakref.ref(x) for x in made]
    gc.disable()
    try:
        del h, made, sh
        assert [r() for r in refs] == [None] * 4
    finally:
        gc.enable()
