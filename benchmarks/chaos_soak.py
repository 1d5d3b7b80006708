"""Chaos soak (issue 18): probes and load through every fault at once, every probe and point
accounted for.

    python benchmarks/chaos_soak.py                 # the 60-minute profile
    python benchmarks/chaos_soak.py --quick         # 5 minutes, fault durations scaled down
    python benchmarks/chaos_soak.py --duration 20m --seed 3

On loopback only, for `--duration`, it runs:
- `voicepulse serve` probing three simulated targets (provider `openai`, `gemini` and
  `openai-live`, i.e. GPT-Live) every 10 s into a real influxd 1.6.7 (tests/servers.py) through
  the outbox, its status page, /status and /metrics scraped every 15 s;
- `voicepulse load --processes 2` at a steady open-model rate for the whole run, into the same
  influxd through its own outbox;
- a seeded fault schedule, printed at start: simulator 503 windows, stalls, drops, session
  expiry, empty replies, a TTFA regression (must page, then resolve), influxd stopped twice,
  `serve` SIGKILLed and restarted during an influxd outage, SIGHUP with a bad then a good config,
  and the simulator restarted under load.

Then the accounting, printed as a table; exit 1 when anything is unexplained:
- probes: every scheduled fire time is a stored probe or a stored `schedule` record saying why
  not (scheduler/ledger.py writes the ones a killed process owed);
- points: every point either process acknowledged to its outbox (the outbox journal,
  VOICEPULSE_OUTBOX_JOURNAL) is in influxd exactly once, same series, timestamp and fields;
- alerts: each paging fault window paged and resolved, nothing paged outside one, nothing stuck;
- resources: RSS and fd slopes of `serve` after its restart and warm-up, and of each process of
  the load run (the CLI, the Locust master, each worker);
- the load run: its counts and generator health.
See docs/chaos-soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import slope, stop  # noqa: E402
from simulator.process import SimProcess  # noqa: E402
from tests.servers import InfluxServer  # noqa: E402

DB = "chaos"
AGENT = "chaos"
EVERY_S = 10.0
SCRAPE_S = 15.0
KEY_ENV = "CHAOS_KEY"
TARGETS = {  # name -> (provider, sim path kind, model)
    "openai": ("openai", "realtime", "sim-fast"),
    "gemini": ("gemini", "gemini", "chaos-gemini"),
    "gpt-live": ("openai-live", "live", "sim-live-chaos"),
}
LOAD_TARGET, LOAD_MODEL = "chaos-load", "chaos-load"
TOL_S = 0.5  # fire times on one grid line up within this


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env(work: Path) -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", **{KEY_ENV: "chaos-key"})
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["VOICEPULSE_OUTBOX_JOURNAL"] = str(work / "journal")
    return e


# -- the fault schedule --------------------------------------------------------------------------
@dataclass
class Fault:
    at: float  # seconds from the start of the run
    name: str
    detail: str
    end: float | None = None  # a window's end (None: an instant)
    pages: str = ""  # the alert rule this window must page


def fault_schedule(duration: float, seed: int) -> tuple[list[Fault], dict]:
    """Faults at fractions of the run (seeded +-1 % jitter of each start). Durations are the
    issue's for the 60-minute profile, scaled down (with floors) for shorter runs."""
    rng = random.Random(seed)
    full = duration >= 3600 - 1
    scale = duration / 3600.0

    def at(frac: float) -> float:
        return round(duration * (frac + rng.uniform(-0.01, 0.01)), 1)

    def span(full_s: float, floor_s: float) -> float:
        return full_s if full else max(floor_s, round(full_s * scale, 1))

    # the regression test at the product's defaults (p < 0.01, 20 samples a window) in the
    # 60-minute profile; shorter runs hold too few samples a window for that (4 in 40 s) and
    # take p < 0.05 over 3. At p < 0.05, evaluated every 5 s for an hour, noise paged: the first
    # 60-minute run fired on a +3 % median (p95 +26 %, p = 0.035, n = 30/21) with no fault.
    rules = {"recent_s": span(300, 40), "baseline_s": span(900, 90), "over_s": span(120, 30),
             "evaluate_s": 5.0, "p_value": 0.01 if full else 0.05,
             "min_samples": 20 if full else 3,
             # a firing alert resolves only after being clear this long (keep_firing_for): the
             # second 60-minute run's regression page flapped (resolved 5 s, fired again) as p
             # crossed 0.01 while its recent window filled with regressed samples
             "keep_firing_s": span(60, 10)}
    out: list[Fault] = []

    def window(start: float, length: float, name: str, detail: str, pages: str = "") -> None:
        out.append(Fault(start, name, detail, round(start + length, 1), pages))

    a = at(0.06)
    window(a, span(30, 12), "influxd-stop", "influxd stopped, then started again")
    window(at(0.14), span(420, 40), "sim-503", "HTTP 503 on every upgrade of openai (sim-fast)",
           pages="openai-errors")
    window(at(0.18), span(600, 45), "sim-stall", "2 s stall inside every gemini reply")
    b = at(0.33)
    ob = span(180, 45)
    window(b, ob, "influxd-stop", "influxd stopped, then started again")
    k = round(b + ob * 0.25, 1)
    window(k, span(60, 12), "serve-kill", "serve SIGKILLed, restarted during the outage")
    window(at(0.42), span(300, 30), "sim-drop", "TCP reset after 2 deltas on gemini")
    out.append(Fault(at(0.52), "sighup-bad", "SIGHUP with a bad config (must keep the old)"))
    out.append(Fault(at(0.555), "sighup-good", "SIGHUP with a good config (reloaded)"))
    window(at(0.58), span(480, 40), "sim-regression", "TTFA x2.0 on openai (sim-fast)",
           pages="openai-ttfa-regression")
    window(at(0.60), span(300, 25), "sim-expiry", "session expiry after 1 s on gpt-live")
    window(at(0.72), span(300, 25), "sim-empty", "empty_reply on gpt-live")
    out.append(Fault(at(0.90), "sim-restart", "simulator restarted under load (same ports)"))
    out.sort(key=lambda f: f.at)
    return out, rules


# -- processes -----------------------------------------------------------------------------------
def wait_line(path: Path, pattern: str, timeout: float, since: int = 0) -> str:
    """The first line matching `pattern` in a growing log file after byte `since` (bounded)."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_bytes()[since:].decode(errors="replace")
            for line in text.splitlines():
                if rx.search(line):
                    return line
        time.sleep(0.1)
    raise RuntimeError(f"no {pattern!r} in {path} within {timeout} s")


class Serve:
    def __init__(self, work: Path, cfg: Path):
        self.work, self.cfg = work, cfg
        self.log = work / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> None:
        since = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voicepulse.cli", "serve", "--config", str(self.cfg)],
                cwd=str(self.work), env=env(self.work), stdout=subprocess.DEVNULL, stderr=f)
        line = wait_line(self.log, r"serving:", 60, since)
        self.url = line.rsplit(" ", 1)[-1].strip().removesuffix("/status")
        self.starts += 1

    def log_since(self, since: int) -> str:
        return self.log.read_bytes()[since:].decode(errors="replace")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


def get(url: str, timeout: float = 5.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except OSError:
        return None


# -- configs -------------------------------------------------------------------------------------
SCENARIO = """scenarios:
  default: {turns: 1, utterance_s: 1.0, trailing_silence_s: 0.6,
            timeouts: {connect: 5s, ready: 5s, first_audio: 10s, response_done: 20s,
                       session: 40s}}
"""


def target_yaml(name: str, sim: SimProcess) -> str:
    provider, kind, model = TARGETS.get(name, ("openai", "realtime", LOAD_MODEL))
    url = {"realtime": sim.realtime_url(), "gemini": sim.gemini_url(),
           "live": f"{sim.ws_url}/v1/live/sessions"}[kind]
    return (f"  {name}: {{provider: {provider}, url: \"{url}\", model: {model}, "
            f"api_key_env: {KEY_ENV}}}\n")


def serve_yaml(work: Path, sim: SimProcess, influx: InfluxServer, rules: dict) -> str:
    return (f"agent: {AGENT}\ntargets:\n"
            + "".join(target_yaml(n, sim) for n in TARGETS) + SCENARIO
            + f"sinks:\n  - {{type: influx, api: v1, url: \"{influx.url}\", database: {DB}}}\n"
            f"outbox: {work / 'outbox-serve'}\n"
            "status: {port: 0}\n"
            f"service: {{evaluate_every: {rules['evaluate_s']:g}s, shutdown_timeout: 10s}}\n"
            "probes:\n" + "".join(f"  - {{target: {n}, every: {EVERY_S:g}s}}\n" for n in TARGETS)
            + "alerts:\n"
            f"  - {{name: openai-ttfa-regression, kind: regression, target: openai, metric: "
            f"ttfa_ms, recent: {rules['recent_s']:g}s, baseline: {rules['baseline_s']:g}s, "
            f"min_effect: 15%, p_value: {rules['p_value']:g}, "
            f"min_samples: {rules['min_samples']}, keep_firing_for: {rules['keep_firing_s']:g}s, "
            f"severity: page}}\n"
            f"  - {{name: openai-errors, kind: threshold, target: openai, expr: "
            f"\"error_rate > 50%\", over: {rules['over_s']:g}s, "
            f"keep_firing_for: {rules['keep_firing_s']:g}s, severity: page}}\n"
            "notifiers:\n  - {type: log}\n")


def load_yaml(work: Path, sim: SimProcess, influx: InfluxServer) -> str:
    return ("targets:\n" + target_yaml(LOAD_TARGET, sim) + SCENARIO
            + f"sinks:\n  - {{type: influx, api: v1, url: \"{influx.url}\", database: {DB}}}\n"
            f"outbox: {work / 'outbox-load'}\n")


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Run:
    work: Path
    duration: float
    t0: float = 0.0
    samples: list[dict] = field(default_factory=list)  # serve RSS/fds, scrape results
    scrapes: dict = field(default_factory=lambda: dict.fromkeys(
        ("status_ok", "page_ok", "metrics_ok", "serve_down", "status_failed", "page_failed",
         "metrics_failed"), 0))
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # fault-time checks
    restarted_at: float = 0.0  # serve's last start (s into the run)
    page_failures: list = field(default_factory=list)  # (t, influxd up?)

    def now(self) -> float:
        return time.monotonic() - self.t0


influx_up = [True]  # what the fault schedule last did to influxd


def usage(p: psutil.Process) -> dict:
    with p.oneshot():
        return {"rss_mb": p.memory_info().rss / 2**20, "fds": p.num_fds(),
                "threads": p.num_threads()}


def load_usage(load: subprocess.Popen | None) -> dict[str, dict]:
    """The load run's processes by role and pid: `voicepulse load` itself (cli), the Locust
    master it starts (its child) and the workers that master forks (grandchildren)."""
    out: dict[str, dict] = {}
    if load is None or load.poll() is not None:
        return out
    try:
        cli = psutil.Process(load.pid)
        out[f"cli {cli.pid}"] = usage(cli)
        for master in cli.children():
            out[f"master {master.pid}"] = usage(master)
            for worker in master.children(recursive=True):
                out[f"worker {worker.pid}"] = usage(worker)
    except psutil.Error:
        pass
    return out


def scraper(run: Run, serve: Serve, done: threading.Event,
            load: subprocess.Popen | None = None) -> None:
    n = 0
    while not done.wait(max(0.0, run.t0 + (n + 1) * SCRAPE_S - time.monotonic())):
        n += 1
        row: dict = {"t": run.now(), "serve": serve.starts, "load": load_usage(load)}
        pid = serve.pid
        if pid:
            try:
                row.update(usage(psutil.Process(pid)))
            except psutil.Error:
                pass
        st = get(serve.url + "/status") if serve.url else None
        page = get(serve.url + "/") if serve.url else None
        metrics = get(serve.url + "/metrics") if serve.url else None
        if not pid:
            run.scrapes["serve_down"] += 1
        else:
            row["influxd_up"] = influx_up[0]
            if st is not None:
                run.scrapes["status_ok"] += 1
                doc = json.loads(st)
                row["alerts"] = [(a["rule"], a["state"]) for a in doc.get("alerts", [])]
                row["pending"] = (doc.get("outbox") or {}).get("pending")
                row["runs"] = sum(t["runs"] for t in doc["targets"].values())
            else:
                run.scrapes["status_failed"] += 1
            if page is not None:
                run.scrapes["page_ok"] += 1
            else:
                run.scrapes["page_failed"] += 1
                run.page_failures.append((round(row["t"], 1), influx_up[0]))
            good = metrics is not None and b"voicepulse_probe_runs_total" in metrics
            run.scrapes["metrics_ok" if good else "metrics_failed"] += 1
        run.samples.append(row)


def apply(f: Fault, run: Run, sim: SimProcess, influx: InfluxServer, serve: Serve,
          cfg: Path, good_cfg: str, sim_args: list[str]) -> None:
    length = (f.end - f.at) if f.end is not None else 0.0
    if f.name == "influxd-stop":
        influx_up[0] = False
        influx.stop()

        def back() -> None:
            influx.start()
            influx_up[0] = True
        threading.Timer(length, back).start()
    elif f.name == "serve-kill":
        # kill it while a probe runs (bounded wait), so the `killed` record is exercised
        deadline = time.monotonic() + EVERY_S
        while time.monotonic() < deadline:
            doc = json.loads(get(serve.url + "/status") or b"{}")
            if any(t.get("running") for t in (doc.get("targets") or {}).values()):
                break
            time.sleep(0.2)
        log(f"serve SIGKILL at {run.now():.1f} s")
        serve.proc.kill()
        serve.proc.wait(10)

        def restart() -> None:
            serve.start()
            run.restarted_at = run.now()
            log(f"serve restarted (pid {serve.proc.pid}) at {run.restarted_at:.0f} s")
        threading.Timer(length, restart).start()
    elif f.name == "sim-503":
        sim.fault(kind="http_status", status=503, duration_s=length, models=["sim-fast"])
    elif f.name == "sim-stall":
        sim.fault(kind="stall", per="session", stall_s=2.0, duration_s=length,
                  models=[TARGETS["gemini"][2]])
    elif f.name == "sim-drop":
        sim.fault(kind="drop", per="session", duration_s=length, models=[TARGETS["gemini"][2]])
    elif f.name == "sim-expiry":
        sim.fault(kind="session_expiry", per="session", after_s=1.0, duration_s=length,
                  models=[TARGETS["gpt-live"][2]])
    elif f.name == "sim-empty":
        sim.fault(kind="empty_reply", per="session", duration_s=length,
                  models=[TARGETS["gpt-live"][2]])
    elif f.name == "sim-regression":
        sim.set_profile(model="sim-fast", ttfa_scale=2.0)
        threading.Timer(length, lambda: sim.set_profile(model="sim-fast",
                                                        ttfa_scale=1.0)).start()
    elif f.name in ("sighup-bad", "sighup-good"):
        since = serve.log.stat().st_size
        good = f.name == "sighup-good"
        cfg.write_text(good_cfg + "# reloaded\n" if good else
                       good_cfg.replace(f"every: {EVERY_S:g}s", "every: soon", 1))
        runs_before = (json.loads(get(serve.url + "/status") or b"{}").get("targets") or {})
        serve.proc.send_signal(signal.SIGHUP)
        want = "config reloaded" if good else "reload failed, keeping the running config"
        try:
            line = wait_line(serve.log, re.escape(want), 10, since)
            ok = (f"{cfg.name}" in line and "probes" in line) if not good else True
            run.checks.append((f.name, ok, line.split(": ", 1)[-1][:110]))
        except RuntimeError as exc:
            run.checks.append((f.name, False, str(exc)))
        if not good:
            time.sleep(EVERY_S * 1.5)  # the old config must keep probing
            after = (json.loads(get(serve.url + "/status") or b"{}").get("targets") or {})
            kept = all(after.get(j, {}).get("runs", 0) > v.get("runs", 0)
                       for j, v in runs_before.items())
            run.checks.append(("old config kept probing", kept and bool(runs_before),
                               f"{len(runs_before)} jobs probed again after the bad SIGHUP"))
        cfg.write_text(good_cfg)
    elif f.name == "sim-restart":
        sim.stop()
        sim.args = sim_args
        sim.start()


# -- line protocol and influxd -------------------------------------------------------------------
def split_unescaped(s: str, sep: str) -> list[str]:
    out, cur, i, quoted = [], [], 0, False
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def parse_line(line: str) -> tuple[str, tuple, int, dict]:
    """(measurement, sorted tag items, timestamp ns, fields) of one line-protocol line."""
    parts = split_unescaped(line, " ")
    key, ts = parts[0], int(parts[-1])
    fields_s = " ".join(parts[1:-1])
    head = split_unescaped(key, ",")
    tags = tuple(sorted((unescape(k), unescape(v)) for k, v in
                        (split_unescaped(t, "=") for t in head[1:])))
    fields = {}
    for item in split_unescaped(fields_s, ","):
        k, v = item.split("=", 1) if "=" in item and not item.startswith('"') else (item, "")
        k = unescape(k)
        if v.startswith('"'):
            fields[k] = re.sub(r'\\(["\\])', r"\1", v[1:-1])
        elif v.endswith("i"):
            fields[k] = int(v[:-1])
        elif v in ("t", "T", "true", "True", "TRUE"):
            fields[k] = True
        elif v in ("f", "F", "false", "False", "FALSE"):
            fields[k] = False
        else:
            fields[k] = float(v)
    return unescape(head[0]), tags, ts, fields


def stored(influx: InfluxServer, measurement: str) -> dict[tuple, dict]:
    """Every point of a measurement in influxd: (measurement, tags, ts) -> fields."""
    doc = influx.query(f'SELECT * FROM "{measurement}" GROUP BY *', DB)
    out: dict[tuple, dict] = {}
    for res in doc.get("results", []):
        if "error" in res:
            raise RuntimeError(res["error"])
        for s in res.get("series", []):
            if s.get("partial"):
                raise RuntimeError(f"{measurement}: influxd returned a partial answer")
            tags = tuple(sorted((k, v) for k, v in (s.get("tags") or {}).items() if v != ""))
            cols = s["columns"]
            for row in s["values"]:
                vals = dict(zip(cols, row, strict=True))
                ts = vals.pop("time")
                out[(measurement, tags, ts)] = {k: v for k, v in vals.items() if v is not None}
    return out


def same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return a == b


def account_points(run: Run, influx: InfluxServer) -> dict:
    acked: dict[tuple, dict] = {}
    per_file: dict[str, int] = {}
    lines = collisions = 0
    for path in sorted((run.work / "journal").glob("*.lp")):
        n = 0
        for line in path.read_text().splitlines():
            if not line:
                continue
            m, tags, ts, fields = parse_line(line)
            key = (m, tags, ts)
            if key in acked and acked[key] != fields:
                collisions += 1  # two acknowledged points, one series+time: one overwrites
            acked[key] = fields
            n += 1
        per_file[path.name] = n
        lines += n
    measurements = sorted({k[0] for k in acked})
    have: dict[tuple, dict] = {}
    for m in measurements:
        have.update(stored(influx, m))
    missing = [k for k in acked if k not in have]
    differ = [k for k in acked if k in have and not all(
        k2 in have[k] and same(v, have[k][k2]) for k2, v in acked[k].items())]
    extra = [k for k in have if k not in acked]
    return {"journal_lines": lines, "acked": len(acked), "stored": len(have),
            "missing": missing, "differ": differ, "extra": extra, "collisions": collisions,
            "dup_lines": lines - len(acked), "per_file": per_file,
            "by_measurement": {m: sum(1 for k in acked if k[0] == m) for m in measurements},
            "have": have}


def account_probes(pts: dict, first_start_wall: float) -> dict:
    """Per probe job: every fire time on its grid is a run with a stored probe (or an abort,
    kill, skip or shutdown record), or a missed / down / shutdown record."""
    have = pts["have"]
    out: dict = {}
    for target in TARGETS:
        def times(measurement: str, event: str | None = None, target=target) -> list[float]:
            return sorted(k[2] / 1e9 for k in have if k[0] == measurement
                          and ("target", target) in k[1] and ("agent", AGENT) in k[1]
                          and (event is None or ("event", event) in k[1])
                          and (measurement != "session" or ("kind", "probe") in k[1]))
        runs = times("schedule", "run")
        sessions = times("session")
        ev = {e: times("schedule", e) for e in ("skip", "missed", "aborted", "shutdown",
                                                   "killed", "down")}

        def take(pool: list[float], lo: float, hi: float) -> bool:
            for i, t in enumerate(pool):
                if lo <= t < hi:
                    del pool[i]
                    return True
            return False
        pool_s = list(sessions)
        pools = {e: list(v) for e, v in ev.items()}
        explained = {"probe": 0, **{e: 0 for e in ("aborted", "killed", "skip", "shutdown")}}
        unexplained_runs = []
        for r in runs:
            if take(pool_s, r - 0.2, r + EVERY_S - 0.2):
                explained["probe"] += 1
                continue
            for e in ("aborted", "killed", "skip", "shutdown"):
                if take(pools[e], r - 0.2, r + EVERY_S - 0.2):
                    explained[e] += 1
                    break
            else:
                unexplained_runs.append(r)
        # fire times without a run: skip (max instances), missed, down, shutdown left unmatched
        fires = sorted([*runs, *pools["skip"], *pools["shutdown"], *ev["missed"], *ev["down"]])
        holes = []
        for a, b in zip(fires, fires[1:], strict=False):
            n = round((b - a) / EVERY_S) - 1
            if n > 0 or abs((b - a) - EVERY_S * (n + 1)) > TOL_S:
                holes.append((a, b, max(n, 0)))
        lead = fires[0] - first_start_wall if fires else 0.0
        outcomes: dict[str, int] = {}
        for k in have:
            if k[0] == "session" and ("target", target) in k[1] and ("kind", "probe") in k[1]:
                o = dict(k[1]).get("outcome", "?")
                outcomes[o] = outcomes.get(o, 0) + 1
        scheduled = len(fires) + sum(h[2] for h in holes)
        out[target] = {
            "scheduled": scheduled, "runs": len(runs), "stored": explained["probe"],
            "aborted": explained["aborted"], "killed": explained["killed"],
            "skipped": explained["skip"] + len(pools["skip"]),
            "shutdown": explained["shutdown"] + len(pools["shutdown"]),
            "missed": len(ev["missed"]), "down": len(ev["down"]),
            "unexplained": len(unexplained_runs) + sum(h[2] for h in holes)
            + sum(1 for h in holes if h[2] == 0) + (1 if lead > EVERY_S + TOL_S else 0),
            "orphan_sessions": len(pool_s), "holes": holes, "unexplained_runs": unexplained_runs,
            "lead_s": lead, "outcomes": outcomes}
    return out


def account_alerts(pts: dict, faults: list[Fault], t0_wall: float, rules: dict,
                   end_wall: float) -> dict:
    have = pts["have"]
    rows = sorted((k[2] / 1e9, dict(k[1])) for k in have if k[0] == "alert")
    grace = {"openai-ttfa-regression": rules["recent_s"] + rules["keep_firing_s"],
             "openai-errors": rules["over_s"] + rules["keep_firing_s"]}
    out = {}
    for rule in ("openai-ttfa-regression", "openai-errors"):
        wins = [(t0_wall + f.at, t0_wall + f.end + grace[rule] + 3 * rules["evaluate_s"])
                for f in faults if f.pages == rule]
        states = [(t, r["state"]) for t, r in rows if r.get("rule") == rule]
        fired = [t for t, s in states if s == "firing"]
        in_win = [t for t in fired if any(a <= t <= b for a, b in wins)]
        resolved_after = [t for t, s in states if s == "resolved" and in_win and t > in_win[0]]
        last = states[-1][1] if states else "none"
        out[rule] = {"expected": len(wins), "fired": len(in_win),
                     "spurious": len(fired) - len(in_win), "resolved": bool(resolved_after),
                     "stuck": last == "firing",
                     "fire_delay_s": round(in_win[0] - wins[0][0], 1) if in_win else None,
                     "resolve_after_end_s": round(resolved_after[0] - (wins[0][1] - grace[rule]
                                                  - 3 * rules["evaluate_s"]), 1)
                     if resolved_after else None}
    return out


def trend(samples: list[dict]) -> dict:
    """RSS, fd and thread trend of one process's samples ({t, rss_mb, fds, threads}), after a
    warm-up of a third of their span (at least 30 s)."""
    if len(samples) < 3:
        return {"samples": len(samples)}
    span = samples[-1]["t"] - samples[0]["t"]
    warm = [s for s in samples if s["t"] >= samples[0]["t"] + max(30.0, span / 3)]
    if len(warm) < 3:
        warm = samples[len(samples) // 3:]
    xs = [s["t"] / 60 for s in warm]
    rss, fds, thr = [s["rss_mb"] for s in warm], [s["fds"] for s in warm], \
        [s["threads"] for s in warm]
    mean = sum(rss) / len(rss)
    return {"samples": len(warm), "minutes": round((xs[-1] - xs[0]), 1),
            "rss_mb": round(mean, 1), "rss_pct_per_10min": round(100 * slope(xs, rss) * 10 / mean, 2),
            "fds": (min(fds), max(fds)), "fd_slope_per_10min": round(slope(xs, fds) * 10, 2),
            "threads": (min(thr), max(thr))}


def account_resources(run: Run) -> dict:
    """serve's trend over the samples of its last process; the load run's master and each
    worker's over theirs (the issue's "serve and each Locust worker")."""
    last = [s for s in run.samples if s.get("serve") == max(x.get("serve", 0)
                                                            for x in run.samples) and "rss_mb" in s]
    out = trend(last)
    procs: dict[str, list[dict]] = {}
    for s in run.samples:
        for name, u in s.get("load", {}).items():
            procs.setdefault(name, []).append({"t": s["t"], **u})
    out["load"] = {name: trend(rows) for name, rows in sorted(procs.items())}
    return out


def resource_line(res: dict, short: bool) -> tuple[str, bool]:
    """One process's trend as a line, and whether it meets the goal (slopes only judged on a
    run of 30 minutes or more)."""
    if "rss_mb" not in res:
        return f"too few samples ({res['samples']})", False
    line = (f"{res['samples']} samples over {res['minutes']} min: RSS {res['rss_mb']} MB, "
            f"slope {res['rss_pct_per_10min']:+.2f} % / 10 min (goal < 1 %"
            f"{'; informational on a run this short' if short else ''}); fds "
            f"{res['fds'][0]}..{res['fds'][1]} (slope {res['fd_slope_per_10min']:+.2f} / 10 "
            f"min); threads {res['threads'][0]}..{res['threads'][1]}")
    good = short or (res["rss_pct_per_10min"] < 1.0 and res["fd_slope_per_10min"] <= 1.0)
    return line, good


def account_load(run: Run, pts: dict, rc: int | None) -> dict:
    path = run.work / "load-summary.json"
    if not path.exists():
        return {"exit": rc, "summary": False}
    doc = json.loads(path.read_text())
    c = doc.get("counters", {})
    have = pts["have"]
    sessions = [dict(k[1]) for k in have if k[0] == "session" and ("kind", "load") in k[1]]
    outcomes: dict[str, int] = {}
    for tags in sessions:
        outcomes[tags.get("outcome", "?")] = outcomes.get(tags.get("outcome", "?"), 0) + 1
    per_worker: dict[str, int] = {}
    for k, v in have.items():
        if k[0] == "loadgen":
            w = dict(k[1]).get("worker", "?")
            per_worker[w] = per_worker.get(w, 0) + int(v.get("sessions") or 0)
    return {"exit": rc, "summary": True, "sessions": c.get("sessions", 0),
            "per_worker": per_worker, "overload_message": doc.get("overload_message", ""),
            "sessions_ok": c.get("sessions_ok", 0), "stored_sessions": len(sessions),
            "errors": c.get("errors") or {}, "stored_outcomes": outcomes,
            "late_starts": c.get("late_starts", 0), "dropped": c.get("dropped", 0),
            "arrivals_due": c.get("arrivals_due", 0),
            "arrivals_started": c.get("arrivals_started", 0),
            "workers": doc.get("workers"), "complete": doc.get("complete"),
            "overloaded": doc.get("overloaded"),
            "health": [(h["worker"], h["cpu_pct_max"], h["send_lag_p99_ms"], h["loop_lag_p99_ms"])
                       for h in doc.get("health", [])]}


def outbox_pending(work: Path) -> int:
    n = 0
    for p in work.glob("outbox-*/*.sqlite"):
        with sqlite3.connect(str(p)) as db:
            n += db.execute("SELECT COALESCE(SUM(n), 0) FROM chunks").fetchone()[0]
    return n


# -- main ----------------------------------------------------------------------------------------
def parse_duration(s: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)?", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 300s or 60m, got {s!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 60}[m.group(2)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=parse_duration, default=3600.0,
                    help="run length (default 60m; a bare number is minutes)")
    ap.add_argument("--quick", action="store_true", help="the 5-minute profile")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--load-rate", type=float, default=0.5, help="load sessions/s (open model)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    duration = 300.0 if args.quick else args.duration
    faults, rules = fault_schedule(duration, args.seed)
    work = Path(tempfile.mkdtemp(prefix="vp-chaos-"))
    scaled = "" if duration >= 3600 - 1 else (
        f" (fault durations scaled by {duration / 3600:.3f} with floors: influxd outages, "
        "fault windows and alert windows are shorter than the 60-minute profile's)")
    print(f"chaos soak: {duration:.0f} s, seed {args.seed}, probes every {EVERY_S:g} s on "
          f"{', '.join(TARGETS)}, load {args.load_rate:g}/s on {LOAD_TARGET} (2 processes), "
          f"work dir {work}{scaled}")
    print(f"alert rules: regression recent {rules['recent_s']:g}s baseline "
          f"{rules['baseline_s']:g}s p < {rules['p_value']:g} n >= {rules['min_samples']}; "
          f"error_rate > 50% over {rules['over_s']:g}s; keep firing {rules['keep_firing_s']:g}s; "
          f"evaluated every {rules['evaluate_s']:g}s")
    print("fault schedule:")
    for f in faults:
        win = f"{f.at:7.1f} .. {f.end:7.1f} s" if f.end is not None else f"{f.at:7.1f} s      "
        print(f"  {win:>22}  {f.name:<15} {f.detail}" + (f"  [must page {f.pages}]"
                                                         if f.pages else ""))
    sys.stdout.flush()

    (work / "influxd").mkdir()
    influx = InfluxServer(str(work / "influxd"))
    influx.start()
    influx.create_database(DB)
    sim = SimProcess(args=["--seed", str(args.seed)])
    sim.start()
    sim_args = ["--port", str(sim.port), "--control-port",
                sim.control_url.rsplit(":", 1)[1], "--seed", str(args.seed + 1)]
    cfg = work / "serve.yaml"
    good_cfg = serve_yaml(work, sim, influx, rules)
    cfg.write_text(good_cfg)
    (work / "load.yaml").write_text(load_yaml(work, sim, influx))
    serve = Serve(work, cfg)
    run = Run(work, duration)
    load = None
    done = threading.Event()
    end_wall = 0.0
    try:
        serve.start()
        first_start_wall = time.time()
        run.t0 = time.monotonic()
        t0_wall = time.time()
        log(f"serve up at {serve.url} (pid {serve.proc.pid}); simulator {sim.ws_url}; influxd "
            f"{influx.url}")
        with open(work / "load.out", "wb") as out, open(work / "load.err", "wb") as err:
            load = subprocess.Popen(
                [sys.executable, "-m", "voicepulse.cli", "load", LOAD_TARGET, "--config",
                 str(work / "load.yaml"), "--rate", f"{args.load_rate:g}", "--processes", "2",
                 "--duration", f"{duration - 15:.0f}s", "--summary-json",
                 str(work / "load-summary.json")], cwd=str(work), env=env(work), stdout=out,
                stderr=err)
        threading.Thread(target=scraper, args=(run, serve, done, load), daemon=True).start()
        for f in faults:
            left = f.at - run.now()
            if left > 0:
                time.sleep(left)
            log(f"fault {f.name}: {f.detail}")
            apply(f, run, sim, influx, serve, cfg, good_cfg, sim_args)
        time.sleep(max(0.0, duration - run.now()))
        log("run over: waiting for the load run, stopping serve")
        try:
            load_rc = load.wait(timeout=120)
        except subprocess.TimeoutExpired:
            load_rc = stop(load)
            run.notes.append("the load run did not end by itself within 120 s")
        end_wall = time.time()
        done.set()
        serve_rc = stop(serve.proc, timeout=30)
        if serve_rc != 0:
            run.notes.append(f"serve exited {serve_rc} on SIGTERM")
        deadline = time.monotonic() + 60
        while outbox_pending(work) and time.monotonic() < deadline:
            time.sleep(1)  # nothing runs now: whatever is pending stays on disk
        pending = outbox_pending(work)
        pts = account_points(run, influx)
        probes = account_probes(pts, first_start_wall)
        alerts = account_alerts(pts, faults, t0_wall, rules, end_wall)
        res = account_resources(run)
        ld = account_load(run, pts, load_rc)
    finally:
        done.set()
        if load is not None and load.poll() is None:
            stop(load)
        if serve.proc is not None and serve.proc.poll() is None:
            stop(serve.proc)
        sim.stop()
        influx.stop()
    ok = report(run, probes, pts, alerts, res, ld, pending, duration)
    if not args.keep and ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work dir kept: {work}")
    return 0 if ok else 1


def report(run: Run, probes: dict, pts: dict, alerts: dict, res: dict, ld: dict, pending: int,
           duration: float) -> bool:
    ok = True
    print("\n== probes (every scheduled fire time) ==")
    cols = ("scheduled", "runs", "stored", "aborted", "killed", "skipped", "shutdown", "missed",
            "down", "unexplained", "orphan_sessions")
    print(f"{'target':<10}" + "".join(f"{c:>{len(c) + 2}}" for c in cols))
    tot = dict.fromkeys(cols, 0)
    for t, row in probes.items():
        print(f"{t:<10}" + "".join(f"{row[c]:>{len(c) + 2}}" for c in cols))
        for c in cols:
            tot[c] += row[c]
        for a, b, n in row["holes"]:
            print(f"    hole: {n} fire time(s) between {a:.1f} and {b:.1f} ({b - a:.1f} s)")
        for r in row["unexplained_runs"]:
            print(f"    run at {r:.1f} has no stored probe and no record")
    print(f"{'total':<10}" + "".join(f"{tot[c]:>{len(c) + 2}}" for c in cols))
    for t, row in probes.items():
        print(f"  {t} stored outcomes: " + ", ".join(
            f"{k} {v}" for k, v in sorted(row["outcomes"].items(), key=lambda kv: -kv[1])))
    if tot["unexplained"] or tot["orphan_sessions"]:
        ok = False

    print("\n== points (acknowledged to an outbox vs in influxd) ==")
    print(f"acknowledged {pts['acked']} (journal lines {pts['journal_lines']}, repeated lines "
          f"{pts['dup_lines']}), stored {pts['stored']}, missing {len(pts['missing'])}, "
          f"content differs {len(pts['differ'])}, in influxd but never acknowledged "
          f"{len(pts['extra'])}, series+time collisions {pts['collisions']}, still pending in "
          f"outboxes {pending}")
    print("  by measurement: " + ", ".join(f"{m} {n}" for m, n in pts["by_measurement"].items()))
    print("  journals: " + ", ".join(f"{k} {v}" for k, v in pts["per_file"].items()))
    for k in (pts["missing"] + pts["differ"])[:5]:
        print(f"    e.g. {k}")
    if pts["missing"] or pts["differ"] or pts["collisions"] or pts["extra"] or pending:
        ok = False

    print("\n== alerts ==")
    print(f"{'rule':<26}{'expected':>9}{'fired':>7}{'spurious':>9}{'resolved':>9}{'stuck':>7}"
          f"{'fired after':>13}{'resolved after end':>20}")
    for rule, a in alerts.items():
        print(f"{rule:<26}{a['expected']:>9}{a['fired']:>7}{a['spurious']:>9}"
              f"{'yes' if a['resolved'] else 'NO':>9}{'YES' if a['stuck'] else 'no':>7}"
              f"{str(a['fire_delay_s']) + ' s':>13}{str(a['resolve_after_end_s']) + ' s':>20}")
        # fired more often than expected: a page that flapped within its fault window
        if a["fired"] != a["expected"] or a["spurious"] or not a["resolved"] or a["stuck"]:
            ok = False

    print("\n== checks at fault time ==")
    for name, passed, detail in run.checks:
        print(f"  {'ok  ' if passed else 'FAIL'} {name}: {detail}")
        ok = ok and passed
    sc = run.scrapes
    print(f"  scrapes every {SCRAPE_S:g} s: /status ok {sc['status_ok']} failed "
          f"{sc['status_failed']}; /metrics ok {sc['metrics_ok']} failed {sc['metrics_failed']};"
          f" status page ok {sc['page_ok']} failed {sc['page_failed']}; serve not running "
          f"{sc['serve_down']}")
    for t, up in run.page_failures:
        print(f"    status page failed at {t} s (influxd {'up' if up else 'DOWN'})")
    if sc["status_failed"] or sc["metrics_failed"]:
        ok = False
    if any(up for _, up in run.page_failures):
        ok = False  # with the store down the page failing is a known gap (docs/chaos-soak.md)

    print("\n== resources (after warm-up): serve's last process, the load run's processes ==")
    short = duration < 1800
    line, good = resource_line(res, short)
    print(f"  serve: {line}")
    ok = ok and good
    if not res["load"]:
        print("  load: no samples")
        ok = False
    for name, r in res["load"].items():
        line, good = resource_line(r, short)
        print(f"  load {name}: {line}")
        ok = ok and good

    print("\n== the load run ==")
    if ld.get("summary"):
        print(f"  exit {ld['exit']}, {ld['workers']} workers, complete {ld['complete']}, "
              f"overloaded {ld['overloaded']}; sessions {ld['sessions']} (ok "
              f"{ld['sessions_ok']}), stored {ld['stored_sessions']}; arrivals due "
              f"{ld['arrivals_due']} started {ld['arrivals_started']} late "
              f"{ld['late_starts']} dropped {ld['dropped']}")
        workers = {w: n for w, n in ld["per_worker"].items() if w != "all"}
        print(f"  sessions by worker (stored loadgen points): {workers}, sum "
              f"{sum(workers.values())}; merged ('all') {ld['per_worker'].get('all')}")
        print(f"  error classes (summary): {ld['errors']}")
        print(f"  stored outcomes:         {ld['stored_outcomes']}")
        for w, cpu, send, loop in ld["health"]:
            print(f"  worker {w}: cpu max {cpu} %, send lag p99 {send} ms, loop lag p99 {loop} ms")
        if ld["overloaded"]:
            print(f"  generator health (informational on a shared box): "
                  f"{ld['overload_message'][:200]}")
        stored_bad = sum(v for k, v in ld["stored_outcomes"].items() if k != "ok")
        if sum(workers.values()) != ld["sessions"] or ld["per_worker"].get("all") != \
                ld["sessions"]:
            ok = False
        if (ld["sessions"] != ld["stored_sessions"] or not ld["complete"]
                or sum(ld["errors"].values()) != stored_bad or ld["dropped"]):
            ok = False
    else:
        print(f"  no summary (exit {ld['exit']})")
        ok = False
    for n in run.notes:
        print(f"  note: {n}")
        ok = False
    print(f"\nverdict: {'PASS' if ok else 'FAIL'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
