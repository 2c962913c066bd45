"""Prometheus metrics, read from the live objects at scrape time.

Nothing on the hot path updates a metric: the runners, pipeline, sinks and
alarm manager keep plain counters anyway, and this collector turns them into
metric families when ``/metrics`` is scraped. Each gateway has its own
registry, so several gateways in one process (tests) do not mix.

How counters are named, in the parts and here (one scheme for all):

- A count is named after what it counts, the same in the attribute, in the
  part's numbers and in the metric: ``written``, ``dropped``, ``quarantined``
  (rows refused for good and set aside; never "rejected"), ``errors`` (failed
  attempts), ``frames_ok``. Outbound data is counted in rows (an outbox row is
  one line of line protocol or one JSON document), never "lines".
- Drivers hand out ``counters()``: only counts, which only grow, so their keys
  carry no suffix; each key becomes the ``counter`` label of one family,
  ``driver_events_total{device, counter}``.
- Sink runners and the outbox hand out ``stats()``: counts and gauges mixed, so
  the key says which: a count that only grows ends in ``_total``, a gauge ends
  in its unit (``_rows``, ``_bytes``, ``_seconds``, ``_timestamp_seconds``), a
  flag is 0 or 1 (``up``, ``draining``, ``degraded``). Every number becomes
  ``community_gateway_outbox_<key>`` or ``community_gateway_sink_<key>{sink}``
  as it is, so a part that starts counting something new shows up here without
  a change, and the same thing has the same name in both.
- Metric names are ``community_gateway_<part>_<what>[_<unit>]``, with ``_total``
  for counters (added by the exposition); labels name the instance (``device``,
  ``sink``, ``bus``) or split one count (``result``, ``state``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any

# The exposition format is ours (prometheus_text), not prometheus_client's: issue 16.
from gateway.operations.prometheus_text import (
    CONTENT_TYPE,
    CollectorRegistry,
    MetricFamily,
    render,
)

if TYPE_CHECKING:
    from gateway.views import RunningParts

__all__ = ["CONTENT_TYPE", "CollectorRegistry", "metrics_registry", "render"]

PREFIX = "community_gateway_"
# What each sink and outbox number means (the HELP text); a key not listed gets a generic one.
HELP = {
    "written_total": "Rows the upstream accepted",
    "dropped_total": "Rows dropped for the outbox's budget before they were sent",
    "quarantined_total": "Rows the upstream refused for good, set aside in the quarantine",
    "errors_total": "Failed attempts (writes to the upstream; commits to the outbox file)",
    "committed_total": "Rows committed to the outbox",
    "lag_rows": "Rows committed but not yet confirmed by the upstream",
    "rows": "Rows in the outbox",
    "staged_rows": "Rows taken from the pipeline, not yet committed",
    "cursor": "Id of the last row the upstream confirmed",
    "committed_id": "Id of the last committed row",
    "oldest_unsent_age_seconds": "Age of the oldest row not yet sent",
    "last_success_timestamp_seconds": "When the upstream last accepted a write",
    "up": "0 while writes to the upstream fail",
    "draining": "1 while a backlog drains (paced)",
    "used_bytes": "Size of the outbox file",
    "budget_bytes": "The outbox's size budget (outbox.max_mb)",
    "live_rate_rows_per_second": "Rows committed per second lately",
    "degraded": "1 while the outbox cannot use its file",
    "overflow": "1 while readings are dropped for the budget",
}


def _version() -> str:
    try:
        return metadata.version("community-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


def _counter(name: str, doc: str, labels: list[str] | None = None) -> MetricFamily:
    return MetricFamily(PREFIX + name, doc, "counter", labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> MetricFamily:
    return MetricFamily(PREFIX + name, doc, "gauge", labels)


class GatewayCollector:
    """Every metric of one gateway, computed when scraped."""

    def __init__(self, gateway: RunningParts):
        self._gateway = gateway
        self._version = _version()

    def collect(self) -> Iterator[MetricFamily]:
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
        yield from fire_centre_metrics(getattr(g, "fire_centre", None))
        yield from process_metrics(getattr(g, "process_probe", None))

    def _devices(self, g: RunningParts) -> Iterator[MetricFamily]:
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

    def _pipeline(self, g: RunningParts) -> Iterator[MetricFamily]:
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

    def _upstream(self, g: RunningParts) -> Iterator[MetricFamily]:
        yield from sink_metrics(g.sinks)
        yield from outbox_metrics(g.outbox)

    def _mqtt(self, g: RunningParts) -> Iterator[MetricFamily]:
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

    def _alarms(self, g: RunningParts) -> Iterator[MetricFamily]:
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
        # The side channels: bounded, and what their bounds cost is counted.
        pending = _gauge("webhook_pending", "Transitions waiting for the webhook", ["webhook"])
        dropped = _counter("webhook_dropped", "Transitions dropped from a full webhook queue",
                           ["webhook"])
        for webhook, label in zip(g.webhooks, webhook_labels(g.webhooks)):
            pending.add_metric([label], webhook.pending)
            dropped.add_metric([label], webhook.dropped)
        yield from (pending, dropped)
        yield from _numbers_as_metrics("alarm_store_", g.alarm_store.stats(), [], [])

    def _reloads(self, g: RunningParts) -> Iterator[MetricFamily]:
        reloads = _counter("config_reloads", "Config reloads (SIGHUP) by result", ["result"])
        for result in ("applied", "refused", "failed"):
            reloads.add_metric([result], g.reloads.get(result, 0))
        yield reloads


def webhook_labels(webhooks: list[Any]) -> list[str]:
    """Each webhook's ``webhook`` label: its shown URL, with `` #2``, `` #3`` ... added for
    the second and later webhooks of one shown URL. The shown URL hides the query and
    user info, so two webhooks differing only there (``?token=a``, ``?token=b``) would
    else be one series twice, and a scraper refuses such a scrape. (A shown URL never
    holds ``#``: it would start the fragment, which is not shown.)"""
    seen: Counter[str] = Counter()
    labels = []
    for webhook in webhooks:
        seen[webhook.shown_url] += 1
        n = seen[webhook.shown_url]
        labels.append(webhook.shown_url if n == 1 else f"{webhook.shown_url} #{n}")
    return labels


def driver_metrics(drivers: dict[str, Any]) -> Iterator[MetricFamily]:
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


def sink_metrics(sinks: list[Any]) -> Iterator[MetricFamily]:
    """Every number in each sink runner's ``stats()`` as ``sink_<key>{sink}``."""
    families: dict[str, MetricFamily] = {}
    for sink in sinks:
        for metric in _numbers_as_metrics("sink_", sink.stats(), ["sink"], [sink.name]):
            family = families.setdefault(metric.name, metric)
            if family is not metric:
                family.samples.extend(metric.samples)
    yield from families.values()


def outbox_metrics(outbox: Any) -> Iterator[MetricFamily]:
    """Every number in the durable outbox's ``stats()`` as ``outbox_<key>`` (none without
    sinks, when there is no outbox)."""
    if outbox is not None:
        yield from _numbers_as_metrics("outbox_", outbox.stats(), [], [])


def _numbers_as_metrics(prefix: str, stats: dict[str, Any], labels: list[str],
                        values: list[str]) -> Iterator[MetricFamily]:
    """``_total`` keys as counters, other numbers as gauges (the scheme at the top)."""
    for key, value in sorted(stats.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = prefix + key.removesuffix("_total")
        doc = HELP.get(key, f"{prefix.rstrip('_')} {key}")
        if key.endswith("_total"):
            family: MetricFamily = _counter(name, doc, labels)
        else:
            family = _gauge(name, doc, labels)
        family.add_metric(values, value)
        yield family


def process_metrics(probe: Any) -> Iterator[MetricFamily]:
    """Adapter for the process probe (gateway.operations.process_probe): event-loop lag
    over the last minute and the bytes the process wrote to disk."""
    stats = probe.stats() if callable(getattr(probe, "stats", None)) else None
    if stats:
        yield from _numbers_as_metrics("process_", stats, [], [])


def fire_centre_metrics(service: Any) -> Iterator[MetricFamily]:
    """The fire remote-monitoring centre link: every number of its ``stats()``
    (``fire_centre_connected``, ``fire_centre_queued``, ``fire_centre_denied_total``, ...)."""
    stats = service.stats() if service is not None else None
    if isinstance(stats, dict):
        yield from _numbers_as_metrics("fire_centre_", stats, [], [])


def metrics_registry(gateway: RunningParts) -> CollectorRegistry:
    """A registry holding this gateway's collector (and nothing global)."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway).collect)
    return registry
