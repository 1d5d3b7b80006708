"""Silent failures (issue 19) and the audible onset on every protocol (issue 15), against the
simulator: a reply that completes with no audio is `empty_reply`, one of digital silence only is
`silent_reply` (turn and session, exit status 1 from `voicepulse probe`); a normal reply is ok;
a profile's leading silence shows as ttfa_audible_ms - ttfa_ms."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from probes.session import run_session
from probes.spec import Scenario, Target
from tests.sim_server import SimProcess

PROTOCOLS = ("openai", "gemini", "openai-live")
#: one short turn: what is judged is the reply's class, not the length of the question
SHORT = Scenario(turns=1, utterance_s=0.4)
#: the same, with GPT-Live's (longer: about 3-4 s) sessions left to the full suite
LIVE_SLOW = ("openai", "gemini", pytest.param("openai-live", marks=pytest.mark.slow))


@pytest.fixture(scope="module")
def sim():
    with SimProcess() as s:
        yield s


def url(sim, provider: str) -> str:
    if provider == "gemini":
        return sim.gemini_url()
    if provider == "openai-live":
        return sim.ws_url + "/v1/live/sessions"
    return sim.realtime_url()


def target(sim, provider: str, model: str) -> Target:
    return Target("t", url(sim, provider), model, provider=provider)


@pytest.mark.parametrize("provider", PROTOCOLS)
@pytest.mark.parametrize("kind", ["empty_reply", "silent_reply"])
def test_each_fault_gives_its_class(sim, provider, kind):
    model = f"sim-{kind}-{provider}"
    sim.set_profile(model=model, reply_s=1.0)
    fid = sim.fault(kind=kind, models=[model])
    try:
        res = run_session(target(sim, provider, model), SHORT, api_key="k")
    finally:
        sim.stop_fault(fid)
    assert res.outcome == kind, (res.outcome, res.error)
    [turn] = res.turns
    assert turn.outcome == kind and turn.ttfa_audible_ms is None
    assert (turn.first_audio_ns is None) == (kind == "empty_reply")


@pytest.mark.parametrize("provider", LIVE_SLOW)
def test_a_normal_reply_is_unaffected(sim, provider):
    res = run_session(target(sim, provider, "sim-fast"), SHORT, api_key="k")
    assert res.outcome == "ok", res.error
    [turn] = res.turns
    assert turn.outcome == "ok" and turn.ttfa_audible_ms == pytest.approx(turn.ttfa_ms, abs=0.01)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
@pytest.mark.slow  # real-time delivery, two turns: ~3.5 s
def test_lead_silence_is_the_gap_between_first_byte_and_first_sound(sim, provider):
    model = f"sim-lead-{provider}"
    # real-time delivery, so 300 ms of leading audio arrive over 300 ms
    sim.set_profile(model=model, lead_silence_ms=300, speed=1.0, delta_ms=100, reply_s=0.8)
    res = run_session(target(sim, provider, model), Scenario(turns=2, utterance_s=0.4, pause_s=0.1),
                      api_key="k")
    assert len(res.turns) == 2
    assert res.outcome == "ok", res.error
    for t in res.turns:
        gap = t.ttfa_audible_ms - t.ttfa_ms
        assert abs(gap - 300) <= 100, gap  # within one delta


@pytest.mark.parametrize("provider", PROTOCOLS)
@pytest.mark.slow  # a voicepulse process and a full default turn: ~3.5-4.5 s
def test_probe_exits_1_on_a_silent_reply(sim, provider, tmp_path):
    model = f"sim-cli-{provider}"
    fid = sim.fault(kind="silent_reply", models=[model])
    try:
        out = subprocess.run(
            [sys.executable, "-m", "voicepulse.cli", "probe", "--url", url(sim, provider),
             "--model", model, "--provider", provider, "--turns", "1", "--json", "--no-store"],
            capture_output=True, text=True, timeout=90, cwd=tmp_path,
            env={**os.environ, "SIM_API_KEY": "k"})
    finally:
        sim.stop_fault(fid)
    assert out.returncode == 1, out.stderr + out.stdout
    assert orjson.loads(out.stdout)["outcome"] == "silent_reply"


@pytest.mark.parametrize("provider", LIVE_SLOW)
def test_a_silent_failure_counts_against_the_availability_slo(sim, provider, tmp_path):
    """What `serve` does with a probe's result: recorded into the store, then the availability
    SLO's good/total read back through the same source the alert engine uses."""
    import time

    from scheduler.config import Slo
    from scheduler.rules import slo_counts
    from scheduler.source import TelemetrySource
    from telemetry.embedded import EmbeddedStore
    from telemetry.query import EmbeddedQuery
    from telemetry.recorder import Recorder

    model = f"sim-slo-{provider}"
    store = EmbeddedStore(str(tmp_path / "vp.db"))
    rec = Recorder(store, interval_s=1.0)
    start = time.time() - 1
    sim.set_profile(model=model, reply_s=0.4)
    res_ok = run_session(target(sim, provider, model), SHORT, api_key="k")
    fid = sim.fault(kind="empty_reply", models=[model])
    try:
        res_bad = run_session(target(sim, provider, model), SHORT, api_key="k")
    finally:
        sim.stop_fault(fid)
    assert (res_ok.outcome, res_bad.outcome) == ("ok", "empty_reply")
    rec.record(res_ok)
    rec.record(res_bad)
    assert rec.flush()
    counts = slo_counts(Slo("a", "t", "availability", 0.99), TelemetrySource(EmbeddedQuery(store)),
                        start, time.time() + 1)
    rec.close()
    assert (counts.total, counts.ok, counts.bad) == (2, 1, 1)
