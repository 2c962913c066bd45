"""Alarms to GB/T 26875.3 objects: which transitions report what, read from the durable queue."""

from __future__ import annotations

from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock
from gateway.config.fire_centre import FireCentreConfig
from drivers import gb26875 as codec
from drivers.gb26875 import TypeFlag
from gateway.upstream.fire_centre.service import FireCentreService

FIRE, FAULT, SHIELDED = 0b10, 0b100, 0b1000


def config(**extra) -> FireCentreConfig:
    return FireCentreConfig.model_validate({
        "host": "127.0.0.1", "port": 9000, "source_address": 0x379, "destination_address": 0x15B38,
        "operators": {"wang": 7},
        "components": [
            {"device": "cab", "system_address": 2, "component_type": 40, "component_address": 1,
             "description": "充电间烟感", "alarms": {"smoke": "fire_alarm", "device_offline": "fault"}},
            {"device": "cab", "channel": 3, "system_address": 2, "component_type": 18,
             "component_address": 2, "description": "3号口", "alarms": {"port-hot": "fire_alarm"}},
        ], **extra})


def service(tmp_path, clock=None, alarms=None):
    clock = clock or FakeClock()
    alarms = alarms or AlarmManager(clock=clock)
    svc = FireCentreService(config=config(), state_dir=tmp_path, clock=clock, alarms=alarms)
    alarms.add_listener(svc.on_transition)
    return svc, alarms, clock


def sent(svc) -> list[tuple[int, list]]:
    """Every queued frame's unit, oldest first; the frames are confirmed (removed) as read."""
    out = []
    while (item := svc.queue.oldest()) is not None:
        frame = codec.decode_frame(item.frame)
        assert (frame.source, frame.destination, frame.seq) == (0x379, 0x15B38, item.seq)
        out.append(codec.decode_unit(frame.data))
        svc.queue.remove(item.id)
    return out


def smoke(alarms, clock, *, channel=None, rule="smoke"):
    return alarms.activate(rule=rule, severity=1, device="cab", kind="ev_charging",
                           channel=channel, location={}, message="smoke", value=1.0,
                           ts=clock.time(), latch=True)


def test_a_latched_smoke_alarm_is_a_fire_until_an_operator_resets_it(tmp_path) -> None:
    svc, alarms, clock = service(tmp_path)
    svc._report_start()
    start = sent(svc)
    assert [flag for flag, _ in start] == [TypeFlag.COMPONENT_STATE, TypeFlag.SYSTEM_STATE,
                                          TypeFlag.DEVICE_STATE, TypeFlag.DEVICE_VERSION]
    assert [o.state for o in start[0][1]] == [1, 1]  # both components normal
    alarm = smoke(alarms, clock)
    [(comp_flag, [comp]), (sys_flag, [system]), (dev_flag, [device])] = sent(svc)
    assert (comp_flag, comp.component_address, comp.state) == (TypeFlag.COMPONENT_STATE, 1, 1 | FIRE)
    assert comp.description == "充电间烟感" and codec.tag_time(comp.time) == int(clock.time())
    assert (sys_flag, system.system_address, system.state) == (TypeFlag.SYSTEM_STATE, 2, 1 | FIRE)
    assert (dev_flag, device.state) == (TypeFlag.DEVICE_STATE, 0b11)
    clock.advance(5)
    alarms.deactivate(rule="smoke", device="cab", channel=None, value=0.0, ts=clock.time())
    assert sent(svc) == []  # latched: still a fire at the centre
    alarms.reset(alarm.id, by="wang")
    units = sent(svc)
    assert units[0] == (TypeFlag.OPERATION, [codec.Operation(1, 2, 1, 7, codec.time_tag(clock.time()))])
    assert [o.state for o in units[1][1]] == [1]  # the component normal again


def test_a_shelved_fault_is_shielded_and_a_port_maps_to_its_own_component(tmp_path) -> None:
    svc, alarms, clock = service(tmp_path)
    svc._report_start()
    sent(svc)
    offline = alarms.activate(rule="device_offline", severity=3, device="cab", kind="ev_charging",
                              channel=None, location={}, message="offline", value=None,
                              ts=clock.time())
    assert sent(svc)[0][1][0].state == 1 | FAULT
    alarms.shelve(offline.id, by="wang", minutes=10)
    assert sent(svc)[0][1][0].state == 1 | FAULT | SHIELDED
    smoke(alarms, clock, channel=2, rule="port-hot")  # port 2: no component takes it
    assert sent(svc) == [] and svc.mapping.unmapped == 1
    smoke(alarms, clock, channel=3, rule="port-hot")
    [comp] = sent(svc)[0][1]
    assert (comp.component_address, comp.state) == (2, 1 | FIRE)


def test_a_change_while_the_gateway_was_down_is_reported_at_the_next_start(tmp_path) -> None:
    svc, alarms, clock = service(tmp_path)
    svc._report_start()
    sent(svc)
    svc.close()
    # the next start finds a smoke alarm open (restored from the alarm state file)
    alarms2 = AlarmManager(clock=clock)
    alarms2.restore([smoke(AlarmManager(clock=clock), clock).to_record()])
    svc2, _, _ = service(tmp_path, clock, alarms2)
    svc2._report_start()
    units = sent(svc2)
    assert units[0][0] == TypeFlag.COMPONENT_STATE and [o.state for o in units[0][1]] == [1 | FIRE]
    svc2.close()
    # and a third start with nothing changed reports only the device's state and version
    svc3, _, _ = service(tmp_path, clock, alarms2)
    svc3._report_start()
    assert [flag for flag, _ in sent(svc3)] == [TypeFlag.DEVICE_STATE, TypeFlag.DEVICE_VERSION]


def test_a_failed_write_is_held_and_retried_in_order(tmp_path, monkeypatch) -> None:
    import sqlite3

    svc, alarms, clock = service(tmp_path)
    svc._report_start()
    sent(svc)
    real_append = svc.queue.append

    def disk_full(items, now):  # a fault the real file cannot be made to have (tests run as root)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(svc.queue, "append", disk_full)
    smoke(alarms, clock)
    assert svc.write_errors == 1 and svc.queue.depth() == 0
    monkeypatch.setattr(svc.queue, "append", real_append)
    svc._enqueue([])  # what the retry task does
    units = sent(svc)
    assert [flag for flag, _ in units] == [TypeFlag.COMPONENT_STATE, TypeFlag.SYSTEM_STATE,
                                          TypeFlag.DEVICE_STATE]
    assert units[0][1][0].state == 1 | FIRE
