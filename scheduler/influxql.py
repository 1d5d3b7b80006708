"""`AlertSource` over InfluxDB's `/query` (InfluxQL): 1.x natively, 2.x via its v1 API, 3.x.

The two questions of the alert engine as InfluxQL on DESIGN.md's schema:

    SELECT count("duration_s") FROM "session" WHERE target=.. AND kind=.. AND time >= ..
        GROUP BY "outcome"
    SELECT "ttfa_ms" FROM "turn" WHERE target=.. AND kind=.. AND outcome='ok' AND time >= ..

Written against the same interface shape as the telemetry query layer, so it can move there.
Credentials come from env vars at request time and never appear in errors.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request

import orjson

from scheduler.source import Counts


def quote_str(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxQLError(RuntimeError):
    pass


class InfluxQLSource:
    def __init__(self, url: str, database: str, *, retention_policy: str | None = None,
                 username_env: str | None = None, password_env: str | None = None,
                 token_env: str | None = None, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.username_env, self.password_env, self.token_env = username_env, password_env, token_env
        self.timeout_s = timeout_s

    @classmethod
    def from_sink(cls, sink) -> InfluxQLSource | None:
        """From a telemetry sink config object (v1: database; v2: bucket via DBRP)."""
        url = getattr(sink, "url", None)
        db = getattr(sink, "database", None) or getattr(sink, "bucket", None)
        if not url or not db:
            return None
        return cls(url, db, retention_policy=getattr(sink, "retention_policy", None),
                   username_env=getattr(sink, "username_env", None),
                   password_env=getattr(sink, "password_env", None),
                   token_env=getattr(sink, "token_env", None))

    def _from(self, measurement: str) -> str:
        if self.retention_policy:
            return f"{quote_ident(self.database)}.{quote_ident(self.retention_policy)}." \
                   f"{quote_ident(measurement)}"
        return quote_ident(measurement)

    def query(self, q: str) -> list[dict]:
        """Run one InfluxQL statement; returns its series (`[]` when empty)."""
        params = {"db": self.database, "q": q, "epoch": "ms"}
        headers = {"Accept": "application/json"}
        token = os.environ.get(self.token_env or "", "")
        user = os.environ.get(self.username_env or "", "")
        if token:
            headers["Authorization"] = f"Token {token}"
        elif user:
            pw = os.environ.get(self.password_env or "", "")
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        req = urllib.request.Request(f"{self.url}/query?{urllib.parse.urlencode(params)}",
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise InfluxQLError(f"InfluxDB /query answered HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise InfluxQLError(f"InfluxDB /query unreachable ({type(exc.reason).__name__})") \
                from None
        result = (body.get("results") or [{}])[0]
        if "error" in result:
            raise InfluxQLError(f"InfluxQL error: {result['error']}")
        return result.get("series") or []

    @staticmethod
    def _where(target: str, kind: str, start: float, end: float) -> str:
        return (f'"target" = {quote_str(target)} AND "kind" = {quote_str(kind)} AND '
                f"time >= {int(start * 1000)}ms AND time < {int(end * 1000)}ms")

    def session_counts(self, target: str, start: float, end: float, kind: str = "probe") -> Counts:
        series = self.query(f'SELECT count("duration_s") FROM {self._from("session")} WHERE '
                            f'{self._where(target, kind, start, end)} GROUP BY "outcome"')
        total = ok = 0
        for s in series:
            n = int(s["values"][0][1] or 0) if s.get("values") else 0
            total += n
            if (s.get("tags") or {}).get("outcome") == "ok":
                ok += n
        return Counts(total, ok)

    def turn_values(self, target: str, metric: str, start: float, end: float,
                    kind: str = "probe") -> list[float]:
        series = self.query(f"SELECT {quote_ident(metric)} FROM {self._from('turn')} WHERE "
                            f"{self._where(target, kind, start, end)} AND \"outcome\" = 'ok'")
        return [float(v[1]) for s in series for v in s.get("values", []) if v[1] is not None]
