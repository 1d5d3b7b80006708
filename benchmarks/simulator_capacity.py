"""How many standard realtime sessions can one simulator process carry on one core?

Standard session (docs/design.md): the mic is always on, 100 ms input chunks (pcm16 24 kHz) sent on an
absolute real-time schedule; each turn is 1.5 s of speech then silence; server VAD ends the turn;
the reply (TTFA lognormal ~250 ms, 3 s of audio) comes in 100 ms deltas at 2x real time; 0.3 s after
response.done the next turn starts. The simulator runs pinned to one core (taskset), the client in a
separate asyncio process pinned to another, so the client costs the simulator nothing.

Printed per level: sessions, simulator CPU % over the steady window, frames/s both ways, lateness of
scheduled deltas (the simulator's own measure: actual write - scheduled slot, p50/p99/max), the
client's send lag p99 (if that is high the client, not the simulator, was the limit), and errors.

    python benchmarks/simulator_capacity.py --levels 250,500,1000 --steady 15
    python benchmarks/simulator_capacity.py --levels 1000 --profile /tmp/sim.prof   # where CPU goes
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHUNK_MS = 100
RATE = 24000


def _chunks() -> tuple[bytes, bytes]:
    n = RATE * CHUNK_MS // 1000
    t = np.arange(n) / RATE
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    speech = (x / np.max(np.abs(x)) * 0.2 * 32767).astype("<i2").tobytes()
    quiet = bytes(2 * n)

    def msg(pcm: bytes) -> bytes:
        return (b'{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(pcm) + b'"}')
    return msg(speech), msg(quiet)


# ---- client (separate process) ---------------------------------------------------------------
# A deliberately minimal WebSocket client (asyncio Protocol): frames are pre-built with an all-zero
# mask key (legal; masking is then the identity), so a send is one transport.write, and incoming
# frames are only delimited, not decoded. The client must stay far cheaper than the server.

def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class _Session(asyncio.Protocol):
    def __init__(self, stats: dict, host: str, path: str, speech: bytes, quiet: bytes,
                 speech_chunks: int, pause_s: float, stop_at: float):
        self.stats, self.host, self.path = stats, host, path
        self.speech, self.quiet = speech, quiet
        self.speech_chunks, self.pause_s, self.stop_at = speech_chunks, pause_s, stop_at
        self.buf = bytearray()
        self.open = False
        self.transport = None
        self.speaking = 0
        self.waiting = False
        self.next_turn = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer bench\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.stats["errors"] += 1
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
            loop = asyncio.get_running_loop()
            self.t0 = loop.time()
            self.k = 0
            loop.call_soon(self.tick)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < hdr + ln:
                break
            self.stats["frames_in"] += 1
            head = bytes(buf[pos + hdr:pos + hdr + 24])
            if head.startswith(b'{"type":"response.done"'):
                self.waiting = False
                self.next_turn = asyncio.get_running_loop().time() + self.pause_s
                self.stats["turns"] += 1
            elif head.startswith(b'{"type":"error"') or buf[pos] & 0x0F == 8:
                self.stats["errors"] += 1
            pos += hdr + ln
        if pos:
            del buf[:pos]

    def tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self.t0 + self.k * CHUNK_MS / 1000
        lags = self.stats["lag"]
        if len(lags) < 2_000_000:
            lags.append(now - due)
        if not self.waiting and self.speaking == 0 and now >= self.next_turn:
            self.speaking = self.speech_chunks
        if self.speaking > 0:
            self.transport.write(self.speech)
            self.speaking -= 1
            self.waiting = self.speaking == 0
        else:
            self.transport.write(self.quiet)
        self.stats["frames_out"] += 1
        self.k += 1
        nxt = self.t0 + self.k * CHUNK_MS / 1000
        if nxt >= self.stop_at:
            self.transport.close()
            return
        loop.call_at(nxt, self.tick)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _one(url: str, start_at: float, stop_at: float, stats: dict, speech: bytes,
               quiet: bytes, speech_chunks: int, pause_s: float) -> None:
    from urllib.parse import urlsplit

    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    u = urlsplit(url)
    try:
        _, proto = await loop.create_connection(
            lambda: _Session(stats, u.netloc, f"{u.path}?{u.query}", speech, quiet, speech_chunks,
                             pause_s, stop_at), u.hostname, u.port)
        await asyncio.wait_for(proto.done, timeout=stop_at - loop.time() + 30)
    except Exception as e:  # counted, not raised: one failed session must not stop the run
        stats["errors"] += 1
        stats.setdefault("first_error", repr(e)[:200])


async def _client(url: str, n: int, ramp_s: float, duration_s: float, speech_s: float,
                  pause_s: float) -> dict:
    speech, quiet = (_frame(m) for m in _chunks())
    loop = asyncio.get_running_loop()
    t = loop.time() + 0.2
    stop_at = t + ramp_s + duration_s
    stats = {"frames_out": 0, "frames_in": 0, "turns": 0, "errors": 0, "lag": []}
    tasks = [asyncio.create_task(_one(url, t + ramp_s * i / n, stop_at, stats, speech, quiet,
                                      round(speech_s * 1000 / CHUNK_MS), pause_s))
             for i in range(n)]
    await asyncio.gather(*tasks)
    lag = np.array(stats.pop("lag")) * 1000
    stats["lag_p50_ms"] = float(np.percentile(lag, 50)) if lag.size else None
    stats["lag_p99_ms"] = float(np.percentile(lag, 99)) if lag.size else None
    return stats


def client_main(args) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = asyncio.run(_client(args.url, args.sessions, args.ramp, args.duration, 1.5, 0.3))
    print(json.dumps(out), flush=True)


# ---- driver -----------------------------------------------------------------------------------

def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runq_wait_s(pid: int) -> float:
    """Time the process sat runnable but not running (other processes had its core)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def run_level(n: int, steady: float, sim_core: str, client_core: str, profile: str | None,
              nice: int = 0) -> dict:
    taskset = shutil.which("taskset")
    prio = ["nice", "-n", str(nice)] if nice else []

    def pin(core: str) -> list[str]:
        return prio + ([taskset, "-c", core] if taskset else [])
    # --profile: cProfile on CPU time (process_time), so time spent waiting for a contended core
    # is not charged to whatever function happened to be running
    wrap = ("import cProfile, sys, time; from simulator.cli import main; "
            "p = cProfile.Profile(time.process_time); p.enable()\n"
            "try: main(sys.argv[1:], standalone_mode=False)\n"
            f"finally: p.disable(); p.dump_stats({profile!r})")
    py = [sys.executable] + (["-c", wrap] if profile else ["-m", "simulator"])
    # stderr to a file, never an unread pipe: a full pipe would block the simulator's logging
    errlog = tempfile.TemporaryFile(mode="w+")
    sim = subprocess.Popen(pin(sim_core) + py + ["--port", "0", "--control-port", "0"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=errlog, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    ws_url = control = None
    while not (ws_url and control):
        line = sim.stdout.readline()
        if not line:
            errlog.seek(0)
            raise SystemExit("simulator did not start: " + errlog.read()[-2000:])
        if line.startswith("listening "):
            ws_url = line.split()[1]
        elif line.startswith("control "):
            control = line.split()[1]
    ramp = max(2.0, n / 250)
    warm = 3.0
    client = subprocess.Popen(pin(client_core) + [sys.executable, __file__, "--client",
                                                  "--url", f"{ws_url}/v1/realtime?model=sim-fast",
                                                  "--sessions", str(n), "--ramp", str(ramp),
                                                  "--duration", str(warm + steady + 1.0)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    time.sleep(0.2 + ramp + warm)
    _get(control + "/stats?reset=1")
    c0, q0, w0 = _cpu_s(sim.pid), _runq_wait_s(sim.pid), time.monotonic()
    active = _get(control + "/healthz")["active_sessions"]
    time.sleep(steady)
    c1, q1, w1 = _cpu_s(sim.pid), _runq_wait_s(sim.pid), time.monotonic()
    stats = _get(control + "/stats")
    out, _ = client.communicate(timeout=steady + ramp + 120)
    sim.terminate()
    t_stop = time.monotonic()
    try:
        sim.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sim.kill()
        sim.wait(timeout=10)
        errlog.seek(0)
        print(f"  note: simulator did not stop within 30 s of SIGTERM (killed); "
              f"stderr tail: {errlog.read()[-300:]!r}")
    errlog.close()
    stop_s = time.monotonic() - t_stop
    cl = json.loads(out.strip().splitlines()[-1])
    lat = stats["delta_lateness"]
    return {"sessions": n, "active": active, "cpu_pct": 100 * (c1 - c0) / (w1 - w0),
            "runq_pct": 100 * (q1 - q0) / (w1 - w0),
            "deltas_per_s": lat["count"] / (w1 - w0), "p50": lat["p50_ms"], "p99": lat["p99_ms"],
            "max": lat["max_ms"], "client_lag_p99": cl["lag_p99_ms"], "errors": cl["errors"],
            "turns": cl["turns"], "first_error": cl.get("first_error"), "stop_s": stop_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="100,250,500,750,1000")
    ap.add_argument("--steady", type=float, default=15.0, help="measured window per level (s)")
    ap.add_argument("--sim-core", default="0")
    ap.add_argument("--client-core", default="1")
    ap.add_argument("--profile", default=None, help="cProfile the simulator to this file")
    ap.add_argument("--nice", type=int, default=0,
                    help="run simulator and client at this nice level (e.g. -5 on a shared machine, "
                         "so other processes' time slices do not show up as simulator lateness)")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--sessions", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ramp", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args)
        return
    print(f"simulator on core {args.sim_core}, client on core {args.client_core}, nice {args.nice}; "
          f"steady window {args.steady:g} s; 100 ms input chunks, 100 ms deltas at 2x")
    head = (f"{'sessions':>8} {'active':>6} {'sim CPU %':>9} {'deltas/s':>9} {'late p50':>9} "
            f"{'late p99':>9} {'late max':>9} {'client lag p99':>14} {'turns':>6} {'errors':>6}")
    print(head)
    print("-" * len(head))
    for n in [int(x) for x in args.levels.split(",")]:
        r = run_level(n, args.steady, args.sim_core, args.client_core, args.profile, args.nice)

        def f(v):
            return f"{v:9.2f}" if v is not None else f"{'-':>9}"
        print(f"{r['sessions']:>8} {r['active']:>6} {r['cpu_pct']:>9.1f} {r['runq_pct']:>6.1f} {r['deltas_per_s']:>9.0f} "
              f"{f(r['p50'])} {f(r['p99'])} {f(r['max'])} {r['client_lag_p99']:>11.2f} ms "
              f"{r['turns']:>6} {r['errors']:>6}", flush=True)
        if r["first_error"]:
            print(f"         first client error: {r['first_error']}")
    print("late = actual write - scheduled slot of each reply delta, in ms (simulator's own clock);"
          "\nrunq % = share of the window the simulator was runnable but another process had its "
          "core (contention, not simulator cost)")


if __name__ == "__main__":
    main()
