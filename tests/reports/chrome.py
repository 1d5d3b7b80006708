"""Headless Chromium driven over the DevTools protocol (CDP) on loopback, with `websockets`.

No chromedriver or Playwright: Debian's `chromium` is started with a fresh profile and
`--remote-debugging-port=0`; the port it picked is read from DevToolsActivePort, and one page
target is driven over its WebSocket. Every wait is bounded.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

from tests.tools import find_tool, require_tool

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    # nothing may resolve but loopback: a request that tries to leave fails fast (and is seen)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def chromium_binary() -> str | None:
    return find_tool("chromium")


class CDPError(RuntimeError):
    pass


class Chrome:
    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 30.0):
        binary = require_tool("chromium")  # skips, or under CI fails, naming chromium
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="vp-chromium-")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.events: list[dict] = []
        self._ids = itertools.count(1)
        self.ws = None
        try:
            port = self._port(timeout)
            self._conn = connect(self._page_ws(port, timeout), max_size=None,
                                 open_timeout=timeout, compression=None, proxy=None)
            self.ws = self._conn.__enter__()
        except BaseException:
            self.close()
            raise

    # -- start-up --------------------------------------------------------------------------
    def _port(self, timeout: float) -> int:
        f = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}")
            if f.exists():
                first = f.read_text().splitlines()[:1]
                if first and first[0].strip().isdigit():
                    return int(first[0])
            time.sleep(0.05)
        raise CDPError("chromium did not open its DevTools port in time")

    def _page_ws(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise CDPError("chromium shows no page target")

    # -- protocol --------------------------------------------------------------------------
    def send(self, method: str, timeout: float | None = None, **params) -> dict:
        i = next(self._ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer in time")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == i:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        for e in self.events:
            if e["method"] == method:
                return e
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"no {method} event in time")
            msg = json.loads(self.ws.recv(timeout=left))
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    def evaluate(self, expression: str, timeout: float | None = None):
        r = self.send("Runtime.evaluate", timeout=timeout, expression=expression,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise CDPError(f"evaluate: {r['exceptionDetails'].get('text')} "
                           f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll a JS expression until it is truthy."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            v = self.evaluate(expression)
            if v:
                return v
            time.sleep(0.05)
        raise CDPError(f"timed out waiting for {expression!r}")

    # -- high level ------------------------------------------------------------------------
    def open(self, url: str, width: int = 1400, height: int = 1000) -> None:
        """Watch console, exceptions, log and network, then load `url` and wait for `load`."""
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        r = self.send("Page.navigate", url=url)
        if r.get("errorText"):
            raise CDPError(f"navigate {url}: {r['errorText']}")
        self.wait_event("Page.loadEventFired")

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                  for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append("exception: " + d.get("exception", {}).get("description", d["text"]))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: str | Path, width: int = 1400) -> Path:
        """A full-page PNG."""
        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        self.send("Emulation.setDeviceMetricsOverride", width=width,
                  height=int(size["height"]) + 1, deviceScaleFactor=1, mobile=False)
        # two animation frames: the resize has been laid out and painted
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(base64.b64decode(shot["data"]))
        return p

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.send("Browser.close", timeout=5)
            except Exception:
                pass
            self._conn.__exit__(None, None, None)
            self.ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chrome:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
