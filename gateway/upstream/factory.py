"""Builds the upstream side from a site config: the outbox, and a runner per configured sink.

Sinks, each configured on its own: ``influxdb`` (InfluxDB v2 write API),
``mqtt.telemetry`` (JSON per reading on the site broker, QoS 1) and
``local_series`` (a line-protocol file). No sink, no outbox: nothing is stored
that nobody would read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.loader import Site
from gateway.outbox.location import outbox_path
from gateway.outbox.memory import MemoryOutbox
from gateway.outbox.store import SqliteOutbox
from gateway.outbox.writer import AlarmHook, OutboxWriter
from gateway.upstream.influx import InfluxSink
from gateway.upstream.local_file import LocalFileSink
from gateway.upstream.mqtt_telemetry import MqttTelemetrySink
from gateway.upstream.sink_runner import SinkRunner
from gateway.upstream.telemetry_json import TelemetryEncoder

LOCAL_FILE_BATCH = 5000

Reveal = Callable[[object, str, Site], "str | None"]  # (secret, key path, site) -> value


@dataclass
class Upstream:
    """What the gateway wires: the outbox (None without sinks), the sink runners, and
    the telemetry encoder the pipeline uses when a sink wants JSON."""

    outbox: OutboxWriter | None
    sinks: list[SinkRunner] = field(default_factory=list)
    telemetry: TelemetryEncoder | None = None

    @property
    def lines(self) -> bool:
        """Whether a sink reads line protocol (else the pipeline encodes none)."""
        return any(r.payload == "line" for r in self.sinks)


def build_upstream(site: Site, *, clock, reveal: Reveal, on_alarm: AlarmHook) -> Upstream:
    """The outbox and the sink runners for ``site`` (no I/O: the outbox opens in ``run``)."""
    cfg = site.config
    ob = cfg.outbox
    if ob.store == "memory":
        store = MemoryOutbox(max_rows=cfg.pipeline.upstream_buffer)
    else:
        store = SqliteOutbox(path=outbox_path(cfg, site.path), budget_bytes=int(ob.max_mb * 1024 * 1024))
    outbox = OutboxWriter(store=store, commit_interval=ob.commit_interval,
                          commit_rows=ob.commit_rows, max_staged=cfg.pipeline.upstream_buffer,
                          clock=clock, on_alarm=on_alarm)

    def runner(sink, batch_size: int, flush_interval: float) -> SinkRunner:
        return SinkRunner(sink, outbox=outbox, batch_size=batch_size,
                          flush_interval=flush_interval, clock=clock,
                          drain_rate_multiple=ob.drain_rate_multiple,
                          drain_min_rate=ob.drain_min_rate)

    up = Upstream(outbox=outbox)
    if cfg.influxdb is not None:
        token = reveal(cfg.influxdb.token, "influxdb.token", site)
        up.sinks.append(runner(InfluxSink(cfg.influxdb, token), cfg.influxdb.batch_size,
                               cfg.influxdb.flush_interval))
    if cfg.mqtt is not None and cfg.mqtt.telemetry is not None:
        telemetry = cfg.mqtt.telemetry
        sink = MqttTelemetrySink(config=cfg.mqtt, site_id=cfg.site.id,
                                 password=reveal(cfg.mqtt.password, "mqtt.password", site))
        up.sinks.append(runner(sink, telemetry.batch_size, telemetry.flush_interval))
        up.telemetry = TelemetryEncoder()
    if cfg.local_series is not None:
        up.sinks.append(runner(LocalFileSink(cfg.local_series.path, cfg.local_series.max_mb),
                               LOCAL_FILE_BATCH, 1.0))
    if not up.sinks:
        up.outbox = None
    return up
