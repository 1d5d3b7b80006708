"""Fixtures shared by every test area: real servers (influxd, victoria-metrics) and the simulator.

A test marked `needs_tool("espeak-ng", ...)` (tests/tools.py) is skipped, or under CI and
./scripts/test failed, before it runs when one of those tools is not on PATH."""

import pytest

from tests.tools import require_tool

pytest_plugins = ["tests.servers", "tests.sim_server"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_tool"):
        for name in mark.args:
            require_tool(name)
