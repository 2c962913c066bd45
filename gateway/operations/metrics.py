"""Prometheus metrics, read from the live objects at scrape time.

Nothing on the hot path updates a metric: the runners, pipeline, sinks and
alarm manager keep plain counters anyway, and this collector turns them into
metric families when ``/metrics`` is scraped. Each gateway has its own
registry, so several gateways in one process (tests) do not mix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

PREFIX = "community_gateway_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SINK_COUNTERS = (("written", "upstream_written_lines", "Lines the upstream accepted"),
                 ("dropped", "upstream_dropped_lines", "Lines dropped because the buffer was full"),
                 ("rejected", "upstream_rejected_lines", "Lines the upstream refused for good"),
                 ("errors", "upstream_errors", "Failed write attempts"))


def _version() -> str:
    try:
        return metadata.version("community-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


class GatewayCollector(Collector):
    """Every metric of one gateway, computed when scraped."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway
        self._version = _version()

    def collect(self) -> Iterator[Metric]:
        g = self._gateway
        info = _gauge("info", "The gateway's site and version", ["site", "version"])
        info.add_metric([g.site.config.site.id, self._version], 1)
        yield info
        yield from self._devices(g)
        yield from driver_metrics(g.drivers)
        yield from self._pipeline(g)
        yield from self._upstream(g)
        yield from self._mqtt(g)
        yield from self._alarms(g)
        yield from self._reloads(g)

    def _devices(self, g: Gateway) -> Iterator[Metric]:
        labels = ["device", "kind"]
        polls = _counter("device_polls", "Polls (or stream deliveries) per device", labels)
        errors = _counter("device_errors", "Failed polls (or broken streams) per device", labels)
        online = _gauge("device_online", "1 while the device answers, 0 when offline or not yet seen",
                        labels)
        last = _gauge("device_last_success_timestamp_seconds", "When the device last answered",
                      labels)
        response = _gauge("device_response_seconds", "Duration of the last successful poll", labels)
        for runner in g.runners:
            spec = g.site.devices.get(runner.device_id)
            key = [runner.device_id, spec.kind if spec else "unknown"]
            h = runner.health
            polls.add_metric(key, h.polls)
            errors.add_metric(key, h.errors)
            online.add_metric(key, 1 if h.online else 0)
            if h.last_success is not None:
                last.add_metric(key, h.last_success)
            if h.response_time is not None:
                response.add_metric(key, h.response_time)
        yield from (polls, errors, online, last, response)
        requests = _counter("bus_requests", "Modbus transactions per bus", ["bus"])
        for bus_id, bus in g.buses.items():
            requests.add_metric([bus_id], getattr(bus, "requests", 0))
        yield requests

    def _pipeline(self, g: Gateway) -> Iterator[Metric]:
        p = g.pipeline
        depth = _gauge("pipeline_queue_batches", "Polls waiting for the rule engine")
        depth.add_metric([], p.queue.qsize())
        capacity = _gauge("pipeline_queue_capacity", "Bound of the ingest queue, in polls")
        capacity.add_metric([], p.queue.maxsize)
        full = _counter("pipeline_queue_full", "Times a driver waited because the queue was full")
        full.add_metric([], p.queue_full)
        readings = _counter("readings", "Readings through the rules")
        readings.add_metric([], p.readings)
        events = _counter("device_events", "Device events through the rules")
        events.add_metric([], p.events)
        failed = _counter("pipeline_items_failed", "Readings and events skipped: processing raised")
        failed.add_metric([], p.failed)
        altered = _counter("line_protocol_values_altered", "Values the line encoder could not "
                           "carry as given: skipped (NaN, infinite, beyond float) or truncated "
                           "(a string past its cap)", ["how"])
        altered.add_metric(["skipped"], p.encoder.skipped_values)
        altered.add_metric(["truncated"], p.encoder.truncated)
        actions = _counter("actions", "Device writes ordered by rules", ["result"])
        actions.add_metric(["done"], g.actions.done)
        actions.add_metric(["failed"], g.actions.failed)
        yield from (depth, capacity, full, readings, events, failed, altered, actions)

    def _upstream(self, g: Gateway) -> Iterator[Metric]:
        counters = {attr: _counter(name, doc, ["sink"]) for attr, name, doc in SINK_COUNTERS}
        buffered = _gauge("upstream_buffered_lines", "Lines waiting for the upstream", ["sink"])
        last = _gauge("upstream_last_success_timestamp_seconds", "Last accepted write", ["sink"])
        up = _gauge("upstream_up", "0 while the upstream is failing", ["sink"])
        for sink in g.sinks:
            name = sink.name
            stats = sink.stats()
            for attr, family in counters.items():
                if isinstance(stats.get(attr), (int, float)):
                    family.add_metric([name], stats[attr])
            if isinstance(stats.get("buffered"), (int, float)):
                buffered.add_metric([name], stats["buffered"])
            if stats.get("last_success") is not None:
                last.add_metric([name], stats["last_success"])
            up.add_metric([name], 0 if stats["failing"] else 1)
        yield from counters.values()
        yield from (buffered, last, up)
        yield from outbox_metrics(getattr(g, "outbox", None))

    def _mqtt(self, g: Gateway) -> Iterator[Metric]:
        if g.mqtt is None:
            return
        m = g.mqtt
        connected = _gauge("mqtt_connected", "1 while connected to the broker")
        connected.add_metric([], 1 if m.connected else 0)
        pending = _gauge("mqtt_pending_messages", "Alarm messages waiting for the broker")
        pending.add_metric([], m.pending)
        published = _counter("mqtt_published", "Alarm messages published")
        published.add_metric([], m.published)
        rejected = _counter("mqtt_commands_rejected", "Operator commands refused")
        rejected.add_metric([], m.commands_rejected)
        dropped = _counter("mqtt_events_dropped",
                           "Alarm events dropped, oldest first, in a long broker outage")
        dropped.add_metric([], m.events_dropped)
        yield from (connected, pending, published, rejected, dropped)

    def _alarms(self, g: Gateway) -> Iterator[Metric]:
        by_state: Counter[tuple[str, str]] = Counter(
            (str(a.state), "true" if a.acked else "false") for a in g.alarms.open_alarms())
        alarms = _gauge("alarms", "Open alarms by state and acknowledgement", ["state", "acked"])
        for state in ("active", "cleared"):  # always present, so a dashboard sees zeros
            for acked in ("false", "true"):
                by_state.setdefault((state, acked), 0)
        for (state, acked), n in sorted(by_state.items()):
            alarms.add_metric([state, acked], n)
        transitions = _counter("alarm_transitions", "Alarm transitions (raised, cleared, ...)")
        transitions.add_metric([], g.alarms.transitions)
        yield from (alarms, transitions)

    def _reloads(self, g: Gateway) -> Iterator[Metric]:
        reloads = _counter("config_reloads", "Config reloads (SIGHUP) by result", ["result"])
        for result in ("applied", "refused", "failed"):
            reloads.add_metric([result], g.reloads.get(result, 0))
        yield reloads


def driver_metrics(drivers: dict[str, Any]) -> Iterator[Metric]:
    """The drivers' own protocol counters: every number a driver's ``counters()`` returns.

    One family, ``driver_events_total{device, counter}``, so a driver that starts
    counting something new (a codec's ``bad_checksum``, an MQTT device's
    ``malformed_json``) shows up without a change here. Drivers without
    ``counters()`` export nothing. Modbus devices also say how many of their
    slaves are failing while the others answer (a gauge: it goes down again).
    """
    events = _counter("driver_events", "Protocol counters the drivers keep (frames, bad "
                      "checksums, malformed messages, requests, ...)", ["device", "counter"])
    failing = _gauge("driver_failing_slaves",
                     "Slaves of a device not answering at the last poll while others did",
                     ["device"])
    for device_id, driver in sorted(drivers.items()):
        counters = driver.counters() if callable(getattr(driver, "counters", None)) else {}
        for name, value in sorted(counters.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                events.add_metric([device_id, name], value)
        slaves = getattr(driver, "failing_slaves", None)
        if isinstance(slaves, frozenset):
            failing.add_metric([device_id], len(slaves))
    yield events
    yield failing


def outbox_metrics(outbox: Any) -> Iterator[Metric]:
    """Adapter for the durable outbox: every number in its ``stats()`` as a metric.

    Keys ending in ``_total`` (they only grow) become counters, other numbers
    gauges; a nested ``sinks: {name: {...}}`` becomes the same per sink, labelled
    ``sink``. New keys the outbox adds show up without a change here.
    """
    stats = outbox.stats() if callable(getattr(outbox, "stats", None)) else None
    if not isinstance(stats, dict):
        return
    yield from _numbers_as_metrics("outbox_", stats, [], [])
    sinks = stats.get("sinks")
    if isinstance(sinks, dict):
        families: dict[str, Metric] = {}
        for name, per_sink in sorted(sinks.items()):
            if not isinstance(per_sink, dict):
                continue
            for metric in _numbers_as_metrics("outbox_sink_", per_sink, ["sink"], [str(name)]):
                family = families.setdefault(metric.name, metric)
                if family is not metric:
                    family.samples.extend(metric.samples)
        yield from families.values()


def _numbers_as_metrics(prefix: str, stats: dict[str, Any], labels: list[str],
                        values: list[str]) -> Iterator[Metric]:
    for key, value in sorted(stats.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = prefix + key.removesuffix("_total")
        if key.endswith("_total"):
            family: Metric = _counter(name, f"outbox stats: {key}", labels)
        else:
            family = _gauge(name, f"outbox stats: {key}", labels)
        family.add_metric(values, value)
        yield family


def metrics_registry(gateway: Gateway) -> CollectorRegistry:
    """A registry holding this gateway's collector (and nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
