"""System: `voicepulse load --find-capacity` against simulator profiles with a known limit.

Short step holds (8 s) and small levels keep each search under a minute. The generator's
overload bar is raised to 300 ms of loop/send lag in these configs: the sandbox's two cores are
shared, and other work there stalls the event loop for 100-200 ms at times (measured), which is
the machine, not the search under test. The CPU-burning test stalls it for 500 ms at a time.
"""

import json
import subprocess
import sys

import pytest

from loadtests.run import child_env
from simulator.process import SimProcess
from tests.sim_server import ROOT

pytestmark = pytest.mark.slow

PROFILES = """
profiles:
  sim-cap:
    inherit: sim-fast
    max_sessions: 40
  sim-knee:
    inherit: sim-fast
    ttfa_ms: 100
    ttfa_per_session_ms: 30
"""
PRICES = ("{text_in: 4.0, text_cached: 0.4, text_out: 16.0, audio_in: 32.0, audio_cached: 0.4, "
          "audio_out: 64.0}")


@pytest.fixture(scope="module")
def limited_sim(tmp_path_factory):
    path = tmp_path_factory.mktemp("profiles") / "profiles.yaml"
    path.write_text(PROFILES)
    with SimProcess(args=["--profiles", str(path)]) as s:
        yield s


def config(tmp_path, sim) -> str:
    url = sim.ws_url + "/v1/realtime"
    targets = "".join(f"  {name}:\n    url: {url}\n    model: {model}\n"
                      f"    api_key_env: SIM_API_KEY\n{extra}"
                      for name, model, extra in (("cap", "sim-cap", ""), ("knee", "sim-knee", ""),
                                                 ("free", "sim-fast", ""),
                                                 ("paid", "sim-fast", f"    prices: {PRICES}\n")))
    cfg = tmp_path / "vp.yaml"
    cfg.write_text(f"targets:\n{targets}scenarios:\n  one:\n    turns: 1\n    utterance_s: 0.5\n"
                   f"    trailing_silence_s: 0.6\nload:\n  overload_lag_ms: 300\n"
                   f"store: {tmp_path}/store.db\noutbox: {tmp_path}/outbox\n")
    return str(cfg)


def search(tmp_path, sim, target, *args, env=None, timeout=150):
    out = tmp_path / "capacity.json"
    e = dict(child_env(), SIM_API_KEY="test-key", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "voicepulse.cli", "load", target, "--config",
                        config(tmp_path, sim), "--scenario", "one", "--find-capacity",
                        "--step-hold", "8s", "--summary-json", str(out), *args],
                       env=e, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    doc = json.loads(out.read_text()) if out.exists() else None
    return p, doc


def test_finds_a_max_sessions_limit_and_names_the_429s(limited_sim, tmp_path):
    p, doc = search(tmp_path, limited_sim, "cap", "--users", "32", "--step-factor", "1.5",
                    "--threshold", "error_rate<0.01", "--report", str(tmp_path / "cap.html"))
    assert p.returncode == 0, p.stdout + p.stderr
    res = doc["capacity"]
    assert res["found"] and res["stop"] == "found"
    assert abs(res["breaking_point"] - 40) <= 4, res  # within 10 % of the configured 40
    assert res["broken_bound"]["expr"] == "error_rate<0.01"
    assert res["broken_bound"]["actual"] > 0.01
    assert set(res["errors_at_break"]) == {"http_429"}, res["errors_at_break"]  # the limit, named
    levels = [s["level"] for s in res["steps"]]
    assert len(levels) <= 6 and levels[0] == 32  # stopped by itself, bisecting
    assert all(s["turns"] >= 30 for s in res["steps"])
    good = [s for s in res["steps"] if s["level"] <= 40]
    assert all(s["passed"] and not s["errors"] for s in good)  # no 429 at or under the limit
    assert f"breaking point: {res['breaking_point']:g} users" in p.stdout
    assert len(doc["step_summaries"]) == len(levels)
    html = (tmp_path / "cap.html").read_text()  # drawn in Chromium: tests/reports
    assert f'data-breaking-point="{res["breaking_point"]}"' in html
    assert html.count("<tr data-level=") == len(levels)
    assert 'data-target="cap"' in html  # the steps' sessions, read back from the store


def test_reports_the_ttfa_knee_within_one_step(limited_sim, tmp_path):
    """sim-knee: TTFA = 100 ms + 30 ms per active session (plus the server VAD's wait). The
    offset is read from the first step; the knee is then where p95 crosses 750 ms."""
    p, doc = search(tmp_path, limited_sim, "knee", "--users", "10", "--step-factor", "1.5",
                    "--threshold", "ttfa_ms.p95<750")
    assert p.returncode == 0, p.stdout + p.stderr
    res = doc["capacity"]
    first = res["steps"][0]
    offset = first["ttfa_p95"] - 30 * first["level"]
    expected = max(n for n in range(1, 100) if offset + 30 * n < 750)
    assert res["found"] and abs(res["breaking_point"] - expected) <= 1, (expected, res)
    assert res["broken_bound"]["expr"] == "ttfa_ms.p95<750"
    p95 = {s["level"]: s["ttfa_p95"] for s in res["steps"]}
    levels = sorted(p95)
    assert all(p95[a] < p95[b] for a, b in zip(levels, levels[1:], strict=False))  # it rises


def test_an_overloaded_generator_is_not_a_breaking_point(limited_sim, tmp_path):
    p, doc = search(tmp_path, limited_sim, "cap", "--rate", "4", "--threshold",
                    "error_rate<0.01", env={"VOICEPULSE_TEST_BURN": "14:500"})
    assert p.returncode == 1, p.stdout + p.stderr
    res = doc["capacity"]
    assert res["stop"] == "generator_overloaded" and not res["found"]
    assert res["breaking_point"] is None and res["first_bad"] is None
    assert "generator overloaded" in p.stdout and "floor, not a finding" in p.stdout
    assert res["steps"][-1]["overloaded"] and "lag" in res["steps"][-1]["health"]
    assert "breaking point:" not in p.stdout


@pytest.mark.parametrize("guard, stop, steps", [
    (("--max-level", "4"), "max_level", 1),
    (("--max-sessions", "50"), "budget", 1),
    (("--max-cost", "0.2"), "budget", 1),
])
def test_budget_guards_stop_the_search_early(limited_sim, tmp_path, guard, stop, steps):
    target = "paid" if guard[0] == "--max-cost" else "free"
    p, doc = search(tmp_path, limited_sim, target, "--rate", "4", "--threshold",
                    "error_rate<0.01", *guard)
    assert p.returncode == 0, p.stdout + p.stderr
    res = doc["capacity"]
    assert res["stop"] == stop and len(res["steps"]) == steps, res["message"]
    assert res["floor"] == 4 and res["breaking_point"] is None
    assert guard[0] in res["message"]
    if guard[0] == "--max-cost":
        assert 0 < res["cost_usd"] < 0.2  # spent under the budget, and the next step would not be
    if guard[0] == "--max-sessions":
        assert res["sessions"] <= 50


def test_max_cost_needs_a_price(tmp_path):
    cfg = tmp_path / "vp.yaml"
    cfg.write_text("targets:\n  x:\n    url: ws://127.0.0.1:9/v1/realtime\n    model: unpriced-model\n"
                   "    api_key_env: SIM_API_KEY\n")
    p = subprocess.run([sys.executable, "-m", "voicepulse.cli", "load", "x", "--config", str(cfg),
                        "--find-capacity", "--threshold", "error_rate<0.01", "--max-cost", "1"],
                       env=dict(child_env(), SIM_API_KEY="k"), cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "no price for model 'unpriced-model'" in p.stderr, p.stderr
