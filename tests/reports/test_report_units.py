"""Pure parts of the report: spectrum grid, buckets, thresholds, parameter hygiene, HTML shape."""

from __future__ import annotations

import math

import pytest

from reports.collect import nice_bucket_s, spectrum, spectrum_grid
from reports.html import safe_value
from reports.verdict import parse_threshold
from telemetry.hdr import new_histogram


def test_spectrum_grid_runs_from_0_to_what_the_count_can_tell():
    g = spectrum_grid(1_000_000)
    assert g[0] == 0.0 and g[-1] == pytest.approx(99.99)
    assert g == sorted(g) and len(g) == 4 * 24 + 1
    g = spectrum_grid(40)
    assert g[-1] == pytest.approx(97.5)  # 1 - 1/40: beyond that every percentile is the max


def test_spectrum_of_a_histogram_ends_at_its_max():
    h = new_histogram()
    for v in range(1, 1001):
        h.record_value(v * 1000)  # 1..1000 ms
    s = spectrum(h, "t", "ttfa_ms")
    assert s.count == 1000 and s.values_ms[-1] == s.max_ms == 1000.0
    assert s.values_ms == sorted(s.values_ms)
    assert len(s.percentiles) == len(s.values_ms) == 3 * 24 + 1
    # every point, the median region included (48.9 % and 53.6 % are grid points; 50 % is
    # not): the value of nearest rank ceil(p/100 * 1000), read as HDR's highest equivalent
    # (3 significant digits: at most 0.1 % above); the last point is the max by design
    for p, v in zip(s.percentiles[:-1], s.values_ms[:-1], strict=True):
        exact = float(max(1, math.ceil(round(p * 10, 9))))  # value k ms has rank k
        assert exact <= v <= min(exact * 1.001, 1000.0), (p, v, exact)
    assert s.values_ms[0] == 1.0  # p0: the minimum
    near = [v for p, v in zip(s.percentiles, s.values_ms, strict=True) if 45 < p < 55]
    assert near and all(450 < v < 550 for v in near)


def test_bucket_sizes():
    assert nice_bucket_s(30, min_s=2) == 2
    assert nice_bucket_s(3600) == 60  # at most 80 buckets
    assert nice_bucket_s(20) == 10  # never finer than the 10 s latency interval
    assert nice_bucket_s(30 * 86400) == 43200


@pytest.mark.parametrize("text, want", [
    ("ttfa_ms.p95<800", ("ttfa_ms", "p95", "<", 800.0, None)),
    ("turn_ms.p999 <= 3000", ("turn_ms", "p999", "<=", 3000.0, None)),
    ("error_rate<0.01", ("error_rate", None, "<", 0.01, None)),
    ("success_ratio>=0.99", ("success_ratio", None, ">=", 0.99, None)),
    ("connect_ms.max<50", ("connect_ms", "max", "<", 50.0, None)),
    ("late_starts==0", ("late_starts", None, "==", 0.0, None)),
    ("ttfa_ms.p95[60s]<800 abort_on_fail", ("ttfa_ms", "p95", "<", 800.0, 60.0)),
    ("ttfa_ms.p99.9<=1s", ("ttfa_ms", "p99.9", "<=", 1000.0, None)),
])
def test_thresholds_parse(text, want):
    t = parse_threshold(text)
    assert (t.metric, t.stat, t.op, t.value, t.window_s) == want
    assert t.expr == text.replace(" abort_on_fail", "").strip()


@pytest.mark.parametrize("text", ["ttfa_ms<800", "error_rate.p95<1", "ttfa_ms.p95 ~ 3", ""])
def test_bad_thresholds_say_why(text):
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(text)


def test_parameters_never_show_secrets():
    assert safe_value("api_key", "sk-123") == "(hidden)"
    assert safe_value("token_env", "X") == "(hidden)"
    assert safe_value("url", "wss://u:p@host:8443/v1/realtime?key=abc") == \
        "wss://host:8443/v1/realtime"
    assert safe_value("rate", "20/s") == "20/s"


def test_an_empty_range_still_makes_a_report(tmp_path):
    from reports import build_report
    from telemetry.query import open_query

    q = open_query(store_path=str(tmp_path / "empty.db"))
    try:
        out = build_report(q, tmp_path / "r" / "empty.html", start_ns=0, end_ns=10**18)
    finally:
        q.close()
    text = out.read_text()
    assert "No sessions were measured in this range" in text
    assert 'data-status="empty"' in text and 'class="plot"' not in text
    assert not list((tmp_path / "r").glob(".report-*"))  # the temp file was renamed away


def test_cli_time_forms():
    import time

    import click

    from voicepulse.cmd_report import parse_time

    assert parse_time("1700000000", "--from") == 1700000000 * 10**9
    assert parse_time("2023-11-14T22:13:20Z", "--from") == 1700000000 * 10**9
    assert parse_time("2023-11-14T22:13:20", "--from") == 1700000000 * 10**9  # UTC by default
    assert parse_time("2023-11-14T23:13:20+01:00", "--from") == 1700000000 * 10**9
    assert abs(parse_time("30m", "--from") - (time.time_ns() - 1800 * 10**9)) < 5 * 10**9
    with pytest.raises(click.BadParameter):
        parse_time("yesterday-ish", "--from")


def test_the_report_file_has_ordinary_permissions(tmp_path):
    import os

    from reports import build_report
    from telemetry.query import open_query

    q = open_query(store_path=str(tmp_path / "empty.db"))
    old = os.umask(0o022)
    try:
        out = build_report(q, tmp_path / "r.html", start_ns=0, end_ns=10)
    finally:
        os.umask(old)
        q.close()
    assert out.stat().st_mode & 0o777 == 0o644


def test_load_summary_extras_reads_a_summary_dict():
    from reports import load_summary_extras

    d = {"run_id": "r1", "load_model": "open", "level": 20.0, "arrivals": "poisson",
         "duration_s": 60.0, "slots": 80, "workers": 2,
         "counters": {"arrivals_due": 1200, "arrivals_started": 1190, "late_starts": 3},
         "thresholds": [{"expr": "ttfa_ms.p95[60s]<800", "ok": False, "actual": 912.0}],
         "overloaded": True, "overload_message": "load generator overloaded (w1: CPU 97 %)",
         "aborted": "", "complete": True, "achieved_rate": 19.8}
    x = load_summary_extras(d)
    assert x["params"]["load model"] == "open, 20 sessions/s (poisson)"
    assert x["params"]["arrivals"].startswith("due 1200, started 1190, late 3")
    assert x["judged"] == [{"expr": "ttfa_ms.p95[60s]<800", "ok": False, "actual": 912.0}]
    assert x["warnings"] == ["load generator overloaded (w1: CPU 97 %)"]


def _data(**kw):
    from reports.collect import ReportData
    from telemetry.query import TargetSummary

    s = TargetSummary(target="t", model="m", provider="openai", sessions=10, ok_sessions=10,
                      success_ratio=1.0, turns=10, ttfa_p50=300.0, ttfa_p95=500.0,
                      ttfa_p99=600.0, ttfa_max=650.0, turn_p95=1500.0, connect_p95=20.0,
                      rtf_mean=2.0, stalls=0)
    base = dict(title="x", start_ns=0, end_ns=1, first_ns=0, last_ns=1, bucket_s=10,
                targets=["t"], run_id=None, kinds=["probe"], scenarios=["default"],
                models={"t": ["m"]}, providers={"t": "openai"}, summary=[s], latency={},
                spectra=[], errors=[], outcomes=[], alerts=[], loadgen=[])
    base.update(kw)
    return ReportData(**base)


def test_verdicts():
    from reports.verdict import evaluate

    assert evaluate(_data()).status == "pass"
    v = evaluate(_data(thresholds=["error_rate<0.01", "ttfa_ms.p95[60s]<800"]))
    assert v.status == "pass" and [c.passed for c in v.checks] == [True, None]
    v = evaluate(_data(judged=[{"expr": "ttfa_ms.p95[60s]<800", "ok": False, "actual": 900.0}]))
    assert v.status == "fail" and "run: ttfa_ms.p95[60s]<800 failed (measured 900)" in v.reasons
    assert evaluate(_data(warnings=["generator overloaded"])).status == "warn"
    assert evaluate(_data(summary=[])).status == "empty"
