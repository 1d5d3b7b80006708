"""Secrets canary: API keys, webhook URLs, InfluxDB tokens and credentials inside target URLs are
set to unique canary strings; probes, the probe service with alerts, a load run and a report
run across successful and failing paths; then EVERY output is searched for the canaries:
stdout/stderr of every command, the embedded store file, InfluxDB's data (queried), the outbox
and dead-letter files, --summary-json, the HTML report, /status and /metrics, and the bodies the
webhooks received. None may appear.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from telemetry.sinks import InfluxV1Sink, InfluxV2Sink, outbox_name
from tests.hostile.hostile_server import ROOT
from tests.sim_server import SimProcess

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def canary(what: str) -> str:
    return f"vpcanary{what}{secrets.token_hex(6)}"


KEY_OK = canary("KEYOK")  # the only key the simulator accepts
KEY_BAD = canary("KEYBAD")  # a wrong key: HTTP 401 on upgrade
URL_PASS = canary("URLPASS")  # user:password inside a target URL (unreachable port)
URL_QUERY = canary("URLQUERY")  # a key in a target URL's query string (reachable)
HOOK_OK = canary("HOOKOK")  # webhook URL path/query of a receiver that works
HOOK_BAD = canary("HOOKBAD")  # webhook URL of nothing (connection refused)
INFLUX_TOKEN = canary("INFLUXTOKEN")  # token of every InfluxDB sink (rejected by the auth one)
CANARIES = (KEY_OK, KEY_BAD, URL_PASS, URL_QUERY, HOOK_OK, HOOK_BAD, INFLUX_TOKEN)


class Hooks:
    """A loopback webhook receiver; keeps the bodies (the path legitimately holds the canary)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(self.rfile.read(n))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


CONFIG = """
agent: canary
targets:
  good:
    url: "{sim}/v1/realtime"
    model: sim-fast
    api_key_env: VP_KEY_OK
  querykey:
    url: "{sim}/v1/realtime?api_key={url_query}"
    model: sim-fast
    api_key_env: VP_KEY_OK
  bad401:
    url: "{sim}/v1/realtime"
    model: sim-fast
    api_key_env: VP_KEY_BAD
  credurl:
    url: "ws://user:{url_pass}@127.0.0.1:1/v1/realtime?key={url_pass}"
    model: sim-fast
    api_key_env: VP_KEY_OK
scenarios:
  default: {{turns: 1, utterance_s: 0.4, trailing_silence_s: 0.6,
             timeouts: {{connect: 3s, ready: 3s, first_audio: 5s, response_done: 10s,
                         session: 20s}}}}
store: {store}
outbox: {outbox}
{sinks}
status: {{port: 0}}
service: {{evaluate_every: 1s, shutdown_timeout: 5s}}
probes:
  - {{target: good, every: 1s}}
  - {{target: querykey, every: 1s}}
  - {{target: bad401, every: 1s}}
  - {{target: credurl, every: 1s}}
slos:
  - {{name: bad-availability, target: bad401, kind: availability, objective: 99.5}}
alerts:
  - {{name: bad-errors, kind: threshold, target: bad401, expr: error_rate > 10%, over: 1m}}
  - {{name: cred-errors, kind: threshold, target: credurl, expr: error_rate > 10%, over: 1m}}
notifiers:
  - {{type: webhook, url_env: VP_HOOK_OK, retries: 0, timeout: 2s}}
  - {{type: slack, url_env: VP_HOOK_OK, retries: 0, timeout: 2s}}
  - {{type: webhook, url_env: VP_HOOK_BAD, retries: 1, timeout: 1s, backoff: 0.1s}}
  - {{type: log}}
"""

SINKS = """
sinks:
  - {{type: influx, api: v1, url: "{influx}", database: {db}, token_env: VP_INFLUX_TOKEN}}
  - {{type: influx, api: v1, url: "{influx_auth}", database: {db}, token_env: VP_INFLUX_TOKEN}}
  - {{type: influx, api: v2, url: "{influx_auth}", org: o, bucket: {db},
      token_env: VP_INFLUX_TOKEN}}
"""


class Outputs:
    """Everything produced, by name, for the final search."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def add(self, name: str, data: bytes | str) -> None:
        self.items[name] = data.encode() if isinstance(data, str) else data

    def add_tree(self, root: Path, prefix: str) -> None:
        for p in sorted(root.rglob("*")):
            if p.suffix == ".yaml":  # the user's own config files hold URLs by design
                continue
            self.add(f"{prefix}:name:{p.relative_to(root)}", str(p.relative_to(root)))
            if p.is_file():
                self.add(f"{prefix}:{p.relative_to(root)}", p.read_bytes())

    def leaks(self) -> list[str]:
        found = []
        for name, data in self.items.items():
            low = data.lower()
            for c in CANARIES:
                if c.lower().encode() in low:
                    found.append(f"{name} holds {c[:16]}...")
        return found


def run(args: list[str], env: dict, out: Outputs, name: str, timeout: float = 90,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "voicepulse.cli", *args], cwd=str(cwd or ROOT),
                       env=env, capture_output=True, timeout=timeout)
    out.add(f"{name}:stdout", p.stdout)
    out.add(f"{name}:stderr", p.stderr)
    return p


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {needle!r} within {timeout} s:\n{text[-3000:]}")


def test_no_canary_in_any_output(tmp_path, influxd, influx_factory):
    out = Outputs()
    hooks = Hooks()
    influx_auth = influx_factory(auth=True)  # rejects every write: the token is wrong
    db = f"canary_{os.getpid()}"
    influxd.create_database(db)
    # influxd enforces auth only once an admin exists; with the database there too, the v1
    # sink's writes fail on the token (401), not on a missing database (404)
    influx_auth.query("CREATE USER admin WITH PASSWORD 'pw' WITH ALL PRIVILEGES")
    influx_auth.query(f'CREATE DATABASE "{db}"', auth=("admin", "pw"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VP_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", VP_KEY_OK=KEY_OK,
               VP_KEY_BAD=KEY_BAD, VP_INFLUX_TOKEN=INFLUX_TOKEN,
               VP_HOOK_OK=f"http://127.0.0.1:{hooks.port}/hook/{HOOK_OK}?token={HOOK_OK}",
               VP_HOOK_BAD=f"http://user:{HOOK_BAD}@127.0.0.1:1/hook?token={HOOK_BAD}")
    try:
        with SimProcess(args=["--api-key", KEY_OK, "--ttfa-ms", "100", "--reply-s", "0.4"]) as sim:
            common = dict(sim=sim.ws_url, url_query=URL_QUERY, url_pass=URL_PASS)
            embedded = tmp_path / "embedded.yaml"
            embedded.write_text(CONFIG.format(**common, store=tmp_path / "vp.db",
                                              outbox=tmp_path / "outbox-e", sinks=""))
            influx_cfg = tmp_path / "influx.yaml"
            influx_cfg.write_text(CONFIG.format(
                **common, store=tmp_path / "unused.db", outbox=tmp_path / "outbox-i",
                sinks=SINKS.format(influx=influxd.url, influx_auth=influx_auth.url, db=db)))

            control = Outputs()  # the search works: a config file does hold canaries
            control.add("config", influx_cfg.read_bytes() + env["VP_HOOK_BAD"].encode())
            assert len(control.leaks()) == 3

            def serve(cfg: Path, name: str) -> None:
                """The probe service with alerts, webhooks (one failing) and its sinks, until an
                alert fires; everything it served and wrote goes into `out`."""
                errf = tmp_path / f"{name}.stderr"
                with open(errf, "wb") as ef, open(tmp_path / f"{name}.stdout", "wb") as of:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "voicepulse.cli", "serve", "--config", str(cfg),
                         "--duration", "14s"], cwd=str(ROOT), env=env, stdout=of,
                        stderr=ef)
                try:
                    line = wait_for_line(errf, "serving:", proc, 30)
                    url = line.strip().rsplit(" ", 1)[-1]
                    base = url.rsplit("/", 1)[0]
                    deadline = time.monotonic() + 25
                    status = b""
                    while time.monotonic() < deadline and proc.poll() is None:
                        status = fetch(base + "/status")
                        if b"firing" in status and hooks.bodies:
                            break
                        time.sleep(0.3)
                    out.add(f"{name}:/status", status)
                    out.add(f"{name}:/metrics", fetch(base + "/metrics"))
                    out.add(f"{name}:/healthz", fetch(base + "/healthz"))
                    assert b"firing" in status, status[:2000]
                    assert proc.wait(timeout=60) == 0
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait(5)
                out.add(f"{name}:stderr", errf.read_bytes())
                out.add(f"{name}:stdout", (tmp_path / f"{name}.stdout").read_bytes())
                err = errf.read_text(errors="replace")
                assert "401" in err or "http_401" in err, err[-3000:]

            # the InfluxDB service runs (14 s) while the embedded-store probes below do: it
            # shares no store or outbox with them, only the simulator and the webhooks
            influx_serve: dict = {}

            def serve_influx() -> None:
                try:
                    serve(influx_cfg, "serve-influx")
                except BaseException as e:  # re-raised in the test's thread
                    influx_serve["error"] = e

            th = threading.Thread(target=serve_influx, daemon=True)
            th.start()
            try:
                # -- probes: success, 401, credentials in an unreachable URL, a key in the query
                outcomes = {}
                for target in ("good", "querykey", "bad401", "credurl"):
                    for fmt in ([], ["--json"]):
                        p = run(["probe", target, "--config", str(embedded), *fmt], env, out,
                                f"probe-{target}{fmt}")
                        outcomes[target] = p.returncode
                assert outcomes == {"good": 0, "querykey": 0, "bad401": 1, "credurl": 1}, outcomes
                p = run(["probe", "--url", f"ws://u:{URL_PASS}@127.0.0.1:1/v1?key={URL_PASS}",
                         "--model", "m", "--api-key-env", "VP_KEY_OK", "--no-store"], env, out,
                        "probe-url")
                assert p.returncode == 1
                assert b"127.0.0.1:1" in p.stdout + p.stderr  # the message still says where
            finally:
                th.join(120)
            assert not th.is_alive(), "serve-influx did not end"
            if "error" in influx_serve:
                raise influx_serve["error"]
            # after that service: it writes the same outbox (outbox-i)
            p = run(["probe", "bad401", "--config", str(influx_cfg)], env, out, "probe-influx")
            assert p.returncode == 1

            # -- the probe service on the embedded store (the probes' store)
            serve(embedded, "serve-embedded")
            assert hooks.bodies, "the working webhook received nothing"
            for i, body in enumerate(hooks.bodies):
                out.add(f"webhook-body-{i}", body)

            # -- a load run, successful and failing, with --summary-json
            for target in ("good", "bad401"):
                summary = tmp_path / f"summary-{target}.json"
                p = run(["load", target, "--config", str(embedded), "--rate", "2",
                         "--duration", "3s", "--summary-json", str(summary)], env, out,
                        f"load-{target}", timeout=120)
                assert p.returncode in (0, 1), p.stderr[-3000:]
                assert summary.exists()
                out.add(f"summary-{target}", summary.read_bytes())

            # -- the report, from the embedded store and from InfluxDB
            # (two readers, run side by side)
            report = tmp_path / "report.html"
            report2 = tmp_path / "report-influx.html"
            with ThreadPoolExecutor(2) as pool:
                embedded_report = pool.submit(
                    run, ["report", "--store", str(tmp_path / "vp.db"), "--since", "1h", "-o",
                          str(report)], env, out, "report")
                influx_report = pool.submit(
                    run, ["report", "--config", str(influx_cfg), "--since", "1h", "-o",
                          str(report2)], env, out, "report-influx")
            p = embedded_report.result()
            assert p.returncode == 0, p.stderr[-3000:]
            out.add("report.html", report.read_bytes())
            p = influx_report.result()
            assert p.returncode == 0, p.stderr[-3000:]
            out.add("report-influx.html", report2.read_bytes())
            # it read the serve-influx sessions back from InfluxDB (its store file is unused)
            wrote = re.search(rb"\((\d+) sessions\)", p.stdout)
            assert wrote and int(wrote[1]) > 0, p.stdout[-2000:]
            assert b"querykey" in out.items["report-influx.html"]
            assert not (tmp_path / "unused.db").exists()

        # -- what was stored: the embedded store, InfluxDB (queried), outboxes, dead letters
        out.add_tree(tmp_path, "tmp")
        data = influxd.query('SELECT * FROM /.*/', db=db)
        out.add("influxd-data", repr(data))
        assert "series" in repr(data), "nothing reached InfluxDB"
        # the sessions really were stored and really failed the way the test meant
        stored = out.items["tmp:vp.db"]
        assert b"http_401" in stored and b"connect_refused" in stored
        # both sinks of the auth server dead-lettered every batch, the good sink none: v1 as
        # 401 (the token), v2 as 404 (influxd 1.6 has no /api/v2/write; the token is still sent)
        expect = {outbox_name(InfluxV1Sink(url=influx_auth.url, database=db)): 401,
                  outbox_name(InfluxV2Sink(url=influx_auth.url, org="o", bucket=db)): 404}
        dead = {n[len("tmp:outbox-i/"):-len(".dead.jsonl")]: data for n, data in out.items.items()
                if n.startswith("tmp:outbox-i/") and n.endswith(".dead.jsonl")}
        assert set(dead) == set(expect), (sorted(dead), sorted(expect))
        for name, data in dead.items():
            records = [json.loads(line) for line in data.splitlines()]
            got = {(r["status"], r["reason"][:60]) for r in records}
            assert records and {s for s, _ in got} == {expect[name]}, (name, got)
            assert all(r["points"] > 0 for r in records), name
    finally:
        hooks.close()
    leaks = out.leaks()
    assert not leaks, "\n".join(leaks)


def test_verbose_serve_logs_no_key(tmp_path):
    out = Outputs()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VP_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", VP_KEY_OK=KEY_OK, VP_KEY_BAD=KEY_BAD,
               VP_HOOK_OK="http://127.0.0.1:1/hook", VP_HOOK_BAD="http://127.0.0.1:1/hook")
    with SimProcess(args=["--api-key", KEY_OK, "--ttfa-ms", "100", "--reply-s", "0.4"]) as sim:
        cfg = tmp_path / "v.yaml"
        cfg.write_text(CONFIG.format(sim=sim.ws_url, url_query=URL_QUERY, url_pass=URL_PASS,
                                     store=tmp_path / "vp.db", outbox=tmp_path / "ob", sinks=""))
        p = run(["serve", "--config", str(cfg), "--duration", "4s", "-v"], env, out, "serve-v")
    assert p.returncode == 0, p.stderr[-2000:]
    assert b"probe" in p.stderr  # it did log the probes
    leaks = out.leaks()
    assert not leaks, "\n".join(leaks)
