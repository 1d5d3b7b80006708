"""Every fault kind, observed on the wire by a plain websockets client.

All tests share one simulator; each uses its own model name and a `models` filter (and usually
`count: 1`), so one test's faults never touch another's sessions.
"""

from __future__ import annotations

import time

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.simulator.wire import (
    Receiver,
    manual_session,
    manual_turn,
    open_ws,
    recv,
    recv_until,
    send,
    types,
)


def _turn_on(sim, model: str, **fault):
    """Open a manual session on `model` with `fault` posted for it; return (ws, session id)."""
    sim.fault(models=[model], **fault)
    ws = open_ws(sim.url(model))
    return ws, manual_session(ws)["id"]


def test_refuse_resets_the_connection(quick_sim):
    quick_sim.fault(kind="refuse", models=["refuse"], count=1)
    with pytest.raises((OSError, EOFError, Exception)) as ei:
        open_ws(quick_sim.url("refuse"))
    assert not isinstance(ei.value, InvalidStatus)  # no HTTP answer at all
    with open_ws(quick_sim.url("refuse")) as ws:  # count: 1 -> the next one is served
        assert recv(ws)[0]["type"] == "session.created"
    rec = [s for s in quick_sim.truth(model="refuse")["sessions"] if s["outcome"] == "refused"]
    assert len(rec) == 1 and rec[0]["faults"][0]["kind"] == "refuse"


def test_slow_handshake(quick_sim):
    quick_sim.fault(kind="slow_handshake", delay_ms=600, models=["slowhs"], count=1)
    t0 = time.perf_counter()
    with open_ws(quick_sim.url("slowhs")) as ws:
        opened = time.perf_counter() - t0
        assert recv(ws)[0]["type"] == "session.created"
    assert 0.6 <= opened < 1.5


@pytest.mark.parametrize("status", [401, 429, 500, 503])
def test_http_status_on_upgrade(quick_sim, status):
    model = f"http{status}"
    quick_sim.fault(kind="http_status", status=status, models=[model], count=1)
    with pytest.raises(InvalidStatus) as ei:
        open_ws(quick_sim.url(model))
    r = ei.value.response
    assert r.status_code == status
    body = orjson.loads(r.body)
    assert body["error"]["message"]
    if status in (429, 503):
        assert r.headers["Retry-After"] == "1"


@pytest.mark.parametrize("code,etype", [("rate_limit_exceeded", "tokens"),
                                        ("server_error", "server_error")])
def test_error_event(quick_sim, code, etype):
    model = f"err-{code}"
    ws, sid = _turn_on(quick_sim, model, kind="error_event", code=code, count=1)
    with ws:
        send(ws, {"type": "response.create", "event_id": "rc1"})
        err, _ = recv(ws)
        assert err["type"] == "error"
        assert err["error"]["code"] == code and err["error"]["type"] == etype
        assert err["error"]["event_id"] == "rc1"
        # the socket stays usable; the next turn (count exhausted) succeeds
        evs = manual_turn(ws)
        assert "response.created" in types(evs) and evs[-2][0]["response"]["status"] == "completed"
    statuses = [t["status"] for t in quick_sim.turns(sid)]
    assert statuses == ["error", "completed"]


def test_response_failed(quick_sim):
    ws, sid = _turn_on(quick_sim, "failed", kind="response_failed", code="server_error", count=1)
    with ws:
        evs = manual_turn(ws)
    r = next(e for e, _ in evs if e["type"] == "response.done")["response"]
    assert r["status"] == "failed"
    assert r["status_details"]["type"] == "failed"
    assert r["status_details"]["error"]["code"] == "server_error"
    assert "response.output_audio.delta" not in types(evs)
    [tr] = quick_sim.turns(sid)
    assert tr["status"] == "failed" and tr["faults"][0]["kind"] == "response_failed"


def test_drop_without_close_frame_is_1006(quick_sim):
    ws, sid = _turn_on(quick_sim, "drop", kind="drop", after_deltas=2, count=1)
    rx = Receiver(ws)
    send(ws, {"type": "response.create"})
    exc = rx.wait_closed()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.rcvd is None  # no close frame received
    assert ws.close_code == 1006
    assert [e["type"] for e, _ in rx.events].count("response.output_audio.delta") == 2
    ws.close()
    [tr] = quick_sim.turns(sid)
    assert tr["status"] == "dropped"


def test_close_1011(quick_sim):
    ws, sid = _turn_on(quick_sim, "c1011", kind="close_1011", after_deltas=1, count=1)
    rx = Receiver(ws)
    send(ws, {"type": "response.create"})
    exc = rx.wait_closed()
    assert isinstance(exc, ConnectionClosed) and exc.rcvd is not None
    assert exc.rcvd.code == 1011
    assert [e["type"] for e, _ in rx.events].count("response.output_audio.delta") == 1


def test_stall_inside_reply(quick_sim):
    ws, sid = _turn_on(quick_sim, "stall", kind="stall", after_deltas=3, stall_s=0.5, count=1)
    with ws:
        rx = Receiver(ws)
        send(ws, {"type": "response.create"})
        events = rx.wait_for("response.done")
    deltas = [t for e, t in events if e["type"] == "response.output_audio.delta"]
    gaps = [(b - a) / 1e6 for a, b in zip(deltas, deltas[1:], strict=False)]
    assert len(deltas) == 6
    assert 500 <= gaps[2] < 560  # the stall sits between delta 3 and delta 4
    assert max(gaps[:2] + gaps[3:]) < 60  # the others keep the 50 ms cadence
    [tr] = quick_sim.turns(sid)
    assert tr["faults"] == [{"id": tr["faults"][0]["id"], "kind": "stall", "after_deltas": 3,
                             "stall_s": 0.5}]


def test_malformed_json_frame(quick_sim):
    ws, sid = _turn_on(quick_sim, "malformed", kind="malformed_json", after_deltas=1, count=1)
    with ws:
        rx = Receiver(ws)
        send(ws, {"type": "response.create"})
        events = rx.wait_for("response.done")
    bad = [raw for raw, _ in rx.raw if raw.startswith(b'{"type":"response.output_audio.delta"')
           and not raw.endswith(b"}")]
    assert len(bad) == 1
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(bad[0])
    names = [e["type"] for e, _ in events]
    before = names[:names.index("<malformed>")]
    assert before.count("response.output_audio.delta") == 1  # after_deltas=1
    assert names.count("response.output_audio.delta") == 6  # the reply carries on after it


def test_oversized_frame_trips_client_max_size(quick_sim):
    quick_sim.fault(kind="oversized", bytes=2 * 1024 * 1024, after_deltas=1, models=["big"],
                    count=1)
    ws = open_ws(quick_sim.url("big"), max_size=1024 * 1024)
    manual_session(ws)
    rx = Receiver(ws)
    send(ws, {"type": "response.create"})
    exc = rx.wait_closed()
    assert isinstance(exc, ConnectionClosed)
    assert exc.sent is not None and exc.sent.code == 1009  # the client refused the frame


@pytest.mark.slow
def test_session_expiry(sim):
    sim.fault(kind="session_expiry", after_s=0.8, models=["expire"])
    t0 = time.perf_counter_ns()
    ws = open_ws(sim.url("expire"))
    created, _ = recv(ws)
    rx = Receiver(ws)
    exc = rx.wait_closed(timeout=5)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    err = next(e for e, _ in rx.events if e["type"] == "error")["error"]
    assert err["code"] == "session_expired"
    assert isinstance(exc, ConnectionClosed) and exc.rcvd.code == 1001
    assert "maximum duration" in exc.rcvd.reason
    assert 0.8 <= elapsed < 1.3
    sess = sim.truth(session_id=created["session"]["id"])["sessions"][0]
    assert sess["outcome"] == "expired"


def test_profile_session_max_s(sim):
    sim.set_profile(model="short", session_max_s=0.5)
    with open_ws(sim.url("short")) as ws:
        created, _ = recv(ws)
        assert created["session"]["expires_at"] - time.time() < 2
        err = recv_until(ws, "error", timeout=3)[-1][0]
        assert err["error"]["code"] == "session_expired"


def test_per_turn_probability(sim):
    sim.set_profile(model="prob", ttfa_ms=1, reply_s=0.05)
    sim.fault(kind="response_failed", probability=0.5, models=["prob"])
    with open_ws(sim.url("prob")) as ws:
        manual_session(ws)
        outcomes = []
        for _ in range(40):
            send(ws, {"type": "response.create"})
            evs = recv_until(ws, "rate_limits.updated")
            outcomes.append(evs[-2][0]["response"]["status"])
    failed = outcomes.count("failed")
    assert outcomes.count("completed") + failed == 40
    assert 8 <= failed <= 32  # binomial(40, 0.5): outside this is < 1e-4


def test_per_session_scope_hits_every_turn_of_chosen_sessions(sim):
    sim.set_profile(model="persess", ttfa_ms=1, reply_s=0.05)
    sim.fault(kind="response_failed", per="session", count=1, models=["persess"])
    results = []
    for _ in range(2):
        with open_ws(sim.url("persess")) as ws:
            manual_session(ws)
            statuses = []
            for _ in range(3):
                send(ws, {"type": "response.create"})
                statuses.append(recv_until(ws, "rate_limits.updated")[-2][0]["response"]["status"])
            results.append(statuses)
    assert results == [["failed"] * 3, ["completed"] * 3]


@pytest.mark.slow
def test_outage_window(sim):
    sim.fault(kind="http_status", status=503, start_s=0, duration_s=1.0, models=["outage"])
    t0 = time.monotonic()
    codes = []
    while time.monotonic() - t0 < 3:
        try:
            with open_ws(sim.url("outage")) as ws:
                recv(ws)
                codes.append(101)
                break
        except InvalidStatus as e:
            codes.append(e.response.status_code)
            time.sleep(0.1)
    recovered = time.monotonic() - t0
    assert codes[0] == 503 and codes[-1] == 101 and set(codes) == {503, 101}
    assert 0.95 <= recovered < 1.6
    with open_ws(sim.url("other-model")) as ws:  # the window only covered its model
        assert recv(ws)[0]["type"] == "session.created"
