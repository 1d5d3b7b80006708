"""Line protocol escaping and result -> point mapping (pure)."""

import pytest

from telemetry.points import Point, alert_point, session_points, to_line

from .helpers import make_result


def test_escaping_of_every_position():
    p = Point(
        "my meas,x",
        {"tag key": "a,b=c d", "empty": ""},
        {"f k=1": 'say "hi"\\ now\nnext', "n": 3, "x": 2.0, "b": True},
        123,
    )
    assert to_line(p) == (
        "my\\ meas\\,x,tag\\ key=a\\,b\\=c\\ d "
        'f\\ k\\=1="say \\"hi\\"\\\\ now\nnext",n=3i,x=2.0,b=true 123'
    )


def test_int_and_float_kept_apart_and_nan_skipped():
    line = to_line(Point("m", {}, {"i": 1, "f": 1.0, "nan": float("nan"), "none": None}, 5))
    assert line == "m i=1i,f=1.0 5"
    with pytest.raises(ValueError):
        to_line(Point("m", {}, {"nan": float("inf")}, 5))


def test_precision_truncates_timestamp():
    assert to_line(Point("m", {}, {"v": 1}, 1_234_567_890), "ms").endswith(" 1234")


def test_session_points_schema_and_types():
    r = make_result(3, run_id="run-1", agent="eu")
    pts = session_points(r)
    turns = [p for p in pts if p.measurement == "turn"]
    (sess,) = [p for p in pts if p.measurement == "session"]
    assert len(turns) == 2
    for p in turns + [sess]:
        assert set(p.tags) == {
            "target",
            "provider",
            "model",
            "kind",
            "scenario",
            "agent",
            "outcome",
            "transport",
        }
        assert "session_id" not in p.tags and "run_id" not in p.tags and "error" not in p.tags
    t0 = turns[0]
    assert t0.fields["session_id"] == r.session_id and t0.fields["run_id"] == "run-1"
    assert isinstance(t0.fields["stalls"], int) and isinstance(t0.fields["ttfa_ms"], float)
    assert t0.fields["turn_index"] == 0 and turns[1].fields["turn_index"] == 1
    # the turn's time is E on the wall clock: anchor + (E - connect start), within 1 µs
    expected = int(r.started_at * 1e9) + 2_000_000_000
    assert abs(t0.time_ns - expected) < 1000
    assert turns[1].time_ns - t0.time_ns == pytest.approx(2e9, abs=1000)
    assert sess.fields["ok"] == 1 and sess.fields["turns"] == 2
    assert sess.fields["cost_usd"] == pytest.approx(0.004)


def test_turn_timestamps_unique_even_when_turns_coincide():
    """Two sessions whose turns end in the same microsecond still get distinct timestamps."""
    a, b = make_result(1), make_result(1)
    b.session_id = "another-session"
    ta = [p.time_ns for p in session_points(a)]
    tb = [p.time_ns for p in session_points(b)]
    assert ta != tb
    assert all(x // 1000 == y // 1000 for x, y in zip(ta, tb, strict=True))  # same µs


def test_failed_session_has_error_field_not_tag():
    r = make_result(2, outcome="http_401")
    (sess,) = session_points(r)
    assert sess.tags["outcome"] == "http_401" and sess.fields["ok"] == 0
    assert sess.fields["error"] == "failed: http_401"


def test_alert_point():
    p = alert_point(
        rule="r",
        target="t",
        severity="page",
        state="firing",
        value=2.0,
        threshold=1.0,
        message="burn, rate",
        time_ns=9,
    )
    assert (
        to_line(p)
        == 'alert,rule=r,severity=page,state=firing,target=t message="burn, rate",value=2.0,threshold=1.0 9'
    )


def test_numpy_scalars_become_plain_line_protocol(tmp_path):
    import numpy as np

    from telemetry.embedded import EmbeddedStore

    p = Point("m", {"t": "x"}, {"f": np.float64(1.5), "i": np.int64(7), "b": np.bool_(True)}, 1)
    assert to_line(p) == "m,t=x f=1.5,i=7i,b=true 1"
    store = EmbeddedStore(str(tmp_path / "vp.db"))
    store.write([p])
    assert store.select("m", ("f", "i", "b")) == [(1.5, 7, 1)]
    store.close()


def test_unset_anchor_stamps_about_now():
    import time

    r = make_result(1)
    r.started_at = 0.0
    (first, *_rest) = session_points(r)
    assert abs(first.time_ns / 1e9 - time.time()) < 60
