"""The durable outbox in front of every network sink.

`write(points)` serialises the points to line protocol and appends them to a local SQLite file
(WAL) before anything is sent, then returns: the caller never waits on the network. One delivery
thread sends the oldest pending lines in batches and deletes them only once the server accepted
them. Retries are safe because InfluxDB overwrites an identical series+timestamp point.

Policy (defaults in brackets; README.md ("Storage") explains them):
- transient failure (connection error, 429, 5xx): retry the same batch after exponential backoff
  with jitter [0.5 s doubling to 30 s, times a random 0.5..1.0], or after the server's
  Retry-After when it sends one (capped at 300 s). Counted in `retried`.
- permanent failure (any other 4xx): the batch goes to `<outbox>.dead.jsonl` with the status and
  the server's reason, is logged and counted in `dead_lettered`, and the next batch goes on.
- full (more than max_points [2,000,000] points or max_bytes [512 MiB] pending): the *oldest*
  pending chunks are dropped to make room, counted in `dropped` and logged. Fresh data is what
  alerts and dashboards need most after a long outage.
- restart: pending lines stay in the file and are delivered by the next process.
- close(timeout): delivers what it can within the timeout; anything left stays on disk.

Acknowledgement journal (for audits such as benchmarks/chaos_soak.py; off unless asked): with
the environment variable `VOICEPULSE_OUTBOX_JOURNAL` set to a folder, every line the outbox has
accepted (committed to its file, i.e. acknowledged to the caller) is also appended to
`<folder>/<name>.<pid>.lp`, so an audit can check that each acknowledged point reached the
server exactly once. It costs one file append per `write()`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .points import Point, to_line

log = logging.getLogger(__name__)

#: A folder: every acknowledged line is appended there too (see the module docstring).
JOURNAL_ENV = "VOICEPULSE_OUTBOX_JOURNAL"


@dataclass(slots=True)
class SendResult:
    """One send's outcome: `ok`, `retry` (connection trouble, 429, 5xx; with the server's
    Retry-After if any) or `permanent` (any other 4xx), with the server's reason."""

    kind: str  # ok | retry | permanent
    status: int | None = None
    reason: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class Transport(Protocol):
    """What the outbox sends through (telemetry/transports.py): one batch of line protocol per
    call, never retried or buffered by the transport itself. A `close()`, if it has one, is
    called when the outbox closes."""

    def send(self, body: bytes) -> SendResult: ...


class Outbox:
    def __init__(
        self,
        path: str,
        transport: Transport,
        *,
        name: str = "",
        precision: str = "ns",
        batch_points: int = 5000,
        batch_bytes: int = 4 * 1024 * 1024,
        max_points: int = 2_000_000,
        max_bytes: int = 512 * 1024 * 1024,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 300.0,
        synchronous: str = "NORMAL",
        start: bool = True,
    ):
        self.path = path
        self.dead_letter_path = (
            path + ".dead.jsonl"
            if not path.endswith(".sqlite")
            else (path[: -len(".sqlite")] + ".dead.jsonl")
        )
        self.name = name or os.path.basename(path)
        self.transport = transport
        self.precision = precision
        self.batch_points, self.batch_bytes = batch_points, batch_bytes
        self.max_points, self.max_bytes = max_points, max_bytes
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(
            path, check_same_thread=False, timeout=30.0, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        # checkpoints run on the delivery thread's connection, never inside a caller's write
        # (an automatic checkpoint made every ~1000th append take ~25 ms instead of ~0.2 ms)
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " n INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        self._rdb = sqlite3.connect(
            path, check_same_thread=False, timeout=30.0, isolation_level=None
        )
        self._rdb.execute(f"PRAGMA synchronous={synchronous}")
        self._rdb.execute("PRAGMA wal_autocheckpoint=0")
        self._lock = threading.Lock()  # guards the writer connection and the counters
        self._cond = threading.Condition(self._lock)
        self._dlock = threading.Lock()  # guards the delivery connection
        self._last_checkpoint = 0.0
        self._single_until = 0  # after a rejected batch, resend its chunks one by one
        n, b = self._db.execute(
            "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(LENGTH(body)), 0) FROM chunks"
        ).fetchone()
        self._pending_points, self._pending_bytes = int(n), int(b)
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.invalid = 0  # points with no storable field (never written anywhere)
        self.last_error = ""
        self._last_drop_log = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._journal = os.environ.get(JOURNAL_ENV) or None
        if self._pending_points:
            log.info(
                "outbox %s: %d points pending from a previous run", self.name, self._pending_points
            )
        if start:
            self.start()

    # -- writing --------------------------------------------------------------------------------
    def write(self, points: Iterable[Point]) -> None:
        """Append to disk and return; delivery happens in the background."""
        lines = []
        for p in points:
            try:
                lines.append(to_line(p, self.precision))
            except ValueError:
                self.invalid += 1
        self.write_lines(lines)

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._closed:
            raise RuntimeError(f"outbox {self.name} is closed")
        chunks = [
            (
                min(self.batch_points, len(lines) - i),
                "\n".join(lines[i : i + self.batch_points]).encode(),
            )
            for i in range(0, len(lines), self.batch_points)
        ]
        with self._lock:
            points, nbytes, dropped = self._pending_points, self._pending_bytes, self.dropped
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO chunks (n, body) VALUES (?, ?)", chunks)
                self._pending_points += sum(n for n, _ in chunks)
                self._pending_bytes += sum(len(b) for _, b in chunks)
                if self._pending_points > self.max_points or self._pending_bytes > self.max_bytes:
                    self._drop_oldest()  # in the same transaction: counted exactly once
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending_points, self._pending_bytes, self.dropped = points, nbytes, dropped
                raise
            if self._journal:
                self._append_journal(lines)
        self._wake.set()

    def _append_journal(self, lines: list[str]) -> None:
        """Lock held: the journal's order is the outbox's. A failure is logged, never raised
        (the points are acknowledged already)."""
        path = os.path.join(self._journal, f"{self.name}.{os.getpid()}.lp")  # pid: forks too
        try:
            os.makedirs(self._journal, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        except OSError as exc:
            log.warning("outbox %s: journal %s not written: %s", self.name, path, exc)

    def _drop_oldest(self) -> None:
        """Make room by deleting the oldest chunks (lock and write transaction held)."""
        dropped = 0
        while self._pending_points > self.max_points or self._pending_bytes > self.max_bytes:
            rows = self._db.execute(
                "SELECT id, n, LENGTH(body) FROM chunks ORDER BY id LIMIT 64"
            ).fetchall()
            if not rows:
                break
            ids = []
            for cid, n, nbytes in rows:
                ids.append(cid)
                dropped += n
                self._pending_points -= n
                self._pending_bytes -= nbytes
                if (
                    self._pending_points <= self.max_points
                    and self._pending_bytes <= self.max_bytes
                ):
                    break
            self._db.execute(f"DELETE FROM chunks WHERE id IN ({','.join(map(str, ids))})")
        self.dropped += dropped
        now = time.monotonic()
        if now - self._last_drop_log > 60.0:
            self._last_drop_log = now
            log.warning(
                "outbox %s full (%d points, %d bytes max): dropped the oldest %d points (%d so far)",
                self.name,
                self.max_points,
                self.max_bytes,
                dropped,
                self.dropped,
            )

    # -- delivering -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"outbox-{self.name}", daemon=True
            )
            self._thread.start()

    def _next_batch(self) -> tuple[list[int], int, bytes] | None:
        """The oldest chunks up to the batch limits. Rows are read one at a time, so memory holds
        at most one batch however large the backlog is."""
        ids, n, parts, size = [], 0, [], 0
        with self._dlock:
            cur = self._rdb.execute("SELECT id, n, body FROM chunks ORDER BY id")
            try:
                for cid, cn, body in cur:
                    if ids and (
                        n + cn > self.batch_points
                        or size + len(body) > self.batch_bytes
                        or cid <= self._single_until
                    ):
                        break
                    ids.append(cid)
                    n += cn
                    parts.append(body)
                    size += len(body) + 1
            finally:
                cur.close()
        if not ids:
            return None
        return ids, n, b"\n".join(parts)

    def _remove(self, ids: list[int]) -> tuple[int, int]:
        """Delete delivered/dead-lettered chunks; returns (points, bytes) actually removed
        (a chunk the size policy dropped meanwhile is not counted twice)."""
        marks = ",".join(map(str, ids))
        with self._lock, self._dlock:
            self._rdb.execute("BEGIN IMMEDIATE")
            try:
                n, b = self._rdb.execute(
                    "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(LENGTH(body)), 0) FROM chunks"
                    f" WHERE id IN ({marks})"
                ).fetchone()
                self._rdb.execute(f"DELETE FROM chunks WHERE id IN ({marks})")
                self._rdb.execute("COMMIT")
            except BaseException:
                self._rdb.execute("ROLLBACK")
                raise
            self._pending_points -= n
            self._pending_bytes -= b
            self._cond.notify_all()
            return int(n), int(b)

    def _checkpoint(self, force: bool = False) -> None:
        """Fold the WAL into the database file without blocking writers (at most once a second)."""
        now = time.monotonic()
        if force or now - self._last_checkpoint >= 1.0:
            self._last_checkpoint = now
            with self._dlock:
                self._rdb.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _dead_letter(self, body: bytes, n: int, status: int | None, reason: str) -> None:
        record = {
            "time": time.time(),
            "sink": self.name,
            "status": status,
            "reason": reason,
            "points": n,
            "lines": body.decode("utf-8", "replace"),
        }
        with open(self.dead_letter_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _backoff(self, attempt: int) -> float:
        d = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (attempt - 1)))
        return d * random.uniform(0.5, 1.0)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                batch = self._next_batch()
            except sqlite3.Error:
                log.exception("outbox %s: reading the outbox failed", self.name)
                self._stop.wait(1.0)
                continue
            if batch is None:
                try:
                    self._checkpoint()
                except sqlite3.Error:
                    if self._closed:
                        return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            ids, n, body = batch
            try:
                res = self.transport.send(body)
            except Exception as e:  # a transport bug must not kill delivery
                res = SendResult("retry", None, f"{type(e).__name__}: {e}")
            try:
                attempt = self._settle(res, ids, n, body, attempt)
                self._checkpoint()
            except sqlite3.Error:
                if self._closed:
                    return
                log.exception("outbox %s: updating the outbox failed", self.name)

    def _settle(self, res: SendResult, ids: list[int], n: int, body: bytes, attempt: int) -> int:
        """Apply one send's outcome; returns the new attempt count."""
        if res.kind == "ok":
            removed, _ = self._remove(ids)
            self.delivered += removed
            attempt = 0
        elif res.kind == "permanent" and len(ids) > 1:
            # isolate the bad chunk: resend this batch's chunks one at a time, so only the
            # write() call that holds the bad line is dead-lettered
            self._single_until = max(ids)
            attempt = 0
        elif res.kind == "permanent":
            self._dead_letter(body, n, res.status, res.reason)
            removed, _ = self._remove(ids)
            self.dead_lettered += removed
            self.last_error = f"HTTP {res.status}: {res.reason}"
            log.error(
                "outbox %s: %s rejected %d points permanently (HTTP %s: %s); kept in %s",
                self.name,
                getattr(self.transport, "where", "sink"),
                n,
                res.status,
                res.reason,
                self.dead_letter_path,
            )
            attempt = 0
        else:
            self.retried += 1
            attempt += 1
            self.last_error = f"HTTP {res.status}: {res.reason}" if res.status else res.reason
            if res.retry_after_s is not None:
                delay = min(res.retry_after_s, self.retry_after_max_s)
            else:
                delay = self._backoff(attempt)
            if attempt == 1 or attempt % 10 == 0:
                log.warning(
                    "outbox %s: delivery to %s failed (%s), attempt %d, retrying in %.1f s; %d pending",
                    self.name,
                    getattr(self.transport, "where", "sink"),
                    self.last_error,
                    attempt,
                    delay,
                    self._pending_points,
                )
            self._stop.wait(delay)
        return attempt

    # -- Sink -----------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending (True) or the timeout passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._cond:
            while self._pending_points > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.2 if left is None else min(left, 0.2))
        return True

    def close(self, timeout: float | None = 10.0) -> bool:
        """Deliver what can be delivered within `timeout`; the rest stays on disk for next time."""
        if self._closed:
            return True
        done = self.flush(timeout) if self._thread is not None else self._pending_points == 0
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # a send stuck in a read times out on its own
        if not done:
            log.warning(
                "outbox %s: %d points still pending at close; kept in %s for the next run",
                self.name,
                self._pending_points,
                self.path,
            )
        with self._lock, self._dlock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # another process has the file open; it checkpoints later
            self._rdb.close()
            self._db.close()
        close = getattr(self.transport, "close", None)
        if close:
            close()
        return done

    def health(self) -> dict:
        return {
            "pending": self._pending_points,
            "pending_bytes": self._pending_bytes,
            "delivered": self.delivered,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "dropped": self.dropped,
            "invalid": self.invalid,
            "last_error": self.last_error,
        }
