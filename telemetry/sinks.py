"""Sink configuration: the YAML `sinks:` list, and the outbox file name of each destination.

`telemetry/wiring.py` assembles the writers from these (`build_sink`).

The config dataclasses' field names equal the YAML keys, so the config loader constructs them
directly (`type: influx` + `api: v2|v1` selects the class). Secrets are never fields: only the
names of the environment variables that hold them, read when the writer starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_OUTBOX_DIR = ".voicepulse/outbox"


@dataclass(slots=True)
class InfluxV2Sink:
    """`type: influx`, `api: v2`: influxdb-client writes to /api/v2/write (InfluxDB 1.8+, 2.x, 3.x)."""

    url: str
    org: str
    bucket: str
    token_env: str | None = None
    gzip: bool = True
    verify_tls: bool = True
    ca_file: str | None = None


@dataclass(slots=True)
class InfluxV1Sink:
    """`type: influx`, `api: v1`: line protocol POSTed to /write (any InfluxDB 1.x and friends)."""

    url: str
    database: str
    retention_policy: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    precision: str = "ns"
    gzip: bool = False
    verify_tls: bool = True
    ca_file: str | None = None


SinkConfig = InfluxV2Sink | InfluxV1Sink


def safe_url(url: str) -> str:
    """The URL without credentials, query string or fragment: fit for logs and messages."""
    from urllib.parse import urlsplit

    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{p.port}" if p.port else host
    return f"{p.scheme}://{netloc}{p.path}"


def outbox_name(cfg: SinkConfig) -> str:
    """A stable file name per destination, so a restarted process finds its pending points."""
    if isinstance(cfg, InfluxV2Sink):
        ident = f"v2|{safe_url(cfg.url)}|{cfg.org}|{cfg.bucket}"
        short = f"v2-{cfg.bucket}"
    else:
        ident = f"v1|{safe_url(cfg.url)}|{cfg.database}|{cfg.retention_policy or ''}"
        short = f"v1-{cfg.database}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in short)[:40]
    return f"{safe}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"
