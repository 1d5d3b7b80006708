"""The live status page while its store cannot be read (InfluxDB down): it keeps answering with
the last good cards marked stale, never a 500; with no good document yet, no cards and the same
notice. Found by the chaos soak (benchmarks/chaos_soak.py), where `/` answered 500 with a
traceback during every influxd outage."""

from __future__ import annotations

import time
from types import SimpleNamespace

from probes.results import SessionResult, TurnResult
from scheduler.config import ProbeJob, StatusPage
from scheduler.status_page import LivePage, render_html
from telemetry.embedded import EmbeddedStore
from telemetry.query import EmbeddedQuery
from telemetry.recorder import Recorder


class Flaky:
    """A query that answers like `inner` until `down` is set, then fails as a dead server."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def __getattr__(self, name):
        if self.down:
            raise ConnectionRefusedError("http://user:s3cret@127.0.0.1:8086 refused")
        return getattr(self.inner, name)


def _service(page: StatusPage):
    cfg = SimpleNamespace(probes=[ProbeJob(target="alpha", every_s=10.0)], status_page=page)
    return SimpleNamespace(cfg=cfg, recorder=None, target_states=dict,
                           engine=SimpleNamespace(states=list))


def test_store_down_serves_the_last_cards_marked_stale(tmp_path):
    path = str(tmp_path / "vp.db")
    rec = Recorder(EmbeddedStore(path), interval_s=10.0)
    rec.record(SessionResult("alpha", "openai", "m", kind="probe", started_at=time.time() - 60,
                             session_id="s1", duration_s=1.0,
                             turns=[TurnResult(0, ttfa_ms=420.0, turn_ms=900.0)]))
    assert rec.close(timeout=10.0)
    query = Flaky(EmbeddedQuery(EmbeddedStore(path)))
    page = LivePage(_service(StatusPage(public=True)), query, max_age_s=0.0)

    good = page.document()
    assert [c["target"] for c in good["targets"]] == ["alpha"] and "store_error" not in good

    query.down = True
    stale = page.document()
    assert stale["targets"] == good["targets"]  # the last good cards, not an empty page
    assert stale["store_error"].startswith("the store cannot be read (ConnectionRefusedError)")
    assert "s3cret" not in str(stale) and "8086" not in str(stale)  # class only, never the text
    assert "store_error" in render_html(stale)  # the page draws the notice from the document
    since = stale["store_error"].rsplit(" since ", 1)[1]
    assert page.document()["store_error"].endswith(since)  # one outage, one start time

    query.down = False
    assert "store_error" not in page.document()


def test_store_down_before_any_good_read_shows_no_cards_and_the_notice(tmp_path):
    query = Flaky(EmbeddedQuery(EmbeddedStore(str(tmp_path / "vp.db"))))
    query.down = True
    doc = LivePage(_service(StatusPage(public=True)), query).document()
    assert doc["targets"] == [] and doc["live"] is True
    assert "cannot be read (ConnectionRefusedError)" in doc["store_error"]
    render_html(doc)  # the template takes it (StrictUndefined: a missing key would raise)
