"""What a command stands on: the config it reads and the telemetry built from that config, once.

Every command (probe, results, serve, alerts check, demo, load, report) asks here, so the same
options mean the same destination for writing and for reading:
- `--config FILE`, else ./voicepulse.yaml, else the built-in defaults (`load_or_default`);
- `--store FILE` is the embedded store FILE, for writing and reading alike, whatever sinks the
  config names; without it, the config's sinks (InfluxDB), else its `store` (`telemetry_for`).

The assembly itself (sinks, outboxes, recorder, query) is `telemetry.wiring`, which the Locust
master also uses from its plan (loadtests may not import voicepulse).
"""

from __future__ import annotations

from pathlib import Path

from telemetry.wiring import Telemetry
from voicepulse import config as cfgmod
from voicepulse.configkit import ConfigError
from voicepulse.errors import ConfigErrorExit

LOCAL_CONFIG = "voicepulse.yaml"


def load_or_default(config_path: str | None, *, defaults: bool = True) -> cfgmod.Config:
    """`config_path`, else ./voicepulse.yaml, else (with `defaults`) the built-in simulator
    config. A bad or missing file stops the command with its one-line message (exit 2)."""
    try:
        if config_path:
            return cfgmod.load_config(config_path)
        if Path(LOCAL_CONFIG).is_file():
            return cfgmod.load_config(LOCAL_CONFIG)
    except ConfigError as exc:
        raise ConfigErrorExit(str(exc)) from None
    if not defaults:
        raise ConfigErrorExit(f"no config: pass --config FILE (or put a {LOCAL_CONFIG} here)")
    return cfgmod.default_config()


def telemetry_for(cfg: cfgmod.Config, store: str | None = None) -> Telemetry:
    """The destination of a config; `store` (a --store option) overrides its sinks."""
    if store:
        return Telemetry(store=store, outbox=cfg.outbox)
    return Telemetry(sinks=tuple(cfg.sinks), store=cfg.store, outbox=cfg.outbox)
