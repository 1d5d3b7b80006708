"""When a probe job runs: APScheduler triggers for interval and cron schedules, and the nominal
gap between runs (which also sizes the alert engine's shortest window).

Its own module because both the service (scheduling) and the alert engine (window floors) need
it, and the engine must not import the service.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.config import ProbeJob


def make_trigger(job: ProbeJob, scale: float):
    """Interval schedules (and their jitter) shrink with `time_scale`; a cron schedule is
    wall-clock and does not."""
    if job.cron:
        return _cron(job)
    interval = IntervalTrigger(seconds=max(0.001, job.every_s * scale), timezone="UTC")
    return GridJitter(interval, job.jitter_s * scale) if job.jitter_s else interval


class GridJitter(BaseTrigger):
    """An interval trigger whose jitter delays each run but never moves the grid.

    APScheduler 3's own `jitter=` adds the random delay to the *previous* (jittered) fire time,
    so the schedule drifts later by jitter/2 per run on average (a 30 s probe with 2 s jitter
    runs every 31 s). Here every fire time is grid point + uniform(0, jitter).
    """

    def __init__(self, inner: IntervalTrigger, jitter_s: float):
        self.inner, self.jitter_s = inner, jitter_s
        self._grid: dict[datetime, datetime] = {}  # jittered fire time -> its grid point

    def get_next_fire_time(self, previous_fire_time, now):
        prev = self._grid.pop(previous_fire_time, previous_fire_time) \
            if previous_fire_time is not None else None
        grid = self.inner.get_next_fire_time(prev, now)
        if grid is None:
            return None
        fire = grid + timedelta(seconds=random.uniform(0, self.jitter_s))
        if len(self._grid) > 64:
            self._grid.clear()
        self._grid[fire] = grid
        return fire

    def __str__(self) -> str:
        return f"{self.inner} jitter<={self.jitter_s:g}s"


def _cron(job: ProbeJob) -> CronTrigger:
    minute, hour, day, month, dow = job.cron.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=dow,
                       timezone="UTC", jitter=job.jitter_s or None)


def job_interval_s(job: ProbeJob, scale: float) -> float:
    """The nominal gap between runs (cron: the gap between its next two fire times)."""
    if job.every_s:
        return job.every_s * scale
    from datetime import UTC

    trig = CronTrigger.from_crontab(job.cron, timezone="UTC")  # no jitter: the nominal gap
    now = datetime.now(UTC)
    a = trig.get_next_fire_time(None, now)
    b = trig.get_next_fire_time(a, a)
    return (b - a).total_seconds() if a and b else 60.0
