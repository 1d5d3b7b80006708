"""A finished session leaves no reference cycle (issue 17): everything it allocated is freed by
refcounting the moment it ends, so a load worker never needs a cyclic collection (which stops
every session at once) to reclaim sessions.

Checked with the collector disabled: weak references to the Session, its transport, its protocol
and its receiver must be dead as soon as run_session returns, and a gc.collect() afterwards must
find no garbage of ours (probes.*) or of websockets'. Under threads here, and under gevent's
monkey-patching (as in a Locust worker) in a subprocess.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import probes.session as session_mod
from probes.session import run_session
from probes.spec import Scenario, Target
from tests.sim_server import SimProcess

HERE = Path(__file__).resolve().parent
SIM_ARGS = ["--ttfa-ms", "40", "--reply-s", "0.3", "--delta-ms", "100", "--speed", "4"]
OURS = ("probes.", "websockets.")


@pytest.fixture(scope="module")
def quick_sim():
    with SimProcess(args=SIM_ARGS) as s:
        yield s


def _ours(objs) -> list[str]:
    names = (f"{type(o).__module__}.{type(o).__qualname__}" for o in objs)
    return sorted(n for n in names if n.startswith(OURS))


def run_watched(target: Target, scenario: Scenario, **kw):
    """run_session, keeping weak references to the session's parts; (result, refs)."""
    refs: dict[str, weakref.ref] = {}

    class Watched(session_mod.Session):
        def _connect(self, start: int) -> None:
            super()._connect(start)
            refs["transport"] = weakref.ref(self._ws)
            refs["protocol"] = weakref.ref(self._ws._proto)
            refs["socket"] = weakref.ref(self._ws._sock)

    orig = session_mod.Session
    session_mod.Session = Watched
    try:
        res = run_session(target, scenario, api_key="x", **kw)
    finally:
        session_mod.Session = orig
    return res, refs


def _check_no_cycles(run) -> None:
    run()  # warm: imports, caches, the rendered audio
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        res, refs = run()
        alive = [k for k, r in refs.items() if r() is not None]
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        garbage = _ours(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    assert res.outcome == "ok", res.error
    assert set(refs) >= {"transport", "protocol", "socket"}
    assert alive == [], f"still alive after the session ended, without a collection: {alive}"
    assert garbage == [], f"cyclic garbage left by one session: {garbage}"


def test_a_finished_session_is_freed_without_the_cyclic_collector(quick_sim):
    tg = Target("sim", quick_sim.ws_url + "/v1/realtime", "sim-fast")
    sc = Scenario(turns=1, utterance_s=0.3, trailing_silence_s=0.3, pause_s=0.05)
    _check_no_cycles(lambda: run_watched(tg, sc))


def test_a_failed_session_is_freed_too(quick_sim):
    """The receiver ends on the server's close (close_1011 mid-reply), not on ours."""
    quick_sim.reset()
    tg = Target("sim", quick_sim.ws_url + "/v1/realtime", "sim-fast")
    sc = Scenario(turns=1, utterance_s=0.3, trailing_silence_s=0.3, pause_s=0.05)
    fid = quick_sim.fault(kind="close_1011", count=100)
    try:
        run_session(tg, sc, api_key="x")  # warm
        gc.collect()
        gc.disable()
        try:
            res, refs = run_watched(tg, sc)
            alive = [k for k, r in refs.items() if r() is not None]
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = _ours(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    finally:
        quick_sim.stop_fault(fid)
    assert res.outcome == "ws_closed_1011", res.outcome
    assert alive == [] and garbage == [], (alive, garbage)


def test_under_gevent_no_session_leaves_a_cycle(quick_sim):
    """Eight concurrent greenlet sessions in a monkey-patched process (gevent_cycles.py)."""
    url = quick_sim.ws_url + "/v1/realtime"
    p = subprocess.run([sys.executable, str(HERE / "gevent_cycles.py"), url, "8"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["patched"] is True
    assert out["outcomes"] == ["ok"] * 8, out["outcomes"]
    assert out["alive"] == 0, out
    assert out["garbage"] == [], out
