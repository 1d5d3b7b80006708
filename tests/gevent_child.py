"""The parent side of tests/probes/gevent_sessions.py --serve: a gevent-patched child process that
stays up between batches, so tests/timing.bounded can watch its CPU wait (its pid) and repeat a
measurement without a new start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class GeventChild:
    """`with GeventChild(script, url, model) as child: child.batch(50, 2, 20)`."""

    def __init__(self, script: Path, url: str, model: str, provider: str | None = None):
        self.argv = [sys.executable, str(script), "--serve", url, model, *([provider] if provider else [])]

    def __enter__(self) -> GeventChild:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.__exit__()
            raise AssertionError(f"gevent child did not start: {self.proc.stderr.read()[-2000:]}")
        return self

    def batch(self, n: int, turns: int, stagger_ms: int) -> dict:
        """One batch of `n` sessions; the child's JSON document."""
        self.proc.stdin.write(f"{n} {turns} {stagger_ms}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()[-2000:]
        return json.loads(line)

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
