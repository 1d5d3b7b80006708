"""Where results are written and where they are read back, decided in one place.

A `Telemetry` names one destination: the network sinks (InfluxDB writers, each behind its
outbox), or, with none, the embedded store file. From it come the sink, the `Recorder` in front
of it and the `Query` over the same destination, so what a command writes is what it and the
alert engine read. Every command (through voicepulse/wiring.py, from a voicepulse.yaml), the
probe service and the Locust master (from its plan) build their telemetry here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .embedded import DEFAULT_PATH, EmbeddedStore
from .outbox import Outbox
from .query import Query, open_query
from .recorder import FanOut, Recorder, Sink
from .sinks import DEFAULT_OUTBOX_DIR, SinkConfig, outbox_name
from .transports import transport_for


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
    outbox_dir = outbox_dir or DEFAULT_OUTBOX_DIR
    os.makedirs(outbox_dir, exist_ok=True)
    writers: list[Sink] = []
    names: list[str] = []
    for cfg in sinks:
        name = outbox_name(cfg)
        writers.append(
            Outbox(
                os.path.join(outbox_dir, name + ".sqlite"),
                transport_for(cfg),
                precision=getattr(cfg, "precision", "ns"),
                name=name,
                **outbox_options,
            )
        )
        names.append(name)
    if len(writers) == 1:
        return writers[0]
    return FanOut(writers, names)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One destination: `sinks` (written to all, read from the first), or with none the
    embedded store `store`. `outbox` is the folder of the network sinks' outboxes. None means
    the default (voicepulse.db, .voicepulse/outbox)."""

    sinks: tuple[SinkConfig, ...] = ()
    store: str | None = DEFAULT_PATH
    outbox: str | None = DEFAULT_OUTBOX_DIR

    @property
    def where(self) -> str:
        """For messages: `InfluxDB` or `the embedded store FILE`."""
        return "InfluxDB" if self.sinks else f"the embedded store {self.store or DEFAULT_PATH}"

    def sink(self, **outbox_options) -> Sink:
        return build_sink(list(self.sinks), store_path=self.store, outbox_dir=self.outbox,
                          **outbox_options)

    def recorder(self, interval_s: float = 10.0, *, aggregate: bool = True,
                 **outbox_options) -> Recorder:
        """A started recorder over a new sink; the caller closes it (which closes the sink)."""
        return Recorder(self.sink(**outbox_options), interval_s, aggregate=aggregate)

    def query(self) -> Query:
        """InfluxQL against the first sink, else the embedded store."""
        return open_query(store_path=self.store, influx=self.sinks[0] if self.sinks else None)
