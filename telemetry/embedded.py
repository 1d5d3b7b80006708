"""The embedded store: one SQLite file holding telemetry.schema's measurements.

Used when no InfluxDB is configured. One table per measurement, one column per tag or field
under the same names InfluxDB uses, plus `time_ns`; a new tag or field adds a column (schemaless
like InfluxDB). WAL mode, so `voicepulse results` can read while a probe service writes; writes
from many threads go through one connection under a lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable

from .points import Point, plain_value
from .schema import MEASUREMENTS

DEFAULT_PATH = "voicepulse.db"

#: Columns every table starts with (role "tag" or "field"), from telemetry.schema; others are
#: added on first write.
SCHEMA: dict[str, dict[str, str]] = {
    m.name: {**{t: "tag" for t in m.tags}, **{f: "field" for f in m.fields}}
    for m in MEASUREMENTS.values()
}

INDEXES = {
    "turn": ("time_ns", "target, time_ns"),
    "session": ("time_ns", "target, time_ns"),
    "latency": ("metric, time_ns",),
    "loadgen": ("time_ns",),
    "alert": ("time_ns",),
    "schedule": ("time_ns",),
}


def qi(name: str) -> str:
    """A quoted SQL identifier (any tag/field name is safe as a column name)."""
    return '"' + name.replace('"', '""') + '"'


class EmbeddedStore:
    """A SQLite file with one table per measurement. Also a `Sink` (write/flush/close/health)."""

    def __init__(self, path: str = DEFAULT_PATH):
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            path, check_same_thread=False, timeout=10.0, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._columns: dict[str, dict[str, str]] = {}
        self.written = 0
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS _columns (measurement TEXT, name TEXT, role TEXT,"
                " PRIMARY KEY (measurement, name))"
            )
            for m, cols in SCHEMA.items():
                self._ensure(m, cols)
                for i, cols_sql in enumerate(INDEXES.get(m, ())):
                    self._db.execute(
                        f"CREATE INDEX IF NOT EXISTS {qi(f'{m}_i{i}')} ON {qi(m)} ({cols_sql})"
                    )
            self._load_columns()

    # -- schema ---------------------------------------------------------------------------------
    def _load_columns(self) -> None:
        self._columns = {}
        for m, name, role in self._db.execute("SELECT measurement, name, role FROM _columns"):
            self._columns.setdefault(m, {})[name] = role

    def _ensure(self, measurement: str, cols: dict[str, str]) -> None:
        known = self._columns.get(measurement)
        if known is None:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {qi(measurement)} (time_ns INTEGER NOT NULL)"
            )
            self._load_columns()
            known = self._columns.setdefault(measurement, {})
        missing = {k: v for k, v in cols.items() if k not in known and k != "time_ns"}
        if not missing:
            return
        existing = {r[1] for r in self._db.execute(f"PRAGMA table_info({qi(measurement)})")}
        for name, role in missing.items():
            if name not in existing:
                self._db.execute(f"ALTER TABLE {qi(measurement)} ADD COLUMN {qi(name)}")
            self._db.execute(
                "INSERT OR IGNORE INTO _columns VALUES (?, ?, ?)", (measurement, name, role)
            )
            known[name] = role

    def columns(self, measurement: str) -> dict[str, str]:
        """Column name -> "tag" | "field" (reloaded, so another process's new columns show)."""
        with self._lock:
            self._load_columns()
            return dict(self._columns.get(measurement, {}))

    # -- Sink -----------------------------------------------------------------------------------
    def write(self, points: Iterable[Point]) -> None:
        groups: dict[tuple[str, tuple[str, ...]], list[tuple]] = {}
        roles: dict[str, dict[str, str]] = {}
        for p in points:
            tags = {k: str(v) for k, v in p.tags.items() if v is not None and v != ""}
            fields = {k: plain_value(v) for k, v in p.fields.items() if v is not None}
            cols = tuple(tags) + tuple(fields)
            r = roles.setdefault(p.measurement, {})
            r.update({k: "tag" for k in tags})
            r.update({k: "field" for k in fields})
            groups.setdefault((p.measurement, cols), []).append(
                (int(p.time_ns), *tags.values(), *fields.values())
            )
        if not groups:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for m, r in roles.items():
                    self._ensure(m, r)
                n = 0
                for (m, cols), rows in groups.items():
                    names = ", ".join(["time_ns", *map(qi, cols)])
                    marks = ", ".join("?" * (len(cols) + 1))
                    self._db.executemany(f"INSERT INTO {qi(m)} ({names}) VALUES ({marks})", rows)
                    n += len(rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.written += n

    def flush(self, timeout: float | None = None) -> bool:
        return True  # every write is committed before write() returns

    def close(self, timeout: float | None = None) -> bool:
        with self._lock:
            self._db.close()
        return True

    def health(self) -> dict[str, int]:
        return {
            "pending": 0,
            "delivered": self.written,
            "retried": 0,
            "dead_lettered": 0,
            "dropped": 0,
        }

    # -- reading --------------------------------------------------------------------------------
    def query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def select(
        self,
        measurement: str,
        columns: Iterable[str],
        where: str = "",
        params: Iterable = (),
        order: str = "time_ns",
    ) -> list[tuple]:
        """Rows of the named columns; a column never written reads as NULL."""
        known = self.columns(measurement)
        cols = [qi(c) if c == "time_ns" or c in known else "NULL" for c in columns]
        if not known:
            return []
        sql = f"SELECT {', '.join(cols)} FROM {qi(measurement)}"
        if where:
            sql += f" WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        return self.query(sql, params)
