"""`voicepulse results --format table|json|csv` and the availability cards behind it
(telemetry.availability): numbers checked against an independent nearest-rank computation over
a store written with known results, the JSON and CSV parsed with the json and csv modules, and
the three formats held to the same numbers."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from decimal import Decimal

import pytest
from click.testing import CliRunner

from probes.results import SessionResult, TurnResult
from telemetry.availability import BAR_INTERVALS, availability
from telemetry.embedded import EmbeddedStore
from telemetry.query import EmbeddedQuery
from telemetry.recorder import Recorder
from voicepulse.cli import main

H = 3600.0
ERROR_TEXT = "upstream said: CANARY-7f3a9 token=sk-live-canary"


def ceil_rank(vals: list[float], p: float) -> float:
    s = sorted(vals)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


def result(target: str, at: float, ttfa: float | None, outcome: str = "ok") -> SessionResult:
    turns = [TurnResult(0, ttfa_ms=ttfa, turn_ms=(ttfa or 0) + 50.0)] if ttfa is not None else []
    return SessionResult(target, "openai", "m-" + target, kind="probe", started_at=at,
                         outcome=outcome, error="" if outcome == "ok" else ERROR_TEXT,
                         session_id=f"{target}-{at!r}", duration_s=1.0, connect_ms=5.0,
                         turns=turns)


#: alpha: a run every 3 h for 10 days, ttfa 300 + 7*(k % 13); runs k % 9 == 4 fail
#: (server_error:rate_limit_exceeded, no audio); the three latest runs: k 0 ok, 1 fails, 2 ok.
#: beta: 5 runs in the last hour, two of them dropped (ws_closed_1006, ttfa 900).
def alpha_runs(now: float) -> list[tuple[float, float | None, str]]:
    out = []
    for k in range(80):
        at = now - 60 - k * 3 * H
        fails = k % 9 == 4 or k == 1
        out.append((at, None if fails else 300.0 + 7 * (k % 13),
                    "server_error:rate_limit_exceeded" if fails else "ok"))
    return out


BETA = [(-3000, 410.0, "ok"), (-2400, 900.0, "ws_closed_1006"), (-1800, 420.5, "ok"),
        (-1200, 900.0, "ws_closed_1006"), (-600, 415.25, "ok")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("results") / "vp.db")
    now = time.time()
    rec = Recorder(EmbeddedStore(path), interval_s=10.0)
    for at, ttfa, outcome in alpha_runs(now):
        rec.record(result("alpha", at, ttfa, outcome))
    for dt, ttfa, outcome in BETA:
        rec.record(result("beta", now + dt, ttfa, outcome))
    assert rec.close(timeout=10.0)
    return path, now


def test_cards_equal_an_independent_computation(store):
    path, now = store
    end_ns = int((now + 1) * 1e9)
    q = EmbeddedQuery(EmbeddedStore(path))
    try:
        av = availability(q, end_ns=end_ns, window_s=24 * H, runs=6, kind="probe")
        summary = {s.target: s for s in q.summary(start_ns=end_ns - int(24 * H * 1e9),
                                                    end_ns=end_ns, kind="probe")}
    finally:
        q.close()
    cards = {c.target: c for c in av.cards}
    assert list(cards) == ["alpha", "beta"]
    runs = sorted(alpha_runs(now), key=lambda r: r[0])
    a = cards["alpha"]
    last6 = runs[-6:]
    ttfa6 = [t for _, t, o in last6 if t is not None]
    assert a.runs == 6 and a.runs_failed == sum(o != "ok" for _, _, o in last6) >= 1
    assert a.runs_errors == {"server_error:rate_limit_exceeded": a.runs_failed}
    assert (a.runs_ttfa_p50_ms, a.runs_ttfa_p95_ms) == (ceil_rank(ttfa6, 50),
                                                        ceil_rank(ttfa6, 95))
    day = [r for r in runs if r[0] >= now + 1 - 24 * H]
    day_ttfa = [t for _, t, _ in day if t is not None]
    assert (a.window_runs, a.window_ok) == (len(day), sum(o == "ok" for *_, o in day))
    assert a.window_ttfa_p50_ms == ceil_rank(day_ttfa, 50) == summary["alpha"].ttfa_p50
    assert a.window_ttfa_p95_ms == ceil_rank(day_ttfa, 95) == summary["alpha"].ttfa_p95
    for label, span in (("24h", 24 * H), ("7d", 7 * 24 * H), ("30d", 30 * 24 * H)):
        inside = [r for r in runs if r[0] >= now + 1 - span]
        assert (a.uptime[label].runs, a.uptime[label].ok) == \
            (len(inside), sum(o == "ok" for *_, o in inside)), label
    assert a.uptime["7d"].ratio < 1 and a.uptime["30d"].runs == 80
    # a point's time is its start to the microsecond plus a 0..999 ns per-series discriminator
    assert a.last_outcome == "ok" and 0 <= a.last_at_ns - round(runs[-1][0] * 1e6) * 1000 < 1000
    assert (a.provider, a.model) == ("openai", "m-alpha")

    b = cards["beta"]
    assert (b.runs, b.runs_failed, b.runs_errors) == (5, 2, {"ws_closed_1006": 2})
    # a dropped turn that had its first audio counts, as in Query.summary(): rank 3 of 5
    assert b.runs_ttfa_p50_ms == ceil_rank([t for _, t, _ in BETA], 50) == 420.5
    # the bar: 90 intervals, contiguous, ending at end_ns; beta's hour in the last 4 of 16 min
    assert len(b.bar) == BAR_INTERVALS and b.bar[-1].end_ns == end_ns
    assert all(x.end_ns == y.start_ns for x, y in zip(b.bar, b.bar[1:], strict=False))
    assert sum(i.runs for i in b.bar) == 5 and sum(i.ok for i in b.bar) == 3
    states = [i.state for i in b.bar if i.runs]
    assert set(states) <= {"ok", "degraded", "down"} and any(s != "ok" for s in states)
    for i in b.bar:
        bad = i.runs - i.ok
        want = "none" if not i.runs else "ok" if not bad else "down" if 2 * bad > i.runs \
            else "degraded"
        assert i.state == want


def test_an_unknown_target_gets_an_empty_card(store):
    path, now = store
    q = EmbeddedQuery(EmbeddedStore(path))
    try:
        av = availability(q, targets=["beta", "nobody"], runs=3)
    finally:
        q.close()
    assert [c.target for c in av.cards] == ["beta", "nobody"]
    empty = av.cards[1]
    assert (empty.runs, empty.last_at_ns, empty.uptime["24h"].ratio) == (0, None, None)
    assert av.cards[0].runs == 3 and av.cards[0].runs_failed == 1  # the last three of beta
    q = EmbeddedQuery(EmbeddedStore(path))
    try:
        assert availability(q, targets=[]).cards == []
    finally:
        q.close()


def _cli(*args: str) -> str:
    out = CliRunner().invoke(main, ["results", *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_json_csv_and_table_carry_the_same_numbers(store):
    path, now = store
    until = f"{now + 1:.6f}"
    common = ("--store", path, "--since", "24h", "--until", until, "--runs", "6")
    doc = json.loads(_cli(*common, "--format", "json"))
    rows = list(csv.DictReader(io.StringIO(_cli(*common, "--format", "csv"))))
    text = _cli(*common)

    assert doc["percentile_rule"].startswith("nearest rank")
    assert doc["window"]["seconds"] == 24 * H and doc["window"]["since"] == "24h"
    assert doc["window"]["end_ns"] == int(Decimal(until) * 10**9)
    assert doc["runs"] == 6 and doc["bar"]["intervals"] == BAR_INTERVALS
    assert [c["target"] for c in doc["targets"]] == [r["target"] for r in rows] == \
        ["alpha", "beta"]
    assert ERROR_TEXT not in json.dumps(doc) and "CANARY" not in text + json.dumps(rows)

    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("alpha",
                                                                                     "beta"))}
    for c, r in zip(doc["targets"], rows, strict=True):
        exact = {k: c[k] for k in ("window_ttfa_p50_ms", "window_ttfa_p95_ms",
                                   "runs_ttfa_p50_ms", "runs_ttfa_p95_ms")}
        for k, v in exact.items():
            assert float(r[k]) == v, (c["target"], k)
        assert int(r["runs_failed"]) == c["runs_failed"] and int(r["runs"]) == c["runs"]
        assert r["runs_errors"] == ";".join(f"{k}={v}" for k, v in c["runs_errors"].items())
        for w in ("24h", "7d", "30d"):
            assert float(r[f"uptime_{w}"]) == c["uptime"][w]["ratio"]
        assert r["last_at"] == c["last_at"] and r["last_outcome"] == c["last_outcome"]
        # the table: target provider model sessions "x %" p50 p95 | p50 p95 (last N) x/N ...
        t = lines[c["target"]]
        assert t[3] == str(c["window_runs"])
        assert t[6:11] == [f"{exact['window_ttfa_p50_ms']:.1f}", f"{exact['window_ttfa_p95_ms']:.1f}",
                           f"{exact['runs_ttfa_p50_ms']:.1f}", f"{exact['runs_ttfa_p95_ms']:.1f}",
                           f"{c['runs_failed']}/{c['runs']}"]
        assert [f"{100 * c['uptime'][w]['ratio']:.2f}%" for w in ("24h", "7d", "30d")] == t[13:16]
    beta = doc["targets"][1]
    assert (beta["runs_failed"], beta["runs"], beta["runs_errors"]) == (2, 5, {"ws_closed_1006": 2})


def test_until_picks_the_window_and_bad_values_name_the_option(store):
    path, now = store
    early = json.loads(_cli("--store", path, "--since", "1h", "--format", "json",
                            "--until", f"{now - 1500:.3f}"))
    beta = next(c for c in early["targets"] if c["target"] == "beta")
    assert beta["window_runs"] == 3 and beta["last_at"] < early["window"]["end"]
    iso = early["window"]["end"]
    again = json.loads(_cli("--store", path, "--since", "1h", "--format", "json",
                            "--until", iso))
    assert again["window"]["end_ns"] == early["window"]["end_ns"]
    bad = CliRunner().invoke(main, ["results", "--store", path, "--until", "yesterday"])
    assert bad.exit_code == 2 and "--until: expected an ISO 8601 time" in bad.output
