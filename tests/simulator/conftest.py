"""Fixtures for the simulator's own tests."""

import pytest

from tests.sim_server import SimProcess


@pytest.fixture(scope="module")
def quick_sim():
    """One simulator per module with short fixed replies: TTFA 60 ms, 0.6 s of audio."""
    with SimProcess(["--ttfa-ms", "60", "--reply-s", "0.6"]) as s:
        yield s
