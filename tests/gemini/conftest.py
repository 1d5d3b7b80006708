"""Fixtures for the Gemini Live tests: simulators in child processes (plain ws, and wss)."""

import pytest

from tests.sim_server import SimProcess

FIXED = ["--ttfa-ms", "150", "--reply-s", "0.6", "--delta-ms", "100", "--speed", "4"]


@pytest.fixture(scope="module")
def gsim():
    """One plain-ws simulator per module with fixed latency: TTFA 150 ms, 0.6 s replies."""
    with SimProcess(FIXED) as s:
        yield s


@pytest.fixture(scope="module")
def gsim_tls():
    """The same over TLS with a generated self-signed certificate (`gsim_tls.cert`)."""
    with SimProcess([*FIXED, "--tls"]) as s:
        assert s.ws_url.startswith("wss://") and s.cert
        yield s
