"""What the InfluxDB writers and the InfluxQL reader share: the sink configs, URL redaction, auth
and the HTTP pool.

Written once so that writing and reading a store can never disagree: an unset token variable
stops both (before, the reader silently sent no auth and read an empty store), and a URL in a
message never carries credentials or a query string.

The config dataclasses' field names equal the YAML keys, so the config loader constructs them
directly (`type: influx` + `api: v2|v1` selects the class). Secrets are never fields: only the
names of the environment variables that hold them, read when a writer or reader starts.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3


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
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{p.port}" if p.port else host
    return f"{p.scheme}://{netloc}{p.path}"


def secret(name: str | None, what: str) -> str | None:
    """The value of the variable a config key names; an unset one is an error naming the key."""
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"{what}: environment variable {name} is not set")
    return value


def token(cfg: SinkConfig) -> str | None:
    return secret(cfg.token_env, "token_env")


def auth_headers(cfg: SinkConfig) -> dict[str, str]:
    """A token header, else (v1) Basic auth from username/password: never in the URL."""
    tok = token(cfg)
    if tok:
        return {"Authorization": f"Token {tok}"}
    if isinstance(cfg, InfluxV1Sink):
        user = secret(cfg.username_env, "username_env")
        password = secret(cfg.password_env, "password_env")
        if user is not None or password is not None:
            cred = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            return {"Authorization": f"Basic {cred}"}
    return {}


def pool(verify_tls: bool, ca_file: str | None, maxsize: int = 1) -> urllib3.PoolManager:
    """No retries: the outbox (writers) or the caller (reader) decides what a failure means."""
    kw: dict = {"cert_reqs": "CERT_REQUIRED" if verify_tls else "CERT_NONE"}
    if ca_file:
        kw["ca_certs"] = ca_file
    return urllib3.PoolManager(num_pools=2, maxsize=maxsize, retries=False, **kw)
