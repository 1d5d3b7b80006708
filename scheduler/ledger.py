"""The schedule ledger: what the service was doing, on disk, so a restart can explain a gap.

A probe service killed outright (SIGKILL, OOM, power) writes nothing about the fire times it
missed while it was dead, nor about the probe it was running when it died: the store just has
a hole. The ledger is a small JSON file, rewritten (atomically) on each fire, each probe start
and end, and at a clean stop; per probe job it holds the interval, the last scheduled fire time
and the probes then running. The next `ProbeService.start()` reads it and, when the previous
process did not stop cleanly, writes one `schedule` point per gap (`telemetry.schema.SCHEDULE`):

* `killed` at the start of each probe that was running when the process died (its `run` point
  exists, its result never will);
* `down` at each fire time of the old schedule that fell while no process ran (from the last
  fire up to the restart).

It also keeps each alert's pending/firing state, so an alert firing when the process died (or
stopped) is taken back by the next one and resolves there, never stays firing in the store.

It also hands back, for each job whose schedule is unchanged, the next fire time on the old
grid, so the new process keeps the same fire times instead of starting a new grid at restart
time (which would leave a silent partial interval). Cron jobs are not ledgered (their fire
times are wall-clock and already on a fixed grid; a restart computes them again).

Cost: one small file write per fire and per probe start/end (a few hundred bytes).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime

log = logging.getLogger("voicepulse.service")

#: At most this many `down` points per job (a service down for days at a 10 s interval); beyond
#: it one last point carries the rest in its `count`.
MAX_DOWN_POINTS = 10000


class Ledger:
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}
        self._alerts: dict[str, dict] = {}
        self.previous: dict | None = None
        try:
            with open(path, encoding="utf-8") as f:
                self.previous = json.load(f)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:  # a torn or foreign file: nothing to recover
            log.warning("schedule ledger %s unreadable (%s): no gap records this start", path,
                        exc)

    # -- writing ---------------------------------------------------------------------------------
    def track(self, job_id: str, target: str, scenario: str, every_s: float | None) -> None:
        with self._lock:
            old = self._jobs.get(job_id, {})
            self._jobs[job_id] = {"target": target, "scenario": scenario, "every_s": every_s,
                                  "last": old.get("last"), "running": old.get("running", [])}

    def fired(self, job_id: str, scheduled: float) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job["last"] = max(scheduled, job["last"] or scheduled)
            self._save(clean=False)

    def started(self, job_id: str, at: float) -> None:
        self._mark(job_id, at, add=True)

    def finished(self, job_id: str, at: float) -> None:
        self._mark(job_id, at, add=False)

    def _mark(self, job_id: str, at: float, *, add: bool) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            running = [t for t in job["running"] if t != at]
            job["running"] = [*running, at] if add else running
            self._save(clean=False)

    def alert(self, rule: str, target: str, doc: dict | None) -> None:
        """An alert's pending/firing state (None: resolved), restored at the next start."""
        with self._lock:
            key = f"{rule}\x1f{target}"
            if doc is None:
                self._alerts.pop(key, None)
            else:
                self._alerts[key] = {"rule": rule, "target": target, **doc}
            self._save(clean=False)

    def saved_alerts(self) -> dict[str, dict]:
        """The alert states the previous process left (pending or firing)."""
        alerts = (self.previous or {}).get("alerts")
        return dict(alerts) if isinstance(alerts, dict) else {}

    def stopped(self) -> None:
        """A clean stop: the next start owes no gap records."""
        with self._lock:
            self._save(clean=True)

    def _save(self, *, clean: bool) -> None:
        doc = {"version": 1, "pid": os.getpid(), "clean": clean, "jobs": self._jobs,
               "alerts": self._alerts}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("schedule ledger %s not written: %s", self.path, exc)

    # -- recovering ------------------------------------------------------------------------------
    def recover(self, now: float) -> tuple[list[tuple[str, str, str, float, int]], dict]:
        """What the previous process left unexplained: ([(target, scenario, event, at, count)],
        {job_id: (every_s, next grid fire time after `now`)}). Nothing after a clean stop,
        except the grid."""
        prev = self.previous or {}
        records: list[tuple[str, str, str, float, int]] = []
        grid: dict[str, tuple[float, float]] = {}
        for job_id, job in (prev.get("jobs") or {}).items():
            try:
                target, scenario = str(job["target"]), str(job["scenario"])
                every, last = job.get("every_s"), job.get("last")
                running = [float(t) for t in job.get("running") or []]
            except (KeyError, TypeError, ValueError):
                continue
            # a probe still `running` has a `run` point and will never have a result (after a
            # clean stop too: one abandoned past the shutdown bound)
            records += [(target, scenario, "killed", t, 1) for t in running]
            if not every or last is None or every <= 0:
                continue
            k = int((now - last) // every) + 1  # the first grid point after now is last + k*every
            grid[job_id] = (float(every), last + k * every)
            if prev.get("clean"):
                continue
            missed = k - 1  # last + every .. last + (k-1)*every fell while nothing ran
            for i in range(1, min(missed, MAX_DOWN_POINTS) + 1):
                count = 1 if i < MAX_DOWN_POINTS or missed == MAX_DOWN_POINTS else \
                    missed - MAX_DOWN_POINTS + 1
                records.append((target, scenario, "down", last + i * every, count))
        return records, grid


def as_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
