"""The VoicePulse tab in Locust's web UI, read in headless Chromium during `voicepulse load
--web` runs against the simulator on loopback (a local run, `--processes 2`, and a `--master`
with two `--worker` processes): it refreshes while the run goes, and at the end shows exactly the percentiles,
arrivals and thresholds of the run's `--summary-json`, and a health row per worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from loadtests.run import child_env
from loadtests.web_tab import ms, rows
from tests.reports.chrome import CDPError, Chrome
from tests.servers import free_port
from tests.sim_server import ROOT, SimProcess

THRESHOLDS = ("ttfa_ms.p95<5000", "late_starts<1000", "ttfa_ms.p50<1")  # the last one fails
#: tab column -> summary metric field
FIELDS = {"count": "count", "mean ms": "mean", "p50 ms": "p50", "p90 ms": "p90",
          "p95 ms": "p95", "p99 ms": "p99", "p99.9 ms": "p999", "max ms": "max"}

TAB_JS = r"""
(() => {
  const t = Array.from(document.querySelectorAll('table')).find(
    t => (t.querySelector('thead') || {}).textContent?.includes('p99.9 ms'));
  if (!t) return null;
  const heads = Array.from(t.querySelectorAll('thead th')).map(th => th.textContent.trim());
  return Array.from(t.querySelectorAll('tbody tr')).map(tr => Object.fromEntries(
    Array.from(tr.children).map((td, i) => [heads[i], td.textContent.trim()])));
})()
"""


def started(tab: list[dict] | None) -> int:
    row = next((r for r in tab or () if r["section"] == "arrivals" and r["item"] == "started"),
               None)
    return int(row["count"]) if row else -1


def running(tab: list[dict] | None) -> bool:
    run = next((r for r in tab or () if r["section"] == "run"), None)
    return run is None or run["detail"].endswith(", running")


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"voicepulse load exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def page_state(c: Chrome, port: int, log) -> str:
    """What the page and the server showed when a wait timed out: the failure's evidence."""
    page = c.evaluate("location.href + ' | ' + document.body.innerText.slice(0, 1500)")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests", timeout=5) as r:
            stats = json.loads(r.read())
        server = {k: stats.get(k) for k in ("state", "user_count", "worker_count")}
        server["extended_stats"] = [len(x["data"]) for x in stats.get("extended_stats", [])]
    except OSError as e:
        server = repr(e)
    log.seek(0)
    return (f"page: {page}\nserver /stats/requests: {server}\nconsole: {c.console_errors()}"
            f"\nrequests: {c.requested_urls()[-12:]}\nload log:\n{log.read()[-3000:]}")


@pytest.mark.slow
@pytest.mark.needs_tool("chromium")
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["local", "processes", "master"])
def test_the_tab_shows_the_runs_exact_summary(tmp_path, mode):
    port, master_port = free_port(), free_port()
    workers = {"local"} if mode == "local" else {"worker-0", "worker-1"}
    summary_json = tmp_path / "summary.json"
    with SimProcess() as sim:
        cfg = tmp_path / "vp.yaml"
        cfg.write_text(f"targets:\n  s:\n    url: {sim.ws_url}/v1/realtime\n"
                       f"    model: sim-fast\n    api_key_env: SIM_API_KEY\n"
                       f"scenarios:\n  one:\n    turns: 2\n    utterance_s: 0.5\n"
                       f"    trailing_silence_s: 0.6\n    pause_s: 0.1\n"
                       f"load:\n  interval: 2s\n"
                       f"store: {tmp_path}/store.db\noutbox: {tmp_path}/outbox\n")
        argv = [sys.executable, "-m", "voicepulse.cli", "load", "s", "--config", str(cfg),
                "--scenario", "one", "--rate", "3", "--duration", "8s", "--web",
                "--web-port", str(port),
                "--summary-json", str(summary_json)]
        argv += [a for t in THRESHOLDS for a in ("--threshold", t)]
        argv += {"local": [], "processes": ["--processes", "2"],
                 "master": ["--master", "--master-bind-host", "127.0.0.1", "--processes",
                            "2"]}[mode]
        env = {**child_env(), "SIM_API_KEY": "test-key",
               "LOCUST_MASTER_BIND_PORT": str(master_port)}
        log = open(tmp_path / "load.log", "w+")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        remote: list[subprocess.Popen] = []
        try:
            wait_http(f"http://127.0.0.1:{port}/", proc, 40)
            with Chrome(timeout=30) as c:
                # opened before any worker connects (the master waits in Locust's "ready" state,
                # where its UI polls nothing): the page must still follow the run once it starts
                c.open(f"http://127.0.0.1:{port}/?tab=voicepulse")
                remote += [subprocess.Popen(  # workers as on other machines: the plan comes
                    [sys.executable, "-m", "voicepulse.cli", "load", "--worker",  # from the master
                     "--master-host", "127.0.0.1"], cwd=tmp_path,
                    env={**env, "LOCUST_MASTER_NODE_PORT": str(master_port)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(2 if mode == "master" else 0)]
                try:
                    c.wait_for(f"(() => {{ const t = {TAB_JS}; return t && t.some("
                               "r => r.section === 'latency'); })()", timeout=40)
                except CDPError as e:
                    raise AssertionError(page_state(c, port, log)) from e
                first = started(c.evaluate(TAB_JS))
                # live: more arrivals appear on the open page, with no reload
                c.wait_for(f"(() => {{ const t = {TAB_JS}; return t && t.some(r => r.section "
                           f"=== 'arrivals' && r.item === 'started' && +r.count > {first}); }})()",
                           timeout=30)
                c.wait_for(f"(() => {{ const t = {TAB_JS}; const r = t && t.find(r => "
                           "r.section === 'run'); return r && !r.detail.endsWith(', running'); "
                           "})()", timeout=60)
                tab = c.evaluate(TAB_JS)
                c.screenshot(tmp_path / "tab.png")
                requests = c.requested_urls()
                errors = c.console_errors()
            code = proc.wait(timeout=60)
            assert [w.wait(timeout=30) for w in remote] == [0] * len(remote)
        finally:
            for p in (proc, *remote):
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            log.seek(0)
            out = log.read()
            log.close()
    assert code == 1, out[-3000:]  # ttfa_ms.p50<1 fails
    s = json.loads(summary_json.read_text())
    assert first < s["counters"]["arrivals_started"] == 24 and not running(tab)
    assert all(u.startswith((f"http://127.0.0.1:{port}/", "data:")) for u in requests), requests
    assert not errors, errors

    latency = {r["item"]: r for r in tab if r["section"] == "latency"}
    assert set(latency) == {m["name"] for m in s["metrics"]} and "ttfa_ms" in latency
    for m in s["metrics"]:
        shown = {f: latency[m["name"]][col] for col, f in FIELDS.items()}
        assert shown == {f: str(m[f]) if f == "count" else ms(m[f]) for f in FIELDS.values()}, \
            m["name"]  # the summary's figures to the microsecond, not Locust's rounding
    arrivals = {r["item"]: int(r["count"]) for r in tab if r["section"] == "arrivals"}
    c = s["counters"]
    assert arrivals == {"due": c["arrivals_due"], "started": c["arrivals_started"],
                        "late": c["late_starts"], "no slot": c["no_slot"],
                        "dropped": c["dropped"], "cut": c["cut"]}
    verdicts = {r["item"]: r["detail"] for r in tab if r["section"] == "threshold"}
    assert set(verdicts) == set(THRESHOLDS)
    for t in s["thresholds"]:
        assert verdicts[t["expr"]].startswith("PASS" if t["ok"] else "FAIL"), (t, verdicts)
    assert [t["ok"] for t in s["thresholds"]] == [True, True, False]
    health = {r["item"]: r["detail"] for r in tab if r["section"] == "generator"}
    assert set(health) - {"all"} == workers == {h["worker"] for h in s["health"]}
    for w in workers:
        assert health[w].startswith(("ok;", "OVERLOADED:")) and "CPU max" in health[w], health
        assert "send lag p99" in health[w] and "users " in health[w], health


def test_rows_follow_the_summary():
    from loadtests.summary import LoadSummary, MetricStats, WorkerHealth

    s = LoadSummary(run_id="r1", target="t", model="m", scenario="one", load_model="open",
                    level=3.0, arrivals="constant", duration_s=4.2, slots=9, workers=1,
                    counters={"sessions": 4, "sessions_ok": 3, "arrivals_due": 6,
                              "arrivals_started": 5, "late_starts": 1, "dropped": 1,
                              "errors": {"timeout": 1}},
                    metrics=[MetricStats("ttfa_ms", 8, 200.25, 190.0, 200.319, 201.0, 203.5,
                                         204.1, 204.1, 204.1)],
                    health=[WorkerHealth("local", 12.5, 1.5, 0.25, True, ["CPU 97 % > 90 %"])],
                    thresholds=[{"expr": "ttfa_ms.p95<800", "ok": True, "actual": 203.5},
                                {"expr": "error_rate<0.01", "ok": False, "actual": None}],
                    complete=False)
    r = rows(s, {"local": {"users": 9, "in_flight": 2}})
    lat = next(x for x in r if x["section"] == "latency")
    assert (lat["item"], lat["p50"], lat["p999"], lat["count"]) == ("ttfa_ms", "200.319", "204.100",
                                                                   8)
    assert r[0]["detail"].endswith(", running")
    got = {(x["section"], x["item"]): x for x in r}
    assert got[("arrivals", "started")]["count"] == 5 and got[("arrivals", "cut")]["count"] == 0
    assert got[("sessions", "sessions")]["detail"] == "ok 3, failed 1 (error rate 25.00%); timeout 1"
    assert got[("threshold", "ttfa_ms.p95<800")]["detail"] == "PASS (actual 203.5)"
    assert got[("threshold", "error_rate<0.01")]["detail"] == "no data yet"
    assert got[("generator", "local")]["detail"] == (
        "OVERLOADED: CPU 97 % > 90 %; users 9, in flight 2, CPU max 12.5 %, send lag p99 "
        "1.5 ms, loop lag p99 0.2 ms")
    s.complete = True
    assert {x["item"]: x["detail"] for x in rows(s) if x["section"] == "threshold"}[
        "error_rate<0.01"] == "FAIL"


STATE_PROBE = r"""
import json, sys
from locust import User, constant, task
from locust.env import Environment
from loadtests.web_tab import register

class Quiet(User):
    wait_time = constant(1)

    @task
    def t(self):
        pass

def states(tab):
    env = Environment(user_classes=[Quiet])
    env.create_local_runner()
    ui = env.create_web_ui("127.0.0.1", 0, delayed_start=True)
    if tab:
        register(ui, lambda: None)
    client = ui.app.test_client()
    before = client.get("/stats/requests").get_json()["state"]
    env.runner.update_state("running")  # the run starts inside Locust's ~2 s report cache
    return [before, client.get("/stats/requests").get_json()["state"]]

print(json.dumps({"locust": states(False), "tab": states(True)}))
"""


def test_the_stats_poll_reports_the_live_state():
    """A page rendered just after the start must not be sent back to the start form by
    Locust's cached report (the cause of the tab test's rare hang on a busy machine)."""
    out = subprocess.run([sys.executable, "-c", STATE_PROBE], cwd=ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["locust"] == ["ready", "ready"], got  # the premise: Locust alone is stale
    assert got["tab"] == ["ready", "running"], got
