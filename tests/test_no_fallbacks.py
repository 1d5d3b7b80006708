"""A broken module fails loudly: no import is swallowed, no signature guessed twice.

Each test breaks one module by hand (an import that raises, a changed signature) and checks the
failure reaches the caller instead of being papered over.
"""

from __future__ import annotations

import importlib
import sys

import pytest


def test_make_point_builds_a_telemetry_point():
    from scheduler.points import make_point
    from telemetry.points import Point

    p = make_point("schedule", {"target": "t", "agent": ""}, {"runs": 1, "lateness_ms": None}, 1.5)
    assert isinstance(p, Point)
    assert (p.measurement, p.tags, p.fields, p.time_ns) == (
        "schedule", {"target": "t"}, {"runs": 1}, 1_500_000_000)


def test_make_point_does_not_retry_a_changed_point(monkeypatch):
    """A Point whose fields were renamed raises, instead of a positional retry that would put
    the time into whatever the fourth field has become."""
    from scheduler import points

    class Renamed:
        def __init__(self, measurement, tags, fields, at_ns=0):
            self.at_ns = at_ns

    monkeypatch.setattr(points, "Point", Renamed)
    with pytest.raises(TypeError):
        points.make_point("schedule", {}, {"runs": 1}, 2.0)


def test_scheduler_points_need_telemetry(monkeypatch):
    """With telemetry.points broken, scheduler.points does not import (it used to build
    look-alike `StoredPoint`s that no sink knows)."""
    monkeypatch.setitem(sys.modules, "telemetry.points", None)  # importing it raises
    monkeypatch.delitem(sys.modules, "scheduler.points", raising=False)
    with pytest.raises(ImportError, match="telemetry.points"):
        importlib.import_module("scheduler.points")
