"""Sink configuration (the YAML `sinks:` list) and `build_sink`, which assembles the writers.

The config dataclasses' field names equal the YAML keys, so the config loader constructs them
directly (`type: influx` + `api: v2|v1` selects the class). Secrets are never fields: only the
names of the environment variables that hold them, read when the writer starts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from .embedded import DEFAULT_PATH, EmbeddedStore
from .recorder import FanOut, Sink

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


def build_sink(
    sinks: list[SinkConfig],
    *,
    store_path: str | None = DEFAULT_PATH,
    outbox_dir: str | None = DEFAULT_OUTBOX_DIR,
    **outbox_options,
) -> Sink:
    """The embedded store when `sinks` is empty; otherwise one outbox-backed writer per network
    sink, fanned out. `outbox_options` go to every `Outbox` (batch_points, max_points, ...)."""
    if not sinks:
        return EmbeddedStore(store_path or DEFAULT_PATH)
    from .outbox import Outbox
    from .transports import transport_for

    outbox_dir = outbox_dir or DEFAULT_OUTBOX_DIR
    os.makedirs(outbox_dir, exist_ok=True)
    writers: list[Sink] = []
    names: list[str] = []
    for cfg in sinks:
        name = outbox_name(cfg)
        transport = transport_for(cfg)
        writers.append(
            Outbox(
                os.path.join(outbox_dir, name + ".sqlite"),
                transport,
                precision=getattr(cfg, "precision", "ns"),
                name=name,
                **outbox_options,
            )
        )
        names.append(name)
    if len(writers) == 1:
        return writers[0]
    return FanOut(writers, names)
