"""The simulator in a child process on free loopback ports: pytest fixtures over
`simulator.process.SimProcess`.

Usage in any test:

    def test_something(sim):                       # fresh simulator per test (function scope)
        url = sim.ws_url + "/v1/realtime?model=sim-fast"   # ws://127.0.0.1:PORT/v1/realtime?...
        ...                                        # connect with header Authorization: Bearer x
        sim.set_profile(model="sim-fast", ttfa_scale=1.4)  # PUT /profile
        fid = sim.fault(kind="drop", count=1)      # POST /faults -> fault id
        sim.stop_fault(fid); sim.clear_faults()
        turns = sim.truth(session_id="sess_...")["turns"]  # GET /truth (ground truth)

    # other args or scope: build your own (it is a context manager)
    with SimProcess(args=["--ttfa-ms", "50", "--reply-s", "0.5"]) as s: ...

`sim` is function-scoped: every test gets its own process, so faults and profile changes never leak
between tests (start-up is ~0.3-0.6 s). `sim_module` is one process per test module for cheap reuse;
call `sim_module.reset()` (clear faults + truth) if you change state. The process is killed at
teardown (SIGTERM, then SIGKILL after 3 s).
"""

from __future__ import annotations

import pytest

from simulator.process import ROOT, SimProcess

__all__ = ["ROOT", "SimProcess", "sim", "sim_module"]


@pytest.fixture
def sim():
    """A fresh simulator per test (built-in profiles, any API key accepted)."""
    with SimProcess() as s:
        yield s


@pytest.fixture(scope="module")
def sim_module():
    """One simulator per test module; reset() it if a test changes faults or profiles."""
    with SimProcess() as s:
        yield s
