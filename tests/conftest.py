"""Fixtures shared by every test area: real servers (influxd, victoria-metrics) and the simulator.

A test using a real-server fixture is marked `system` here, whatever its file says.

A test marked `needs_tool("espeak-ng", ...)` (tests/tools.py) is skipped, or under CI and
./scripts/test failed, before it runs when one of those tools is not on PATH."""

import pytest

from tests.tools import require_tool

pytest_plugins = ["tests.servers", "tests.sim_server"]


#: Fixtures that start a real influxd or victoria-metrics: a test using one is a `system` test,
#: whatever its file says, so `-m "not system"` (./scripts/test --fast) never starts a server.
SERVER_FIXTURES = {"influxd", "victoria_metrics", "influx_factory"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_tool"):
        for name in mark.args:
            require_tool(name)
