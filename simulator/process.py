"""The simulator as a child process on free loopback ports, with its control API.

Used by `voicepulse demo` and by the tests (tests/sim_server.py): a child process has its own
CPU time and GIL, so the server's timing never disturbs the client being measured.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

#: The folder holding the `simulator` package, so the child finds it installed or not.
ROOT = Path(__file__).resolve().parents[1]


class SimProcess:
    """`python -m simulator --port 0 --control-port 0 *args` as a child process."""

    def __init__(self, args: list[str] | tuple[str, ...] = (), start_timeout: float = 15.0):
        self.args = list(args)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.ws_url = ""  # ws://127.0.0.1:PORT (append the path, e.g. /v1/realtime?model=M)
        self.control_url = ""  # http://127.0.0.1:PORT
        self.http_url = ""  # with --http-port: the WebRTC signalling base, http://127.0.0.1:PORT
        self.cert = ""  # with --tls: the certificate to trust (the `cert PATH` line)
        self.host = "127.0.0.1"
        self.port = 0
        self.pid = 0
        self._err = None

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> SimProcess:
        cmd = [sys.executable, "-m", "simulator", "--port", "0", "--control-port", "0", *self.args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        # stderr goes to a file, never an unread pipe: a full pipe would block the simulator
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=self._err)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.start_timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while not (self.ws_url and self.control_url):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    raise RuntimeError("simulator did not start in time" + self._stderr())
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError("simulator exited during start-up" + self._stderr())
                buf += chunk
                for line in buf.decode().splitlines():
                    if line.startswith("listening "):
                        self.ws_url = line.split(" ", 1)[1].strip()
                    elif line.startswith("control "):
                        self.control_url = line.split(" ", 1)[1].strip()
                    elif line.startswith("http "):
                        self.http_url = line.split(" ", 1)[1].strip()
                    elif line.startswith("cert "):
                        self.cert = line.split(" ", 1)[1].strip()
        except BaseException:
            self.stop()
            raise
        finally:
            sel.close()
        hostport = self.ws_url.split("://", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        return self

    def stderr(self) -> str:
        """What the simulator wrote to stderr so far (logs, tracebacks)."""
        if self._err is None:
            return ""
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def _stderr(self) -> str:
        return ": " + self.stderr()[-2000:]

    def stop(self) -> int | None:
        """SIGTERM, wait up to 3 s, then SIGKILL. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=3)
        if p.stdout is not None:
            p.stdout.close()
        if self._err is not None:
            self._err.close()
            self._err = None
        return p.returncode

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- control API -----------------------------------------------------------------------

    def realtime_url(self) -> str:
        """The OpenAI Realtime endpoint, for a target's `url` (the model goes in `model`)."""
        return f"{self.ws_url}/v1/realtime"

    def gemini_url(self, version: str = "v1beta") -> str:
        """The Gemini Live endpoint (the model goes in the setup message)."""
        return (f"{self.ws_url}/ws/google.ai.generativelanguage.{version}.GenerativeService."
                "BidiGenerateContent")

    def url(self, model: str = "sim-fast", path: str = "/v1/realtime") -> str:
        return f"{self.ws_url}{path}?model={model}"

    def request(self, method: str, path: str, body: dict | None = None,
                timeout: float = 5.0) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.control_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read().decode()}") from None

    def healthz(self) -> dict:
        return self.request("GET", "/healthz")

    def truth(self, session_id: str | None = None, model: str | None = None) -> dict:
        q = "&".join(f"{k}={v}" for k, v in (("session_id", session_id), ("model", model)) if v)
        return self.request("GET", "/truth" + (f"?{q}" if q else ""))

    def turns(self, session_id: str | None = None) -> list[dict]:
        return self.truth(session_id)["turns"]

    def set_profile(self, **fields) -> dict:
        """PUT /profile, e.g. set_profile(model="sim-fast", ttfa_scale=1.4)."""
        return self.request("PUT", "/profile", fields)

    def profile(self, model: str) -> dict:
        return self.request("GET", f"/profile?model={model}")

    def fault(self, **spec) -> str:
        """POST /faults {"action": "start", **spec}; returns the fault id."""
        return self.request("POST", "/faults", {"action": "start", **spec})["id"]

    def stop_fault(self, fid: str) -> None:
        self.request("POST", "/faults", {"action": "stop", "id": fid})

    def clear_faults(self) -> None:
        self.request("POST", "/faults", {"action": "clear"})

    def stats(self, reset: bool = False) -> dict:
        return self.request("GET", "/stats" + ("?reset=1" if reset else ""))

    def reset(self) -> None:
        self.clear_faults()
        self.request("DELETE", "/truth")
