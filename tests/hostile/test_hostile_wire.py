"""The probe engine against a hostile server over loopback (simulator/hostile.py).

Every session ends with a stable outcome class and a readable message, within its timeouts,
and never raises: garbage frames end as `protocol`, floods and replies that never end are cut
off by the phase deadlines, a slowloris upgrade ends as `timeout:connect`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from probes.results import TurnResult
from probes.session import MAX_FRAME_BYTES, run_session
from probes.spec import Scenario, Target, Timeouts
from simulator.hostile import PROTOCOL_MODES, bad_frame
from tests.hostile.hostile_server import ROOT, HostileProcess

pytestmark = pytest.mark.timeout(60)

CONNECT, READY, FIRST_AUDIO, DONE = 1.5, 2.0, 1.5, 2.5
SLACK = 2.0  # contended CI: scheduling and teardown (close_timeout) on top of a deadline


def scenario() -> Scenario:
    return Scenario(turns=1, utterance_s=0.3, trailing_silence_s=0.1,
                    timeouts=Timeouts(connect=CONNECT, ready=READY, first_audio=FIRST_AUDIO,
                                      response_done=DONE, session=30.0))


def probe(url: str):
    t = Target(name="hostile", url=url, model="m")
    t0 = time.monotonic()
    r = run_session(t, scenario(), api_key="hostile-test-key")
    return r, time.monotonic() - t0


def readable(msg: str) -> bool:
    return 0 < len(msg) <= 2048 and msg.isprintable()


@pytest.mark.parametrize("mode", PROTOCOL_MODES)
def test_garbage_ends_as_protocol(mode):
    with HostileProcess(mode) as h:
        r, elapsed = probe(h.url())
    assert r.outcome == "protocol", (r.outcome, r.error)
    assert readable(r.error), r.error
    # the bad frame arrives right after setup: the session ends well inside its first deadline
    assert elapsed < READY + SLACK
    assert r.ready_ms is not None  # it was an established session, not a failed connect


def test_bad_frames_are_what_they_claim():
    """The hostile server's protocol frames really are malformed for a JSON-object protocol."""
    for mode in PROTOCOL_MODES:
        f = bad_frame(mode)
        try:
            obj = json.loads(f)
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        assert not isinstance(obj, dict) or not isinstance(obj.get("type"), str) \
            or not isinstance(obj.get("response"), dict), mode


def test_oversized_frame_is_refused():
    with HostileProcess("oversized") as h:
        r, elapsed = probe(h.url())
    assert r.outcome == "ws_closed_1009", (r.outcome, r.error)
    assert str(MAX_FRAME_BYTES) in r.error and readable(r.error)
    assert elapsed < READY + SLACK


@pytest.mark.parametrize(("mode", "outcome"), [("huge-string", "empty_reply"),
                                               ("bad-base64", "silent_reply")])
def test_legal_but_odd_frames_complete(mode, outcome):
    """A 900 KB transcript delta is legal (under the frame limit) and invalid base64 audio is no
    protocol error: both sessions run to the reply's end, in time. Neither reply can be heard,
    so each is the silent failure it is (issue 19): a reply with a transcript but no audio
    byte is `empty_reply`; audio that decodes to nothing audible is `silent_reply`."""
    with HostileProcess(mode) as h:
        r, elapsed = probe(h.url())
    assert r.outcome == outcome, (r.outcome, r.error)
    assert len(r.turns) == 1 and r.turns[0].outcome == outcome
    assert elapsed < 0.4 + DONE + SLACK


@pytest.mark.parametrize(
    ("mode", "outcome", "bound"),
    [
        ("unknown-events", "timeout:first_audio", FIRST_AUDIO),
        ("frames-forever", "timeout:first_audio", FIRST_AUDIO),
        ("tiny-deltas", "timeout:response_done", DONE),
        ("never-done", "timeout:response_done", DONE),
    ],
)
@pytest.mark.slow
def test_endless_streams_are_cut_off(mode, outcome, bound):
    """Frames forever, tiny deltas forever, a reply that never finishes: the phase deadline
    (counted from the intended end of speech, 0.3 s after the start) ends the session."""
    with HostileProcess(mode) as h:
        r, elapsed = probe(h.url())
    assert r.outcome == outcome, (r.outcome, r.error)
    assert readable(r.error)
    assert elapsed < READY + 0.3 + bound + SLACK, elapsed
    if mode == "unknown-events":
        assert r.unknown_events > 0


@pytest.mark.parametrize("mode", ["slowloris", "silent"])
@pytest.mark.slow
def test_slow_upgrade_is_timeout_connect(mode):
    with HostileProcess(mode) as h:
        r, elapsed = probe(h.url())
    assert r.outcome == "timeout:connect", (r.outcome, r.error)
    assert readable(r.error) and "hostile-test-key" not in r.error
    assert CONNECT - 0.1 <= elapsed < CONNECT + SLACK, elapsed


def _session_mem(url: str, first_audio: float, done: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "tests.hostile.session_mem", url,
                          str(first_audio), str(done), "m"], cwd=str(ROOT), env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_tiny_delta_flood_memory_is_bounded():
    """An endless stream of 4-byte audio deltas for 4 s: the session keeps a timestamp and a
    size per delta, so memory grows with the flood rate but stays bounded by the deadline."""
    with HostileProcess("tiny-deltas") as h:
        m = _session_mem(h.url(), 2.0, 4.0)
    assert m["outcome"] == "timeout:response_done", m
    # the flood arrived: each delta is 4 bytes of 24 kHz PCM16 (1/12000 s) in a 59-byte frame
    # (57-byte JSON, 2-byte header); ~115,000 in the 4 s here, at least 5,000/s demanded
    deltas = round(m["audio_s"] * 12000)
    assert deltas >= 20_000, m
    # and was parsed: what was read is the deltas plus the handshake and whatever one deadline
    # left unread in the last buffers
    assert 0 <= m["rx_bytes"] - deltas * 59 <= 256 * 1024, (m, deltas)
    assert m["rss_growth_mb"] < 64, m


@pytest.mark.slow
def test_transcript_flood_memory_is_bounded():
    """The hostile server sends 48 MiB of 64 KB transcript deltas, then idles: a probe must not
    keep them all."""
    with HostileProcess("frames-forever", "--limit-mb", "48") as h:
        m = _session_mem(h.url(), 6.0, 7.0)  # time for all 48 MiB even on a busy machine
    assert m["outcome"] == "timeout:first_audio", m
    assert m["rx_bytes"] >= 48 * 2**20, m  # all of the flood arrived (plus framing)
    assert m["transcript_chars"] <= 2**20, {k: v for k, v in m.items() if k != "error"}
    assert m["rss_growth_mb"] < 16, m


@pytest.mark.slow
def test_turns_are_results_when_a_deadline_cuts_a_flood():
    stop = threading.Event()  # as the scheduler passes it
    bad = []
    with HostileProcess("tiny-deltas") as h:
        for _ in range(3):
            r, _elapsed = probe_with(h.url(), stop)
            assert r.outcome == "timeout:response_done", (r.outcome, r.error)
            bad += [type(t).__name__ for t in r.turns if not isinstance(t, TurnResult)]
    assert not bad, bad


def probe_with(url: str, stop: threading.Event):
    t = Target(name="hostile", url=url, model="m")
    t0 = time.monotonic()
    r = run_session(t, scenario(), api_key="hostile-test-key", stop=stop)
    return r, time.monotonic() - t0
