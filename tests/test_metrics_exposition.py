"""/metrics without prometheus_client (issue 16): our text exposition, read by its parser.

prometheus_client is a test dependency only: its parser reads what a running gateway
serves (every family and sample must survive, hostile label values from the config
included), and its ``generate_latest`` is what our exposition must match byte for
byte. The names, types, HELP texts and labels a gateway exported with
prometheus_client are pinned below (taken from its /metrics before the change).
"""

from __future__ import annotations

import ast
import logging
import math
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry as ClientRegistry
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from gateway.operations.metrics import CONTENT_TYPE, metrics_registry, webhook_labels
from gateway.operations.prometheus_text import (
    SKIPPED,
    CollectorRegistry,
    MetricFamily,
    exposition,
    format_value,
    render,
)
from harness import running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer

ROOT = Path(__file__).resolve().parents[1]
# A Modbus device's kind is free text in the site file: quotes, a backslash, a newline,
# Chinese and an emoji all reach the `kind` label.
KIND = 'Lade"station\\B3\n东区 ⚡'

# Wire name -> (type, label names, HELP) as the gateway wrote them with prometheus_client
# (the site below: a Modbus cabinet, a synthetic meter, MQTT, a local series file, two
# webhooks). A family may be added; none of these may change or go.
PINNED = {
    "community_gateway_info": ("gauge", ("site", "version"), "The gateway's site and version"),
    "community_gateway_device_polls_total": ("counter", ("device", "kind"), "Polls (or stream deliveries) per device"),
    "community_gateway_device_errors_total": ("counter", ("device", "kind"), "Failed polls (or broken streams) per device"),
    "community_gateway_device_online": ("gauge", ("device", "kind"), "1 while the device answers, 0 when offline or not yet seen"),
    "community_gateway_device_last_success_timestamp_seconds": ("gauge", ("device", "kind"), "When the device last answered"),
    "community_gateway_device_response_seconds": ("gauge", ("device", "kind"), "Duration of the last successful poll"),
    "community_gateway_bus_requests_total": ("counter", ("bus",), "Modbus transactions per bus"),
    "community_gateway_driver_events_total": ("counter", ("counter", "device"), "Protocol counters the drivers keep (frames, bad checksums, malformed messages, requests, ...)"),
    "community_gateway_driver_failing_slaves": ("gauge", ("device",), "Slaves of a device not answering at the last poll while others did"),
    "community_gateway_pipeline_queue_batches": ("gauge", (), "Polls waiting for the rule engine"),
    "community_gateway_pipeline_queue_capacity": ("gauge", (), "Bound of the ingest queue, in polls"),
    "community_gateway_pipeline_queue_full_total": ("counter", (), "Times a driver waited because the queue was full"),
    "community_gateway_readings_total": ("counter", (), "Readings through the rules"),
    "community_gateway_device_events_total": ("counter", (), "Device events through the rules"),
    "community_gateway_pipeline_items_failed_total": ("counter", (), "Readings and events skipped: processing raised"),
    "community_gateway_line_protocol_values_altered_total": ("counter", ("how",), "Values the line encoder could not carry as given: skipped (NaN, infinite, beyond float) or truncated (a string past its cap)"),
    "community_gateway_actions_total": ("counter", ("result",), "Device writes ordered by rules"),
    "community_gateway_sink_cursor": ("gauge", ("sink",), "Id of the last row the upstream confirmed"),
    "community_gateway_sink_draining": ("gauge", ("sink",), "1 while a backlog drains (paced)"),
    "community_gateway_sink_dropped_total": ("counter", ("sink",), "Rows dropped for the outbox's budget before they were sent"),
    "community_gateway_sink_errors_total": ("counter", ("sink",), "Failed attempts (writes to the upstream; commits to the outbox file)"),
    "community_gateway_sink_lag_rows": ("gauge", ("sink",), "Rows committed but not yet confirmed by the upstream"),
    "community_gateway_sink_last_success_timestamp_seconds": ("gauge", ("sink",), "When the upstream last accepted a write"),
    "community_gateway_sink_oldest_unsent_age_seconds": ("gauge", ("sink",), "Age of the oldest row not yet sent"),
    "community_gateway_sink_quarantined_total": ("counter", ("sink",), "Rows the upstream refused for good, set aside in the quarantine"),
    "community_gateway_sink_up": ("gauge", ("sink",), "0 while writes to the upstream fail"),
    "community_gateway_sink_written_total": ("counter", ("sink",), "Rows the upstream accepted"),
    "community_gateway_outbox_budget_bytes": ("gauge", (), "The outbox's size budget (outbox.max_mb)"),
    "community_gateway_outbox_committed_id": ("gauge", (), "Id of the last committed row"),
    "community_gateway_outbox_committed_total": ("counter", (), "Rows committed to the outbox"),
    "community_gateway_outbox_degraded": ("gauge", (), "1 while the outbox cannot use its file"),
    "community_gateway_outbox_dropped_total": ("counter", (), "Rows dropped for the outbox's budget before they were sent"),
    "community_gateway_outbox_errors_total": ("counter", (), "Failed attempts (writes to the upstream; commits to the outbox file)"),
    "community_gateway_outbox_live_rate_rows_per_second": ("gauge", (), "Rows committed per second lately"),
    "community_gateway_outbox_oldest_unsent_age_seconds": ("gauge", (), "Age of the oldest row not yet sent"),
    "community_gateway_outbox_overflow": ("gauge", (), "1 while readings are dropped for the budget"),
    "community_gateway_outbox_quarantined_total": ("counter", (), "Rows the upstream refused for good, set aside in the quarantine"),
    "community_gateway_outbox_rows": ("gauge", (), "Rows in the outbox"),
    "community_gateway_outbox_skipped_rows_total": ("counter", (), "outbox skipped_rows_total"),
    "community_gateway_outbox_staged_rows": ("gauge", (), "Rows taken from the pipeline, not yet committed"),
    "community_gateway_outbox_used_bytes": ("gauge", (), "Size of the outbox file"),
    "community_gateway_outbox_written_rows_total": ("counter", (), "outbox written_rows_total"),
    "community_gateway_mqtt_connected": ("gauge", (), "1 while connected to the broker"),
    "community_gateway_mqtt_pending_messages": ("gauge", (), "Alarm messages waiting for the broker"),
    "community_gateway_mqtt_published_total": ("counter", (), "Alarm messages published"),
    "community_gateway_mqtt_commands_rejected_total": ("counter", (), "Operator commands refused"),
    "community_gateway_mqtt_events_dropped_total": ("counter", (), "Alarm events dropped, oldest first, in a long broker outage"),
    "community_gateway_alarms": ("gauge", ("acked", "state"), "Open alarms by state and acknowledgement"),
    "community_gateway_alarm_transitions_total": ("counter", (), "Alarm transitions (raised, cleared, ...)"),
    "community_gateway_webhook_pending": ("gauge", ("webhook",), "Transitions waiting for the webhook"),
    "community_gateway_webhook_dropped_total": ("counter", ("webhook",), "Transitions dropped from a full webhook queue"),
    "community_gateway_alarm_store_history_dropped_total": ("counter", (), "alarm_store history_dropped_total"),
    "community_gateway_alarm_store_history_pruned_total": ("counter", (), "alarm_store history_pruned_total"),
    "community_gateway_alarm_store_history_rows": ("gauge", (), "alarm_store history_rows"),
    "community_gateway_alarm_store_pending": ("gauge", (), "alarm_store pending"),
    "community_gateway_alarm_store_unwritable": ("gauge", (), "alarm_store unwritable"),
    "community_gateway_alarm_store_write_errors_total": ("counter", (), "alarm_store write_errors_total"),
    "community_gateway_alarm_store_written_total": ("counter", (), "Rows the upstream accepted"),
    "community_gateway_config_reloads_total": ("counter", ("result",), "Config reloads (SIGHUP) by result"),
    "community_gateway_process_disk_write_bytes_per_hour": ("gauge", (), "process disk_write_bytes_per_hour"),
    "community_gateway_process_disk_write_bytes_total": ("counter", (), "process disk_write_bytes_total"),
    "community_gateway_process_event_loop_lag_max_seconds": ("gauge", (), "process event_loop_lag_max_seconds"),
    "community_gateway_process_event_loop_lag_p99_seconds": ("gauge", (), "process event_loop_lag_p99_seconds"),
    "community_gateway_process_event_loop_stalls_total": ("counter", (), "process event_loop_stalls_total"),
}
# Families whose label values are fixed (dashboards select on them), as they were.
FIXED_LABELS = {
    "community_gateway_alarms": {(("acked", a), ("state", s))
                                 for s in ("active", "cleared") for a in ("false", "true")},
    "community_gateway_config_reloads_total": {(("result", r),)
                                               for r in ("applied", "refused", "failed")},
    "community_gateway_actions_total": {(("result", "done"),), (("result", "failed"),)},
    "community_gateway_line_protocol_values_altered_total": {(("how", "skipped"),),
                                                             (("how", "truncated"),)},
}


def wire_name(family) -> str:
    """The name a scraper sees on the TYPE line (a parsed counter drops its ``_total``)."""
    return family.name + "_total" if family.type == "counter" else family.name


def series_of(family) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return [(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples]


def same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def client_text(families: list[MetricFamily]) -> bytes:
    """What prometheus_client's generate_latest writes for the same families."""
    converted = []
    for f in families:
        cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
        family = cls(f.name, f.documentation, labels=list(f.labelnames))
        for sample in f.samples:
            family.add_metric([sample.labels[k] for k in f.labelnames], sample.value)
        converted.append(family)

    class Snapshot:
        def collect(self):
            return converted

    registry = ClientRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


def hostile_site(site_id: str, *, http_port: int, modbus_port: int, mqtt_port: int,
                 webhook_port: int, tmp_path: Path) -> dict:
    # Two webhooks whose shown URLs are equal: the query (a token) is hidden in labels.
    hook = f'http://127.0.0.1:{webhook_port}/hook/"q"\\x/东'
    return {
        "site": {"id": site_id},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "local_series": {"path": str(tmp_path / "series.lp")},
        "buses": [{"id": "line", "type": "modbus_tcp", "host": "127.0.0.1", "port": modbus_port}],
        "devices": [
            {"id": "charger-1", "type": "modbus", "bus": "line", "profile": "ev-cabinet",
             "channels": 2, "poll_interval": 0.1, "kind": KIND},
            {"id": "meter-a", "type": "synthetic", "kind": "meter", "fields": ["power"],
             "poll_interval": 0.05},
        ],
        "rules": [{"id": "always", "type": "threshold", "select": {"devices": ["meter-a"]},
                   "field": "power", "above": -1, "severity": 2}],
        "webhooks": [{"url": hook + "?token=a"}, {"url": hook + "?token=b"}],
    }


async def test_a_gateways_metrics_read_back_whole_with_hostile_labels(
        tmp_path, free_port, unique_id, mosquitto) -> None:
    port = free_port()
    model = CabinetModel(ports=2, scenario="normal", scenario_port=1, seed=5)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = hostile_site(unique_id, http_port=port, modbus_port=srv.port,
                           mqtt_port=mosquitto.port, webhook_port=free_port(), tmp_path=tmp_path)
        async with running_gateway(write_site(tmp_path, raw)) as gw, aiohttp.ClientSession() as s:
            await wait_until(lambda: gw.http.listening and gw.mqtt.connected
                             and all(r.health.polls > 2 for r in gw.runners)
                             and gw.alarms.open_alarms(), 10, "polled, connected, an alarm")
            async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"] == CONTENT_TYPE
                text = await r.text()
            # One moment's families, for the exact round trip below.
            families = list(metrics_registry(gw).collect())
            shown = gw.webhooks[0].shown_url

    # What a scraper reads from the HTTP answer: today's names, types, HELP and labels.
    parsed = list(text_string_to_metric_families(text))
    by_name = {wire_name(f): f for f in parsed}
    assert len(by_name) == len(parsed), "a family name written twice"
    for name, (typ, labels, doc) in PINNED.items():
        family = by_name[name]
        assert (family.type, family.documentation) == (typ, doc), name
        assert {tuple(sorted(s.labels)) for s in family.samples} <= {labels}, name
    for name, expected in FIXED_LABELS.items():
        assert {tuple(sorted(s.labels.items())) for s in by_name[name].samples} == expected
    for name, family in by_name.items():  # the naming scheme holds for any family added
        assert name.startswith("community_gateway_"), name
        assert (family.type == "counter") == name.endswith("_total"), name
        assert all(s.name == name for s in family.samples), name
    # No series twice: prometheus_client wrote both webhooks under one label value.
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in parsed for s in f.samples]
    assert len(series) == len(set(series))
    assert '"q"\\x/东' in shown and shown.endswith("?...")
    pending = {s.labels["webhook"]: s.value
               for s in by_name["community_gateway_webhook_pending"].samples}
    assert pending.keys() == {shown, shown + " #2"} and min(pending.values()) >= 1
    # The hostile kind comes back as written, on every device family.
    for name in ("community_gateway_device_polls_total", "community_gateway_device_online"):
        kinds = {s.labels["device"]: s.labels["kind"] for s in by_name[name].samples}
        assert kinds == {"charger-1": KIND, "meter-a": "meter"}
    polls = {s.labels["device"]: s.value
             for s in by_name["community_gateway_device_polls_total"].samples}
    assert min(polls.values()) > 2
    assert by_name["community_gateway_info"].samples[0].labels["site"] == unique_id
    assert by_name["community_gateway_mqtt_connected"].samples[0].value == 1

    # One moment's families: every family and sample survives the parser exactly, and
    # the bytes are prometheus_client's for the same families.
    ours = exposition(families)
    assert ours == client_text(families)
    back = list(text_string_to_metric_families(ours.decode()))
    assert [(wire_name(f), f.type, f.documentation) for f in back] == \
           [(f.exposed_name, f.type, f.documentation) for f in families]
    for mine, read in zip(families, back):
        expected, got = series_of(mine), series_of(read)
        assert [k[:2] for k in got] == [k[:2] for k in expected], mine.name
        assert all(same_value(a[2], b[2]) for a, b in zip(got, expected)), mine.name


# -- the format, without a gateway -----------------------------------------------

NUMBERS = [0, 1, 12, -3, 0.5, -0.0, 1e-9, 123456.0, 1234567.0, 1796145227.2798605, 2**53 + 1,
           1e300, -1e20, float("nan"), float("inf"), float("-inf"), True]


def test_values_are_spelled_as_prometheus_spells_them() -> None:
    assert [format_value(v) for v in (float("nan"), float("inf"), float("-inf"), 12, 0.5,
                                      1796145227.2798605, 1e9)] == \
           ["NaN", "+Inf", "-Inf", "12.0", "0.5", "1.7961452272798605e+09", "1e+09"]
    family = MetricFamily("x", "values", "gauge", ["n"])
    for i, v in enumerate(NUMBERS):
        family.add_metric([str(i)], v)
    assert exposition([family]) == client_text([family])
    [back] = text_string_to_metric_families(exposition([family]).decode())
    assert all(same_value(s.value, float(v)) for s, v in zip(back.samples, NUMBERS))


def test_label_values_and_help_are_escaped() -> None:
    family = MetricFamily("community_gateway_device_polls", 'HELP with \\ and\nnewline, "quotes" 东',
                          "counter", ["device", "kind"])
    hostile = [KIND, "", "\\", '"', "\n", "a\\nb", '}{,="', "\r\t\x00", "🚲 东区 3号楼", "\u2028"]
    for i, value in enumerate(hostile):
        family.add_metric([f"d{i}", value], i)
    text = exposition([family])
    assert text == client_text([family])
    assert (b'# HELP community_gateway_device_polls_total HELP with \\\\ and\\nnewline, '
            b'"quotes" \xe4\xb8\x9c\n') in text
    assert b'kind="Lade\\"station\\\\B3\\n\xe4\xb8\x9c' in text
    [back] = text_string_to_metric_families(text.decode())
    assert back.documentation == family.documentation
    assert [s.labels["kind"] for s in back.samples] == hostile
    assert [s.name for s in back.samples] == ["community_gateway_device_polls_total"] * len(hostile)


def test_a_lone_surrogate_from_yaml_does_not_fail_the_scrape() -> None:
    # PyYAML turns "\ud800" in a double-quoted string into a lone surrogate, which
    # prometheus_client could not encode (the whole /metrics failed).
    family = MetricFamily("x", "h", "gauge", ["kind"])
    family.add_metric(["a\ud800b"], 1)
    [back] = text_string_to_metric_families(exposition([family]).decode())
    assert back.samples[0].labels == {"kind": "a?b"}


label_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
# The parsers drop blanks around a HELP text (ours have none).
help_text = label_text.filter(lambda text: text == text.strip())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["counter", "gauge"]), help_text,
                          st.lists(st.tuples(label_text, st.floats() | st.integers(-2**62, 2**62)),
                                   max_size=4)),
                max_size=4))
def test_any_families_read_back_and_match_prometheus_client(spec) -> None:
    families = []
    for i, (typ, doc, samples) in enumerate(spec):
        family = MetricFamily(f"m{i}", doc, typ, ["l"])
        for j, (label, value) in enumerate(samples):
            family.add_metric([f"{j}:{label}"], value)  # distinct series
        families.append(family)
    text = exposition(families)
    assert text == client_text(families)
    back = list(text_string_to_metric_families(text.decode()))
    assert [(f.name, f.type, f.documentation) for f in back] == \
           [(f.name, f.type, f.documentation) for f in families]
    for mine, read in zip(families, back):
        assert [s.labels for s in read.samples] == [s.labels for s in mine.samples]
        assert all(same_value(a.value, float(b.value)) for a, b in zip(read.samples, mine.samples))


def test_a_series_or_name_given_twice_is_written_once_logged_once_and_counted(caplog) -> None:
    def collector():
        first = MetricFamily("community_gateway_x", "x", "gauge", ["sink"])
        first.add_metric(["a"], 1)
        again = MetricFamily("community_gateway_x", "x again", "gauge", ["sink"])
        again.add_metric(["b"], 2)  # merged into the first family
        again.add_metric(["a"], 3)  # the same series: left out
        clash = MetricFamily("community_gateway_x", "x", "counter")  # another name on the wire
        clash.add_metric([], 4)
        other = MetricFamily("community_gateway_x_total", "a gauge named like the counter",
                             "gauge")  # the same wire name as `clash`, another type
        other.add_metric([], 5)
        return [first, again, clash, other]

    registry = CollectorRegistry()
    registry.register(collector)
    with caplog.at_level(logging.WARNING):
        text = render(registry).decode()
        again = render(registry).decode()
    assert text.count("# TYPE community_gateway_x gauge") == 1
    assert 'community_gateway_x{sink="a"} 1.0\ncommunity_gateway_x{sink="b"} 2.0\n' in text
    assert "community_gateway_x_total 4.0" in text and " 3.0" not in text and " 5.0" not in text
    assert f"{SKIPPED}_total 2.0" in text and f"{SKIPPED}_total 4.0" in again
    parsed = list(text_string_to_metric_families(again))
    assert len({wire_name(f) for f in parsed}) == len(parsed)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # each once, though every scrape meets them
    assert any('community_gateway_x{sink="a"} given twice' in w for w in warnings)
    assert any("community_gateway_x_total given as a counter and again as a gauge" in w
               for w in warnings)


def test_webhooks_with_one_shown_url_get_distinct_labels() -> None:
    class Hook:
        def __init__(self, shown_url: str):
            self.shown_url = shown_url

    hooks = [Hook("http://h/a?..."), Hook("http://h/b"), Hook("http://h/a?..."),
             Hook("http://h/a?...")]
    assert webhook_labels(hooks) == ["http://h/a?...", "http://h/b", "http://h/a?... #2",
                                     "http://h/a?... #3"]


def test_families_take_only_counters_and_gauges_with_label_names() -> None:
    with pytest.raises(ValueError, match="histogram"):
        MetricFamily("x", "h", "histogram")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label name"):
        MetricFamily("x", "h", "gauge", ["bad-name"])
    family = MetricFamily("x", "h", "gauge", ["a", "b"])
    with pytest.raises(ValueError, match="2 labels"):
        family.add_metric(["only one"], 1)


def test_no_module_of_the_gateway_or_hub_imports_prometheus_client() -> None:
    found = []
    for top in ("gateway", "drivers", "simulators", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                          if n.split(".")[0] == "prometheus_client"]
    assert found == []
