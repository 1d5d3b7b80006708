"""The YAML `sinks:` list as configs (defined in `telemetry/influx.py`), and the outbox file
name of each destination.

`telemetry/wiring.py` assembles the writers from these (`build_sink`).
"""

from __future__ import annotations

import hashlib

from .influx import InfluxV1Sink, InfluxV2Sink, SinkConfig, safe_url

__all__ = ["DEFAULT_OUTBOX_DIR", "InfluxV1Sink", "InfluxV2Sink", "SinkConfig", "outbox_name",
           "safe_url"]

DEFAULT_OUTBOX_DIR = ".voicepulse/outbox"


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
