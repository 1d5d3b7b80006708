"""`python -m simulator.hostile` in a child process on a free loopback port."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class HostileProcess:
    def __init__(self, mode: str, *args: str, start_timeout: float = 15.0):
        self.mode = mode
        self.args = list(args)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.ws_url = ""
        self.port = 0

    def url(self, path: str = "/v1/realtime") -> str:
        return self.ws_url + path

    def start(self) -> HostileProcess:
        cmd = [sys.executable, "-m", "simulator.hostile", "--port", "0", "--mode", self.mode,
               "--max-s", "120", *self.args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while not self.ws_url:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    raise RuntimeError("hostile server did not start in time")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError("hostile server exited: "
                                       + self.proc.stderr.read().decode(errors="replace"))
                buf += chunk
                for line in buf.decode().splitlines():
                    if line.startswith("listening "):
                        self.ws_url = line.split(" ", 1)[1].strip()
        except BaseException:
            self.stop()
            raise
        finally:
            sel.close()
        self.port = int(self.ws_url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=3)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> HostileProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
