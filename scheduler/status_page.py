"""The status page: one card per target, served by `voicepulse serve` at `/` (refreshing from
`page.json`) and written by `voicepulse status --html FILE` as one self-contained file.

The card numbers are `telemetry.availability.availability()`, the function `voicepulse results`
prints, so the page and the CLI agree to the last digit for the same window. The page document
carries classes and numbers only: never error text, never a URL with its query or credentials
(and with `public: true` no endpoint, schedule or service health at all).
"""

from __future__ import annotations

import logging
import threading
import time

import jinja2
import orjson

from scheduler.config import StatusPage
from scheduler.status_page_html import TEMPLATE
from telemetry.availability import DAY, Availability, availability, iso, now_ms_ns
from telemetry.influx import safe_url

log = logging.getLogger(__name__)


def page_document(avail: Availability, alerts: list[dict], page: StatusPage, *,
                  live: bool, settled: bool = True, service: dict | None = None) -> dict:
    """What the page shows (and `page.json` serves): the cards, each with its firing alerts;
    without `public`, the service section too."""
    cards = []
    for card in avail.to_dict()["targets"]:
        card["alerts"] = [{k: a.get(k) for k in ("rule", "severity", "since", "value",
                                                 "threshold")}
                          for a in alerts if a.get("target") == card["target"]]
        cards.append(card)
    doc = {**avail.to_dict(), "targets": cards, "title": page.title, "public": page.public,
           "live": live, "refresh_s": page.refresh_s, "settled": settled,
           "generated_at": iso(avail.end_ns)}
    if not page.public and service is not None:
        doc["service"] = service
    return doc


def render_html(doc: dict) -> str:
    """The page with `doc` inlined; its script draws the cards (and refreshes when live)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    data = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode().replace("</", "<\\/")
    return env.from_string(TEMPLATE).render(title=doc["title"],
                                            data=jinja2.utils.markupsafe.Markup(data))


def _schedule(job) -> str:
    return f"every {job.every_s:g}s" if job.every_s is not None else f"cron {job.cron}"


def static_service(svc_cfg, targets: dict) -> dict:
    """The operator's section of a page written from a config (no service running): agent,
    probe schedules and endpoints without credentials."""
    jobs = [{"target": j.target, "scenario": j.scenario, "schedule": _schedule(j),
             "next_run": None, "skips": None, "running": 0} for j in svc_cfg.probes]
    return {"agent": svc_cfg.agent, "jobs": jobs,
            "endpoints": {j["target"]: safe_url(targets[j["target"]].url) for j in jobs
                          if j["target"] in targets}}


class LivePage:
    """The page of a running ProbeService: a document at most `max_age_s` old per request."""

    def __init__(self, service, query, max_age_s: float = 1.0):
        self.service, self.query = service, query
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None
        self._good: dict | None = None  # the last document built from the store
        self._unreadable_since: int | None = None

    @property
    def cfg(self) -> StatusPage:
        return self.service.cfg.status_page

    def document(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.max_age_s:
                return self._cached[1]
            try:
                doc = self._build()
            except Exception as e:  # the store is down: say so, never a 500 page
                log.warning("status page: the store cannot be read (%s)", type(e).__name__)
                return self._unreadable(type(e).__name__)
            self._good, self._unreadable_since = doc, None
            self._cached = (time.monotonic(), doc)
            return doc

    def _unreadable(self, why: str) -> dict:
        """The last good document (or no cards at all), marked stale since the store failed.
        Only the exception's class is shown: its text may hold a URL."""
        now = now_ms_ns()
        if self._unreadable_since is None:
            self._unreadable_since = now
        page = self.cfg
        base = self._good or page_document(
            Availability(now - int(DAY * 1e9), now, DAY, page.runs, page.bar_span_s,
                         "probe", []), [], page, live=True, settled=False)
        return {**base, "store_error": f"the store cannot be read ({why}) since "
                                       f"{iso(self._unreadable_since)}"}

    def html(self) -> str:
        return render_html(self.document())

    def _build(self) -> dict:
        svc, page = self.service, self.cfg
        end = now_ms_ns()  # first: a run that starts after it is outside the window
        # no probe in flight now -> every run that started before `end` is recorded already
        # (a probe is recorded before it stops counting as running), so the numbers are final
        settled = all(st.running == 0 for st in svc.target_states().values())
        rec = svc.recorder
        if rec is not None and hasattr(rec, "flush"):
            try:
                rec.flush(timeout=1.0)  # bounded: a down InfluxDB must not stall the page
            except Exception:
                pass
        targets = list(dict.fromkeys(j.target for j in svc.cfg.probes))
        avail = availability(self.query, end_ns=end, window_s=DAY, runs=page.runs,
                             bar_span_s=page.bar_span_s, targets=targets, kind="probe")
        alerts = [{"rule": s.rule, "target": s.target, "severity": s.severity,
                   "since": s.since, "value": s.value, "threshold": s.threshold}
                  for s in svc.engine.states() if s.state == "firing"]
        return page_document(avail, alerts, page, live=True, settled=settled,
                             service=None if page.public else self._service(end))

    def _service(self, end_ns: int) -> dict:
        """The operator's section: agent, schedule, endpoints without credentials, health."""
        svc = self.service
        jobs = []
        for job_id, st in svc.target_states().items():
            job = svc._jobs.get(job_id)
            sched = svc.scheduler.get_job(job_id) if svc.scheduler and svc.scheduler.running \
                else None
            nxt = sched.next_run_time.timestamp() if sched and sched.next_run_time else None
            jobs.append({"target": st.target, "scenario": st.scenario,
                         "schedule": _schedule(job) if job else "", "next_run": nxt,
                         "skips": st.skips, "running": st.running})
        endpoints = {name: safe_url(t.url) for name, t in svc.targets.items()
                     if any(j["target"] == name for j in jobs)}
        outbox = svc.outbox_health() or {}
        return {"agent": svc.cfg.agent, "started_at": svc.started_at, "jobs": jobs,
                "endpoints": endpoints,
                "outbox": {k: outbox.get(k) for k in ("pending", "dead_lettered", "dropped")
                           if isinstance(outbox.get(k), int | float)},
                "write_errors": svc.write_errors,
                "notifications_failed": sum(n.stats.failed for n in svc.notifiers)}
