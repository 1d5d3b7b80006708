"""Soak check: the probe service (or a Locust worker) against the simulator with random faults,
for a long time, watching its own resources.

    python benchmarks/soak.py                         # probe service, 10 minutes
    python benchmarks/soak.py --minutes 60            # the release check
    python benchmarks/soak.py --mode load --users 200 --minutes 10   # a Locust worker

Every `--sample` seconds (default 60) it prints the process's RSS, open file descriptors,
threads and the outbox/store size; at the end the RSS and fd slopes after warm-up (`--warmup`,
default 30 % of the run), the goal being flat memory (< 1 % per 10 minutes) and no fd growth.

The simulator injects a random `--fault-rate` (default 5 %) of sessions with a fault, spread
evenly over every fault kind it has (refuse, slow handshake, HTTP status, session expiry,
error event, failed response, drop, close 1011, stall, malformed JSON, oversized frame).

Accounting (service mode): every scheduled probe ends up either stored or counted:
stored session rows == runs (from /status), and runs + skips + missed + aborted == fires.
Exit status 0 when the goals hold, 1 otherwise (a benchmark, not a test: it prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
FAULT_KINDS = ("refuse", "slow_handshake", "http_status", "session_expiry", "error_event",
               "response_failed", "drop", "close_1011", "stall", "malformed_json", "oversized")


def env() -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", SOAK_API_KEY="soak-key")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def read_line(proc: subprocess.Popen, stream, prefix: str, timeout: float) -> str:
    """The first line holding `prefix` on `stream` (bounded)."""
    return read_lines(stream, (prefix,), timeout)[prefix]


def read_lines(stream, prefixes: tuple[str, ...], timeout: float) -> dict[str, str]:
    """The first line holding each of `prefixes` on `stream` (bounded)."""
    found: dict[str, str] = {}
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(deadline - time.monotonic(), 0.01)):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                for prefix in prefixes:
                    if prefix in line and prefix not in found:
                        found[prefix] = line
            if len(found) == len(prefixes):
                return found
    finally:
        sel.close()
    raise RuntimeError(f"no {prefixes!r} within {timeout} s: {buf[-2000:]!r}")


def start_sim(fault_rate: float) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--control-port",
                             "0", "--seed", "7"], cwd=str(ROOT), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = read_lines(proc.stdout, ("listening ", "control "), 20)
    ws = lines["listening "].split(" ", 1)[1].strip()
    ctl = lines["control "].split(" ", 1)[1].strip()
    for kind in FAULT_KINDS:
        body = {"action": "start", "kind": kind, "probability": fault_rate / len(FAULT_KINDS),
                "per": "session"}
        req = urllib.request.Request(ctl + "/faults", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
    return proc, ws, ctl


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 60) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def tree_sample(pid: int) -> dict:
    """RSS (MB), fds and threads of a process and its children, and of the largest child."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    rows = []
    for p in procs:
        try:
            with p.oneshot():
                cmd = p.cmdline()
                role = next((a for a in cmd if a in ("--worker", "--master", "serve", "load")),
                            " ".join(cmd[1:3]))
                if "locust" in cmd and role not in ("--worker", "--master"):
                    # `locust --processes N` forks its workers: same argv as the master
                    parent = p.parent()
                    role = ("locust worker (forked)" if parent is not None
                            and "locust" in parent.cmdline() else "locust master")
                rows.append((p.pid, p.memory_info().rss / 2**20, p.num_fds(), p.num_threads(),
                             f"pid {p.pid} {role}"))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return {"procs": rows}


def dir_mb(path: Path) -> float:
    """Size of a directory tree, or of a SQLite file with its -wal/-shm companions (MB)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (per unit of x)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


SERVICE_CONFIG = """
agent: soak
targets:
{targets}
scenarios:
  default: {{turns: 1, utterance_s: 1.0, trailing_silence_s: 0.6,
             timeouts: {{connect: 5s, ready: 5s, first_audio: 10s, response_done: 20s,
                         session: 40s}}}}
store: {store}
outbox: {outbox}
status: {{port: 0}}
service: {{evaluate_every: 10s, shutdown_timeout: 10s}}
probes:
{probes}
slos:
  - {{name: soak-availability, target: t0, kind: availability, objective: 99}}
alerts:
  - {{name: soak-ttfa, kind: threshold, target: t0, expr: ttfa_ms.p95 > 5000, over: 5m}}
notifiers:
  - {{type: log}}
"""


def service_soak(args, work: Path, sim_ws: str) -> tuple[list[dict], dict]:
    targets = "\n".join(f"  t{i}: {{url: \"{sim_ws}/v1/realtime\", model: sim-fast,"
                        f" api_key_env: SOAK_API_KEY}}" for i in range(args.targets))
    probes = "\n".join(f"  - {{target: t{i}, every: {args.every}s}}" for i in range(args.targets))
    cfg = work / "soak.yaml"
    store = work / "soak.db"
    outbox = work / "outbox"
    cfg.write_text(SERVICE_CONFIG.format(targets=targets, probes=probes, store=store,
                                         outbox=outbox))
    log = open(work / "serve.log", "wb")  # noqa: SIM115 (closed after the run)
    proc = subprocess.Popen([sys.executable, "-m", "voicepulse.cli", "serve", "--config",
                             str(cfg)], cwd=str(work), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    line = read_line(proc, proc.stderr, "serving:", 60)
    status_url = line.strip().rsplit(" ", 1)[-1]
    # keep draining stderr into the log so the pipe never fills
    import threading

    def pump() -> None:
        for chunk in iter(lambda: proc.stderr.read(4096), b""):
            log.write(chunk)

    threading.Thread(target=pump, daemon=True).start()
    samples = run_samples(args, proc.pid, lambda: {"store_mb": dir_mb(store),
                                                   "outbox_mb": dir_mb(outbox)}, status_url)
    last_status = fetch_json(status_url)
    rc = stop(proc)
    log.close()
    rows = sqlite3.connect(str(store)).execute(
        "SELECT COUNT(*) FROM session").fetchone()[0] if store.exists() else 0
    t = (last_status or {}).get("targets", {}).values()
    acct = {"stored_sessions": rows, "exit": rc,
            "runs": sum(x["runs"] for x in t), "skips": sum(x["skips"] for x in t),
            "missed": sum(x["missed"] for x in t), "aborted": sum(x["aborted"] for x in t),
            "outcomes": {}}
    for x in t:
        for k, v in x["outcomes"].items():
            acct["outcomes"][k] = acct["outcomes"].get(k, 0) + v
    acct["write_errors"] = (last_status or {}).get("write_errors")
    # what the service did to keep its memory flat (scheduler/memory.py)
    acct["memory"] = (last_status or {}).get("memory")
    acct["running_at_last_status"] = sum(x["running"] for x in t)
    acct["fires_expected"] = round(args.targets * args.minutes * 60 / args.every)
    return samples, acct


def fetch_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except OSError:
        return None


def run_samples(args, pid: int, extra, status_url: str | None = None) -> list[dict]:
    samples: list[dict] = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    n = 0
    print(f"{'min':>5} {'rss_mb':>8} {'floor':>6} {'fds':>5} {'threads':>7} {'store_mb':>8} {'outbox_mb':>9}"
          f" {'runs':>6} {'procs':>5}  largest child", flush=True)
    while True:
        n += 1
        due = t0 + n * args.sample
        # the lowest RSS between samples (polled each second): a spot sample also holds the
        # audio of the probes then in flight (+-15 MB at 4 targets), the floor is what stays
        floor = float("inf")
        while time.monotonic() < min(due, end):
            time.sleep(min(1.0, max(min(due, end) - time.monotonic(), 0.01)))
            s = tree_sample(pid)
            if s:
                floor = min(floor, largest(s["procs"])[1])
        s = tree_sample(pid)
        if not s:
            print("the process is gone", flush=True)
            break
        procs = s["procs"]
        big = largest(procs)
        row = {"t_min": (time.monotonic() - t0) / 60, "rss_mb": big[1], "fds": big[2],
               "floor_mb": min(floor, big[1]),
               "threads": big[3], "total_rss_mb": sum(r[1] for r in procs),
               "procs": len(procs), **extra()}
        if status_url:
            st = fetch_json(status_url) or {}
            row["runs"] = sum(x["runs"] for x in st.get("targets", {}).values())
        samples.append(row)
        print(f"{row['t_min']:5.1f} {row['rss_mb']:8.1f} {row['floor_mb']:6.1f} {row['fds']:5d} {row['threads']:7d}"
              f" {row.get('store_mb', 0):8.2f} {row.get('outbox_mb', 0):9.2f}"
              f" {row.get('runs', '-'):>6} {row['procs']:5d}  {big[4][:40]}", flush=True)
        if time.monotonic() >= end:
            break
    return samples


def largest(procs: list[tuple]) -> tuple:
    """In load mode the Locust worker is the biggest child; in service mode the process itself."""
    return max(procs[1:], key=lambda r: r[1]) if len(procs) > 1 else procs[0]


def load_soak(args, work: Path, sim_ws: str) -> tuple[list[dict], dict]:
    cfg = work / "load.yaml"
    store = work / "load.db"
    cfg.write_text(f"""
targets:
  sim-fast: {{url: "{sim_ws}/v1/realtime", model: sim-fast, api_key_env: SOAK_API_KEY}}
scenarios:
  default: {{turns: 1, utterance_s: 1.0, trailing_silence_s: 0.6}}
store: {store}
outbox: {work / "outbox"}
""")
    summary = work / "summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "voicepulse.cli", "load", "sim-fast",
                             "--config", str(cfg), "--users", str(args.users), "--processes",
                             "1", "--duration", f"{args.minutes * 60:.0f}s", "--summary-json",
                             str(summary)], cwd=str(work), env=env(),
                            stdout=open(work / "load.out", "wb"),
                            stderr=open(work / "load.err", "wb"))
    samples = run_samples(args, proc.pid, lambda: {"store_mb": dir_mb(store)
                                                   if store.exists() else 0.0})
    try:
        rc = proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        rc = stop(proc)
    acct: dict = {"exit": rc}
    if summary.exists():
        doc = json.loads(summary.read_text())
        acct["summary_keys"] = sorted(doc)[:20]
        for k in ("sessions", "errors", "outcomes", "arrivals", "error_rate"):
            if k in doc:
                acct[k] = doc[k]
    if store.exists():
        acct["stored_sessions"] = sqlite3.connect(str(store)).execute(
            "SELECT COUNT(*) FROM session").fetchone()[0]
    return samples, acct


def verdict(samples: list[dict], warmup_min: float) -> tuple[bool, str]:
    warm = [s for s in samples if s["t_min"] >= warmup_min - 1e-6]
    if len(warm) < 2:
        warm = samples[1:] if len(samples) > 2 else samples
    xs = [s["t_min"] for s in warm]
    rss = [s["rss_mb"] for s in warm]
    fds = [s["fds"] for s in warm]
    rss_slope = slope(xs, rss) * 10  # MB per 10 min
    mean = sum(rss) / len(rss) if rss else 1.0
    pct = 100 * rss_slope / mean if mean else 0.0
    fd_slope = slope(xs, fds) * 10
    floor_slope = slope(xs, [s["floor_mb"] for s in warm]) * 10
    ok = pct < 1.0 and (max(fds) - min(fds) <= 2 if fds else True)
    text = (f"RSS slope after warm-up: {rss_slope:+.2f} MB / 10 min ({pct:+.2f} % of "
            f"{mean:.1f} MB; goal < 1 %)\n"
            f"RSS floor slope (lowest RSS between samples): {floor_slope:+.2f} MB / 10 min\n"
            f"fd slope: {fd_slope:+.2f} / 10 min (range {min(fds) if fds else 0}.."
            f"{max(fds) if fds else 0}; goal: no growth)")
    return ok, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("service", "load"), default="service")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--targets", type=int, default=4, help="service mode: probed targets")
    ap.add_argument("--every", type=float, default=5.0, help="service mode: probe interval (s)")
    ap.add_argument("--users", type=int, default=200, help="load mode: concurrent sessions")
    ap.add_argument("--fault-rate", type=float, default=0.05)
    ap.add_argument("--warmup", type=float, default=None,
                    help="minutes left out of the slopes (default 30 %% of the run, at least 1;"
                         " a Locust worker's deferred full GCs settle in about 3 minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vp-soak-"))
    sim, ws, _ = start_sim(args.fault_rate)
    print(f"soak: mode {args.mode}, {args.minutes:g} min, faults {args.fault_rate:.0%} over "
          f"{len(FAULT_KINDS)} kinds, work dir {work}", flush=True)
    try:
        if args.mode == "service":
            samples, acct = service_soak(args, work, ws)
        else:
            samples, acct = load_soak(args, work, ws)
    finally:
        stop(sim, timeout=10)
    warmup = args.warmup if args.warmup is not None else max(1.0, round(args.minutes * 0.3))
    ok, text = verdict(samples, warmup)
    print(f"(slopes over the samples from minute {warmup:g} on)")
    print(text)
    print("accounting:", json.dumps(acct, sort_keys=True))
    if args.mode == "service":
        # the last /status is read just before SIGTERM: probes then in flight finish and are
        # stored during the graceful stop (or are aborted and stored as schedule events)
        runs = acct["runs"] - (acct["write_errors"] or 0)
        stored = acct["stored_sessions"]
        accounted = runs <= stored <= runs + acct["running_at_last_status"]
        fires = acct["runs"] + acct["skips"] + acct["missed"] + acct["aborted"]
        print(f"every probe accounted for: stored {stored} vs runs {acct['runs']} + in flight "
              f"{acct['running_at_last_status']} at the last /status (skips {acct['skips']}, "
              f"missed {acct['missed']}, aborted {acct['aborted']}; fires {fires}, expected "
              f"about {acct['fires_expected']}): {'yes' if accounted else 'NO'}")
        ok = ok and accounted
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
