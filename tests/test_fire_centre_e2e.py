"""The gateway as a GB/T 26875.3 user information transmission device, end to end:
cabinet simulator (real Modbus server) -> gateway -> centre simulator (real TCP).

Timings are shortened through the config (confirm 0.5 s, one resend, reconnect
within 0.2 s) so outages take a fraction of a second; the minute-long outage and
the latency figure are in ``bench/fire_centre.py``.
"""

from __future__ import annotations

import time

import pytest

from gateway.readings import Reading
from drivers import gb26875 as codec
from drivers.gb26875 import Command, ComponentState, TypeFlag
from harness import cabinet_site, running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.fire_centre import FireCentreSimulator
from simulators.modbus_server import CabinetServer

DEVICE, CENTRE = 0x000379, 0x015B38
FIRE = 1 << codec.STATE_BITS["fire_alarm"]
SMOKE_ADDRESS = (2 << 16) | 10  # zone 10, number 2
FAST = {"heartbeat_interval": 5.0, "confirm_timeout": 0.5, "retries": 1,
        "reconnect_interval": 0.05, "reconnect_max": 0.2}


def fire_centre(port: int, components: list[dict], **timing) -> dict:
    return {"host": "127.0.0.1", "port": port, "source_address": DEVICE,
            "destination_address": CENTRE, **FAST, **timing, "components": components}


def detector_site(site_id: str, centre_port: int, **timing) -> dict:
    """A smoke detector whose readings the test injects: 1000 = smoke, 0 = clear."""
    return {
        "site": {"id": site_id},
        "devices": [{"id": "detector", "type": "synthetic", "kind": "smoke_detector",
                     "fields": ["smoke"], "poll_interval": 3600}],
        "rules": [{"id": "smoke", "type": "threshold", "field": "smoke", "above": 500,
                   "severity": 1}],
        "fire_centre": fire_centre(centre_port, [
            {"device": "detector", "component_type": 40, "component_address": 7,
             "description": "2号楼大堂烟感", "alarms": {"smoke": "fire_alarm",
                                                     "device_offline": "fault"}}], **timing),
    }


def component_states(centre: FireCentreSimulator) -> list[ComponentState]:
    return centre.objects(TypeFlag.COMPONENT_STATE)


async def inject(gw, value: float) -> None:
    await gw.pipeline.put([Reading("detector", None, {"smoke": value}, time.time())])


async def test_smoke_in_the_cabinet_reaches_the_centre_as_a_component_fire_alarm(
        tmp_path, unique_id) -> None:
    model = CabinetModel(ports=4, scenario="smoke", scenario_port=1, incident_after=1.0, seed=5)
    async with FireCentreSimulator() as centre, \
            CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1",
                                           "port": srv.port}, rules=[
            {"id": "smoke", "type": "threshold", "select": {"kinds": ["ev_charging"]},
             "field": "smoke", "above": 0.5, "severity": 1, "latch": True}])
        raw["fire_centre"] = fire_centre(centre.port, [
            {"device": "charger-1", "system_type": 1, "system_address": 3, "component_type": 40,
             "component_address": SMOKE_ADDRESS, "description": "3号楼B1充电间烟感",
             "alarms": {"smoke": "fire_alarm", "device_offline": "fault"}}])
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            fire = await wait_until(lambda: [(r, o) for r in centre.received for o in r.objects
                                             if isinstance(o, ComponentState) and o.state & FIRE],
                                    15, "a component fire alarm at the centre")
            [alarm] = [a for a in gw.alarms.open_alarms() if a.rule == "smoke"]
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 5, "queue drained")
    received, obj = fire[0]
    assert (received.frame.source, received.frame.destination) == (DEVICE, CENTRE)
    assert received.frame.command == Command.SEND
    assert (obj.system_type, obj.system_address, obj.component_type, obj.component_address) == \
        (1, 3, 40, SMOKE_ADDRESS)
    assert obj.description == "3号楼B1充电间烟感"
    assert codec.state_names(obj.state) == ["normal", "fire_alarm"]
    assert abs(codec.tag_time(obj.time) - alarm.first_ts) < 1.0  # the alarm's own time
    # the system and the transmission device report the fire as well
    assert any(s.state & FIRE and (s.system_type, s.system_address) == (1, 3)
               for s in centre.objects(TypeFlag.SYSTEM_STATE))
    assert any(d.state & 2 for d in centre.objects(TypeFlag.DEVICE_STATE))
    assert centre.objects(TypeFlag.DEVICE_VERSION), "the software version at start"
    assert centre.duplicates == 0 and centre.bad_frames == 0


async def test_outage_of_the_centre_loses_nothing_and_keeps_the_order(tmp_path, unique_id) -> None:
    async with FireCentreSimulator() as centre:
        raw = detector_site(unique_id, centre.port)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: gw.fire_centre.link.connected and gw.runners[0].health.polls,
                             5, "connected")
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 5, "startup frames sent")
            await centre.stop()
            await wait_until(lambda: not gw.fire_centre.link.connected, 5, "link down")
            for value in (1000, 0, 1000, 0, 1000, 0):
                await inject(gw, value)
            await wait_until(lambda: gw.fire_centre.queue.depth() >= 18, 5, "18 frames queued")
            queued = gw.fire_centre.queue.depth()
            before = len(centre.received)
            await centre.start()
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 10, "queue drained")
    states = [o.state & FIRE for o in component_states(centre)]
    assert states == [0] + [FIRE, 0] * 3  # the first start reports the component normal
    assert len(centre.received) - before == queued, "every queued frame arrived once"
    seqs = [r.frame.seq for r in centre.received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "in order, once"
    assert centre.duplicates == 0 and centre.connections >= 2


async def test_a_restart_of_the_gateway_mid_outage_loses_nothing(tmp_path, unique_id) -> None:
    async with FireCentreSimulator() as centre:
        path = write_site(tmp_path, detector_site(unique_id, centre.port))
        async with running_gateway(path) as gw:
            await wait_until(lambda: gw.fire_centre.link.connected and gw.runners[0].health.polls,
                             5, "connected")
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 5, "startup frames sent")
            await centre.stop()
            for value in (1000, 0, 1000, 0):
                await inject(gw, value)
            await wait_until(lambda: gw.fire_centre.queue.depth() >= 12, 5, "12 frames queued")
        # a new gateway process on the same state directory, the centre still down
        async with running_gateway(path) as gw:
            await wait_until(lambda: gw.fire_centre.queue.depth() >= 14, 5, "+ device state, version")
            await centre.start()
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 10, "queue drained")
    assert [o.state & FIRE for o in component_states(centre)] == [0, FIRE, 0, FIRE, 0]
    seqs = [r.frame.seq for r in centre.received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(centre.objects(TypeFlag.DEVICE_VERSION)) == 2  # one per start
    assert centre.duplicates == 0


async def test_unconfirmed_frames_go_again_with_the_same_sequence_number(tmp_path, unique_id) -> None:
    async with FireCentreSimulator() as centre:
        async with running_gateway(write_site(tmp_path, detector_site(unique_id, centre.port))) as gw:
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0 and gw.runners[0].health.polls,
                             5, "startup frames sent")
            centre.silent = True
            await inject(gw, 1000)
            await wait_until(lambda: centre.duplicates >= 1, 5, "the same frame again")
            assert gw.fire_centre.link.counts["resent"] >= 1
            centre.silent = False
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 10, "queue drained")
    assert [o.state & FIRE for o in component_states(centre)] == [0, FIRE]  # kept once


async def test_denied_frames_are_counted_resent_then_set_aside(tmp_path, unique_id) -> None:
    async with FireCentreSimulator() as centre:
        async with running_gateway(write_site(tmp_path, detector_site(unique_id, centre.port))) as gw:
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0 and gw.runners[0].health.polls,
                             5, "startup frames sent")
            centre.deny = True
            await inject(gw, 1000)
            await wait_until(lambda: gw.fire_centre.link.counts["refused"] >= 3, 5, "set aside")
            centre.deny = False
            await inject(gw, 0)
            await wait_until(lambda: gw.fire_centre.queue.depth() == 0, 5, "queue drained")
            stats = gw.fire_centre.stats()
            assert gw.fire_centre.queue.refused_count() == 3
    assert stats["denied_total"] == 6  # 3 frames (component, system, device) x (1 + 1 resend)
    assert stats["refused_total"] == 3
    assert [o.state & FIRE for o in component_states(centre)][-1] == 0


async def test_heartbeats_and_the_centres_requests(tmp_path, unique_id) -> None:
    async with FireCentreSimulator() as centre:
        raw = detector_site(unique_id, centre.port, heartbeat_interval=0.2)
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: centre.heartbeats >= 2, 5, "two heartbeats")
            await inject(gw, 1000)
            await wait_until(lambda: component_states(centre), 5, "fire reported")
            state = await centre.request(TypeFlag.READ_DEVICE_STATE)
            assert state.command == Command.RESPONSE
            assert codec.decode_unit(state.data)[1][0].state == 0b011  # normal + fire
            clock = await centre.request(TypeFlag.READ_DEVICE_TIME)
            [tag] = codec.decode_unit(clock.data)[1]
            assert abs(codec.tag_time(tag.time) - time.time()) < 2
            version = await centre.request(TypeFlag.READ_DEVICE_VERSION)
            assert codec.decode_unit(version.data)[0] == TypeFlag.DEVICE_VERSION
            comp = await centre.request(TypeFlag.READ_COMPONENT_STATE,
                                        [codec.ComponentRef(1, 1, 7)])
            [obj] = codec.decode_unit(comp.data)[1]
            assert obj.description == "2号楼大堂烟感" and obj.state & FIRE
            unknown = await centre.request(TypeFlag.READ_COMPONENT_STATE,
                                           [codec.ComponentRef(1, 1, 99)])
            assert unknown.command == Command.DENY
            set_time = await centre.request(TypeFlag.SET_DEVICE_TIME,
                                            [codec.DeviceTime(codec.time_tag(time.time()))],
                                            command=Command.CONTROL)
            assert set_time.command == Command.DENY  # allow_set_time is off
            assert gw.fire_centre.link.counts["requests"] == 6


@pytest.mark.parametrize("bad, problem", [
    ({"device": "nope"}, ("fire_centre.components[0].device", "no device with id 'nope'")),
    ({"alarms": {"smok": "fire_alarm"}}, ("fire_centre.components[0].alarms.smok", "no rule")),
    ({"description": "一二三四五六七八九十一二三四五六"},
     ("fire_centre.components[0].description", "32 bytes in GB18030")),
    ({"analog": {"field": "temp", "type": "temperature"}},
     ("fire_centre.components[0].analog.field", "has no field 'temp'")),
])
def test_check_names_the_bad_fire_centre_key(tmp_path, bad, problem) -> None:
    from gateway.runtime.site import load_site
    from gateway.errors import ConfigError

    raw = detector_site("site-1", 9000)
    raw["fire_centre"]["components"][0].update(bad)
    with pytest.raises(ConfigError) as err:
        load_site(write_site(tmp_path, raw))
    assert any(path == problem[0] and problem[1] in msg for path, msg in err.value.problems), \
        err.value.problems


async def test_analog_values_and_the_link_in_metrics_and_health(tmp_path, unique_id) -> None:
    from gateway.operations.liveness import PipelineWatch, health_report
    from gateway.operations.metrics import metrics_registry, render

    async with FireCentreSimulator() as centre:
        raw = detector_site(unique_id, centre.port)
        raw["fire_centre"]["components"][0]["analog"] = {"field": "smoke", "type": "gas",
                                                         "interval": 0.1}
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            # after the detector's own first poll, or its reading would be the latest
            await wait_until(lambda: ("detector", None) in gw.pipeline.latest, 5, "first poll")
            await inject(gw, 12.34)
            analog = await wait_until(lambda: [o for o in centre.objects(TypeFlag.COMPONENT_ANALOG)
                                               if o.value == 123], 5, "12.3 %LEL at the centre")
            assert analog[0].analog_type == codec.ANALOG_TYPES["gas"][0]
            text = render(metrics_registry(gw)).decode()
            assert "community_gateway_fire_centre_connected 1.0" in text
            assert "community_gateway_fire_centre_confirmed_total" in text
            await centre.stop()
            await wait_until(lambda: not gw.fire_centre.link.connected, 5, "link down")
            ok, body = health_report(gw, PipelineWatch(gw.pipeline))
            assert not ok and any(d.startswith("fire centre 127.0.0.1") for d in body["down"])
            assert "community_gateway_fire_centre_connected 0.0" in render(metrics_registry(gw)).decode()


def test_the_example_config_maps_the_charging_room() -> None:
    from pathlib import Path

    from gateway.runtime.site import load_site

    site = load_site(Path(__file__).resolve().parent.parent / "configs" / "fire-centre-site.yaml")
    fc = site.config.fire_centre
    assert (fc.source_address, fc.destination_address) == (DEVICE, CENTRE)
    smoke, heat = fc.components
    assert smoke.alarms == {"smoke": "fire_alarm", "device_offline": "fault"}
    assert heat.analog is not None and heat.analog.field == "cabinet_temperature"


async def test_simulate_fire_centre_from_the_command_line(free_port) -> None:
    import asyncio
    import os
    import signal
    import sys

    from test_fire_centre_codec import SMOKE_FIRE

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "fire-centre", "--listen", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        async def connect():
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return None

        deadline = time.monotonic() + 10
        while (conn := await connect()) is None:
            assert time.monotonic() < deadline, "the simulator never listened"
            await asyncio.sleep(0.05)
        reader, writer = conn
        writer.write(SMOKE_FIRE)  # the standard's example: a smoke detector's fire alarm
        frames = codec.FrameReader()
        async with asyncio.timeout(5):
            while not (answers := frames.feed(await reader.read(100))):
                pass
        writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    [confirm] = answers
    assert (confirm.command, confirm.seq, confirm.destination) == (Command.CONFIRM, 1, DEVICE)
    assert f"component {SMOKE_ADDRESS} (type 40) of system 1/1" in out.decode()
    assert "fire_alarm" in out.decode()
