"""Nothing a device (or a config) puts in a string can forge or break a line upstream.

Each test writes what the encoder made to a real VictoriaMetrics and reads back
what it stored: the property tests (``test_line_protocol_props.py``) cover
arbitrary unicode; these are the attacks and accidents by name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from drivers.mqtt.mapping import MessageMapping
from drivers.mqtt.profile import MqttProfile
from drivers.synthetic import SyntheticDevice
from gateway.clock import FakeClock
from gateway.readings import DeviceEvent
from gateway.upstream.line_protocol import MAX_STRING, MAX_TAG_VALUE, LineEncoder
from line_protocol_spec import parse_line

try:  # a site config with every device type's driver table (main after the seams merge)
    from gateway.runtime.site import load_site
except ImportError:  # before it: the loader knew the device types itself
    from gateway.config.loader import load_config as load_site

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.0


def _labels(series: list[dict]) -> dict[str, dict[str, str]]:
    return {s["metric"]["__name__"]: {k: v for k, v in s["metric"].items() if k != "__name__"}
            for s in series}


def test_a_newline_in_a_snapshot_cannot_add_points(victoria) -> None:
    site = load_site(ROOT / "configs" / "example-site.yaml")
    profile = MqttProfile.model_validate(
        yaml.safe_load((ROOT / "configs" / "profiles" / "thrown-object-camera.yaml").read_text()))
    camera = MessageMapping(profile=profile, device_id="camera-b5-east", source="cam-b5-east")
    forged = "x\ninjected,site=victim,device=door-1 forced_open=1\n"
    payload = json.dumps({"event_id": "e1", "state": "start", "camera": "cam-b5-east",
                          "building": "5", "facade": "east", "floor_est": [11, 13],
                          "snapshot": forged, "clip": "http://cam/clip.mp4"}).encode()
    out = camera.decode("thrown-objects/events", payload, NOW)
    [event] = out.items
    assert isinstance(event, DeviceEvent)
    line = LineEncoder("sunny-garden-north", site.devices).encode_event(event)

    victoria.write_lines(line, precision="ns")
    # Before: VictoriaMetrics skipped the event's line (unterminated string) with a 204
    # and stored injected_forced_open{site="victim"} from the next one, at "now".
    stored = victoria.wait_for_series('{__name__=~"thrown_object_event_.*"}')
    # nothing the camera wrote became a point of its own
    assert victoria.export('{__name__=~"injected.*"}') == []
    assert victoria.export('{site="victim"}') == []
    names = _labels(stored)
    # the real event is there, whole, with its evidence after the forged text
    assert names["thrown_object_event_count"]["event"] == "throw"
    assert names["thrown_object_event_count"]["site"] == "sunny-garden-north"
    assert "thrown_object_event_clip" in names and "thrown_object_event_floor_high" in names
    assert parse_line(line).fields[-2] == ("snapshot", forged.replace("\n", "\ufffd"))


def test_location_tags_keep_their_backslashes_and_lose_their_newlines(victoria) -> None:
    site = load_site(ROOT / "configs" / "charging-site.yaml")
    spec = site.devices["charger-b3"]
    location = spec.config.location.model_copy(
        update={"room": "store\\", "floor": "B1\nB2", "unit": "a,b=c d"})
    config = spec.config.model_copy(update={"location": location})
    devices = {"charger-b3": type(spec)(**{**spec.__dict__, "config": config})}
    encoder = LineEncoder("north gate\\", devices)
    line = encoder.encode(_reading("charger-b3", 3, {"power": 1200.5}))
    assert "\n" not in line

    victoria.write_lines(line)
    [series] = victoria.wait_for_series("ev_charging_power")
    assert series["metric"] == {
        "__name__": "ev_charging_power", "building": "3", "device": "charger-b3", "port": "3",
        "site": "north gate\\",  # the trailing backslash did not swallow the next tag
        "room": "store\\", "floor": "B1\ufffdB2", "unit": "a,b=c d"}
    assert series["values"] == [1200.5]


def test_field_keys_from_synthetic_fields_are_escaped(victoria, tmp_path: Path) -> None:
    # Synthetic fields are free text in the config: the one place a field key with a
    # separator in it reaches the encoder today.
    config = tmp_path / "site.yaml"
    config.write_text(
        "site: {id: s1}\n"
        "devices:\n"
        "  - id: gen-1\n"
        "    type: synthetic\n"
        "    kind: trial\n"
        "    fields: ['power factor', 'a,b=c', 'back\\', 'say \"hi\"']\n")
    site = load_site(config)
    device = SyntheticDevice(device_id="gen-1", fields=site.devices["gen-1"].config.fields,
                             channels=None, clock=FakeClock(NOW), seed=1)
    [reading] = asyncio.run(device.poll())
    line = LineEncoder("s1", site.devices).encode(reading)
    assert [k for k, _ in parse_line(line).fields] == [
        "power factor", "a,b=c", "back\\", "say \ufffdhi\ufffd"]

    victoria.write_lines(line)
    stored = victoria.wait_for_series('{__name__=~"trial_.*"}', lambda s: len(s) == 4)
    values = {s["metric"]["__name__"]: s["values"][0] for s in stored}
    # VictoriaMetrics keeps 12 significant digits
    assert values == pytest.approx({"trial_power factor": reading.values["power factor"],
                                    "trial_a,b=c": reading.values["a,b=c"],
                                    "trial_back\\": reading.values["back\\"],
                                    "trial_say \ufffdhi\ufffd": reading.values['say "hi"']},
                                   rel=1e-9)


def test_long_strings_are_cut_and_counted() -> None:
    encoder = LineEncoder("s", {})
    line = encoder.encode_event(DeviceEvent("cam", None, "x" * 1000, NOW,
                                            {"snapshot": "s" * 10_000, "ok": "short"}))
    point = parse_line(line)
    assert point.tags["event"] == "x" * MAX_TAG_VALUE
    assert point.fields[1] == ("snapshot", "s" * MAX_STRING)
    assert point.fields[2] == ("ok", "short")
    assert encoder.truncated == 2


def test_numbers_no_float_holds_cost_their_field_only() -> None:
    encoder = LineEncoder("s", {})
    line = encoder.encode_event(DeviceEvent("cam", None, "throw", NOW,
                                            {"huge": 10**400, "floor_low": 11, "nan": float("nan")}))
    assert parse_line(line).fields == [("count", 1.0), ("floor_low", 11.0)]
    assert encoder.skipped_values == 2


def _reading(device: str, channel: int | None, values: dict[str, float]):
    from gateway.readings import Reading

    return Reading(device, channel, values, NOW)


def test_cut_and_skipped_values_are_metrics(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from alarm_support import Bench
    from gateway.operations.metrics import metrics_registry, render

    # a line-protocol sink, so lines are encoded at all (issue 16: only when one reads them)
    bench = Bench(tmp_path, [], extra={"local_series": {"path": str(tmp_path / "s.lp")}})
    bench.event("camera", "throw", snapshot="s" * (MAX_STRING + 1), floor=10**400)
    bench.read("charger", 1, power=float("nan"))
    text = render(metrics_registry(bench.gateway)).decode()
    [family] = [f for f in text_string_to_metric_families(text)
                if f.name == "community_gateway_line_protocol_values_altered"]
    assert {s.labels["how"]: s.value for s in family.samples} == {"skipped": 2, "truncated": 1}
