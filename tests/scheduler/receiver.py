"""A real loopback HTTP receiver for webhook tests: records every POST, can fail on purpose."""

from __future__ import annotations

import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


class Receiver:
    def __init__(self, fail_first: int = 0, status: int = 500):
        self.posts: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.fail_left = fail_first
        self.fail_status = status
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.attempts += 1
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(outer.fail_status)
                    self.end_headers()
                    return
                outer.posts.put((self.path, orjson.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, timeout: float = 5.0) -> tuple[str, dict]:
        return self.posts.get(timeout=timeout)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
