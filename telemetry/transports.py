"""The wire half of each network sink: send one batch of line protocol, classify the answer.

A transport never retries and never buffers: the outbox owns both. `send` returns a `SendResult`
that is `ok`, `retry` (connection trouble, 429, 5xx; with the server's Retry-After if any) or
`permanent` (any other 4xx: bad token, database not found, unparsable line) with the server's
reason. Messages never carry credentials or query strings.
"""

from __future__ import annotations

import email.utils
import gzip as gzip_mod
import time
from urllib.parse import urlencode

import orjson
import urllib3

from .influx import InfluxV1Sink, InfluxV2Sink, SinkConfig, auth_headers, pool, safe_url, token
from .outbox import SendResult

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, body: bytes, retry_after: str | None) -> SendResult:
    if 200 <= status < 300:
        return SendResult("ok", status)
    reason = server_reason(body)
    if status == 429 or status >= 500:
        return SendResult("retry", status, reason, parse_retry_after(retry_after))
    return SendResult("permanent", status, reason)


def server_reason(body: bytes | str | None) -> str:
    """The server's own message: InfluxDB answers {"error": "..."} (2.x: {"message": "..."})."""
    if not body:
        return ""
    raw = body if isinstance(body, bytes) else body.encode()
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict):
            for k in ("error", "message"):
                if doc.get(k):
                    return str(doc[k])[:2000]
    except orjson.JSONDecodeError:
        pass
    return raw[:2000].decode("utf-8", "replace").strip()


class V1Transport:
    """POST line protocol to /write?db=&rp=&precision= (Basic auth or a token header)."""

    def __init__(self, cfg: InfluxV1Sink):
        self.where = safe_url(cfg.url)
        q = {"db": cfg.database, "precision": cfg.precision}
        if cfg.retention_policy:
            q["rp"] = cfg.retention_policy
        self._url = cfg.url.rstrip("/") + "/write?" + urlencode(q)
        self._headers = {"Content-Type": "text/plain; charset=utf-8", **auth_headers(cfg)}
        self._gzip = cfg.gzip
        if cfg.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._http = pool(cfg.verify_tls, cfg.ca_file)
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)

    def send(self, body: bytes) -> SendResult:
        data = gzip_mod.compress(body, 1) if self._gzip else body
        try:
            r = self._http.request(
                "POST", self._url, body=data, headers=self._headers, timeout=self._timeout
            )
        except urllib3.exceptions.HTTPError as e:
            return SendResult("retry", None, f"{type(e).__name__}: {_strip(str(e), self._url)}")
        return classify(r.status, r.data, r.headers.get("Retry-After"))

    def close(self) -> None:
        self._http.clear()


class V2Transport:
    """influxdb-client's SYNCHRONOUS write API (/api/v2/write), one call per outbox batch."""

    def __init__(self, cfg: InfluxV2Sink):
        from influxdb_client import InfluxDBClient

        self.where = safe_url(cfg.url)
        self._bucket, self._org = cfg.bucket, cfg.org
        kw: dict = {"verify_ssl": cfg.verify_tls}
        if cfg.ca_file:
            kw["ssl_ca_cert"] = cfg.ca_file
        self._client = InfluxDBClient(
            url=cfg.url,
            token=token(cfg) or "",
            org=cfg.org,
            enable_gzip=cfg.gzip,
            timeout=(int(CONNECT_TIMEOUT_S * 1000), int(READ_TIMEOUT_S * 1000)),
            **kw,
        )
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def send(self, body: bytes) -> SendResult:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._write.write(
                bucket=self._bucket,
                org=self._org,
                record=body.decode("utf-8"),
                write_precision=WritePrecision.NS,
            )
        except ApiException as e:
            headers = e.headers or {}
            retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
            return classify(int(e.status or 0), e.body or (e.reason or "").encode(), retry_after)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return SendResult("retry", None, f"{type(e).__name__}: {_strip(str(e), self.where)}")
        return SendResult("ok", 204)

    def close(self) -> None:
        self._client.close()


def _strip(message: str, url: str) -> str:
    """Keep query strings (db names are harmless, but tokens could ride there) out of messages."""
    if "?" in url:
        message = message.replace(url.split("?", 1)[1], "…")
    return message[:500]


def transport_for(cfg: SinkConfig):
    if isinstance(cfg, InfluxV1Sink):
        return V1Transport(cfg)
    if isinstance(cfg, InfluxV2Sink):
        return V2Transport(cfg)
    raise TypeError(f"unknown sink config {type(cfg).__name__}")
