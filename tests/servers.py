"""Real InfluxDB 1.6.7 and VictoriaMetrics servers on free loopback ports (owned by telemetry).

`InfluxServer` and `VictoriaMetricsServer` start the Debian binaries in a temp dir, bound to
127.0.0.1 only (HTTP and influxd's RPC port), and can be stopped and started again on the same
data dir and port (outage tests). Fixtures: `influxd` and `victoria_metrics` (session-scoped,
shared: don't stop them), and `influx_factory` (function-scoped: servers you may stop).
A missing binary skips the test naming it and its install command; under CI and ./scripts/test
it fails the test instead (tests/tools.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.tools import require_tool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(
    method: str, url: str, data: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Server:
    binary = ""
    port = 0
    ready_path = "/"
    ready_status = 200

    def __init__(self, root: str | None = None):
        require_tool(self.binary)  # skips, or under CI fails, naming the binary
        self.dir = root or tempfile.mkdtemp(prefix=f"vp-{self.binary}-")
        self._owns_dir = root is None
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        """Start (again) on the same port and data dir; returns once it answers."""
        if self.running:
            return
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited with {self.proc.returncode}; see {self.dir}/server.log"
                )
            try:
                status, _ = _http("GET", self.url + self.ready_path, timeout=1.0)
                if status == self.ready_status:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"{self.binary} did not answer within {timeout} s; see {self.dir}/server.log"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class InfluxServer(_Server):
    """Debian influxd 1.6.7 (ENGINEERING-NOTES.md §4), HTTP and RPC on loopback only."""

    binary = "influxd"
    ready_path = "/ping"
    ready_status = 204

    def __init__(self, root: str | None = None, auth: bool = False):
        super().__init__(root)
        self.rpc_port = free_port()
        self.auth = auth
        d = self.dir
        with open(os.path.join(d, "influxdb.conf"), "w") as f:
            f.write(
                f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  pprof-enabled = false
"""
            )

    def _argv(self) -> list[str]:
        return [
            "influxd",
            "run",
            "-config",
            f"{self.dir}/influxdb.conf",
            "-pidfile",
            f"{self.dir}/influxd.pid",
        ]

    def query(self, q: str, db: str | None = None, auth: tuple[str, str] | None = None) -> dict:
        """Run InfluxQL; the parsed JSON answer (epoch ns)."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        url = self.url + "/query"
        if auth:  # influxd reads u/p from the URL only
            url += "?" + urllib.parse.urlencode({"u": auth[0], "p": auth[1]})
        status, body = _http("POST", url, urllib.parse.urlencode(params).encode())
        if status != 200:
            raise RuntimeError(f"influxd /query {status}: {body[:300]!r}")
        return json.loads(body)

    def rows(self, q: str, db: str) -> list[dict]:
        """Rows of every series of a SELECT as dicts (tags of GROUP BY merged in)."""
        out = []
        for res in self.query(q, db).get("results", []):
            if "error" in res:
                raise RuntimeError(res["error"])
            for s in res.get("series", []):
                for v in s.get("values", []):
                    row = dict(zip(s["columns"], v, strict=True))
                    row.update(s.get("tags") or {})
                    out.append(row)
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(self, lines: str, db: str, precision: str = "ns") -> int:
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": db, "precision": precision})
        return _http("POST", url, lines.encode())[0]


class VictoriaMetricsServer(_Server):
    """Debian victoria-metrics (ENGINEERING-NOTES.md §7): a real /api/v2/write endpoint."""

    binary = "victoria-metrics"
    ready_path = "/health"

    def _argv(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-storageDataPath={self.dir}/data",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-loggerLevel=ERROR",
        ]

    def flush(self) -> None:
        """Ask VictoriaMetrics to make buffered writes searchable."""
        _http("GET", self.url + "/internal/force_flush")

    def export_until(self, match: str, predicate, timeout: float = 10.0) -> list[dict]:
        """Poll the export until `predicate(series)` holds (new rows become searchable about a
        second after the write); returns the last export either way."""
        deadline = time.monotonic() + timeout
        while True:
            series = self.export(match)
            if predicate(series) or time.monotonic() > deadline:
                return series
            time.sleep(0.1)

    def export(self, match: str = '{__name__!=""}') -> list[dict]:
        """Every series matching `match` via /api/v1/export (JSON lines)."""
        self.flush()
        url = self.url + "/api/v1/export?" + urllib.parse.urlencode({"match[]": match})
        status, body = _http("GET", url)
        if status != 200:
            raise RuntimeError(f"victoria-metrics export {status}: {body[:300]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def _start(cls, **kw):
    server = cls(**kw)
    server.start()
    return server


@pytest.fixture(scope="session")
def influxd():
    """A shared influxd 1.6.7 (don't stop it; use `influx_factory` for outage tests)."""
    server = _start(InfluxServer)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def victoria_metrics():
    server = _start(VictoriaMetricsServer)
    yield server
    server.cleanup()


@pytest.fixture
def influx_factory():
    """Start private influxd servers (`influx_factory()`); all are stopped after the test."""
    servers: list[InfluxServer] = []

    def make(**kw) -> InfluxServer:
        s = _start(InfluxServer, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.cleanup()
