"""Fixtures shared by every test area: real servers (influxd, victoria-metrics) and the simulator."""

pytest_plugins = ["tests.servers", "tests.sim_server"]
