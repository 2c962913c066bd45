"""SIA DC-09 / Contact ID: the codec against real panels' frames, the receiver over
real TCP with the panel simulator, and the parser under arbitrary bytes."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sia_dc09.contact_id import event_names, parse_contact_id
from drivers.sia_dc09.frame import (FrameError, answer, crc16, encode_frame, message_body,
                                    parse_frame)
from drivers.sia_dc09.receiver import AlarmHostDevice, Dc09Receiver, _Panel
from gateway.clock import SystemClock
from gateway.readings import DeviceEvent, Reading
from simulators.alarm_panel import AlarmPanelSimulator

# Frames logged from real panels (PROSEC, and a panel behind a Node.js receiver),
# with the CRC and length the panels computed.
REAL_FRAMES = [
    'F68B003B"ADM-CID"0028L0#9757[#9757|1602 00 000]_20:59:45,02-20-2024',
    'B0970029"NULL"0000L000#0809[]_21:00:01,02-20-2024',
    'F92F0043"ADM-CID"0020R7896L7896#3456[#3456|1407 00 001]_17:01:14,07-26-2024',
    'D730002F"NULL"0000R7896L7896#3456[]_17:01:26,07-26-2024',
]
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("wire", REAL_FRAMES)
def test_real_panels_frames_are_reproduced_byte_for_byte(wire):
    body = wire[8:]
    assert encode_frame(body) == b"\n" + wire.encode() + b"\r"
    frame = parse_frame(wire.encode())
    assert frame.account in ("9757", "0809", "3456")


def test_fields_of_a_contact_id_frame():
    frame = parse_frame(b"\n" + REAL_FRAMES[2].encode() + b"\r")
    assert (frame.message_id, frame.sequence, frame.receiver, frame.line, frame.account) == (
        "ADM-CID", "0020", "7896", "7896", "3456")
    assert frame.timestamp == datetime(2024, 7, 26, 17, 1, 14, tzinfo=timezone.utc)
    assert parse_contact_id(frame.data).name == "disarm"


def test_ack_echoes_sequence_receiver_line_and_account():
    frame = parse_frame(REAL_FRAMES[2].encode())
    ack = answer("ACK", frame, NOW)
    assert ack == encode_frame('"ACK"0020R7896L7896#3456[]')
    assert crc16(ack[9:-1]) == int(ack[1:5], 16)
    nak = parse_frame(answer("NAK", None, NOW))
    assert nak.message_id == "NAK" and nak.timestamp == NOW  # our time, for the panel's clock


@pytest.mark.parametrize("wire,reply,reason", [
    (b"\n0000" + REAL_FRAMES[0][4:].encode() + b"\r", "NAK", "CRC"),
    (encode_frame('"ADM-CID"0028L0#9757[#9757|1602 00 000]').replace(b"0028", b"0029", 1),
     "NAK", "CRC"),
    (b"\n" + f"{crc16(b'hello'):04X}0009hello".encode() + b"\r", "NAK", "length"),
    (encode_frame("hello there"), "DUH", "not a DC-09"),
    (encode_frame('"*ADM-CID"0001L0#1234[0011AABB]'), "DUH", "encrypted"),
    (encode_frame('"ADM-CID"0001L0#1234[x]_25:61:00,13-45-2024'), "DUH", "not a date"),
    (b"\nZZZZ0003abc\r", "NAK", "hex"),
])
def test_bad_frames_get_the_answer_the_standard_asks(wire, reply, reason):
    with pytest.raises(FrameError) as err:
        parse_frame(wire)
    assert err.value.answer == reply and reason in err.value.reason


@pytest.mark.parametrize("data,name,zone,qualifier", [
    ("#1234|1120 01 005", "emergency", 5, "new"),
    ("#1234|1130 01 003", "burglary", 3, "new"),
    ("#1234|3130 01 003", "burglary_restore", 3, "restore"),
    ("#1234|1110 00 129", "fire", 129, "new"),
    ("#1234|1137 01 007", "tamper", 7, "new"),
    ("#1234|1301 00 000", "mains_loss", 0, "new"),
    ("#1234|3301 00 000", "mains_loss_restore", 0, "restore"),
    ("#1234|6130 01 003", "burglary", 3, "previous"),
    ("#1234|1999 01 001", "cid_999", 1, "new"),
    ("#1234|3401 01 002", "arm", 2, "restore"),
])
def test_contact_id_events_map_to_the_gateways_alarm_vocabulary(data, name, zone, qualifier):
    event = parse_contact_id(data)
    assert (event.name, event.zone, event.qualifier) == (name, zone, qualifier)
    assert name in event_names() or name.startswith("cid_")


@pytest.mark.parametrize("data", ["", "#1234|", "#1234|1130 1 003", "#1234|2130 01 003",
                                  "#1234|1130 01 03", "#1234|11300 01 003"])
def test_malformed_contact_id_is_refused(data):
    with pytest.raises(ValueError):
        parse_contact_id(data)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_get_an_answer_and_nothing_else(raw):
    receiver = Dc09Receiver(name="fuzz", host="127.0.0.1", port=0, clock=SystemClock())
    reply = receiver.handle(raw)
    assert parse_frame(reply).message_id in ("ACK", "NAK", "DUH")
    assert receiver.counters()["frames"] == 1


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
       st.integers(0, 9999), st.sampled_from(["ADM-CID", "NULL", "SIA-DCS", "XYZ"]))
@settings(max_examples=300, deadline=None)
def test_well_framed_nonsense_is_answered_duh_or_ack(data, seq, message_id):
    receiver = Dc09Receiver(name="fuzz", host="127.0.0.1", port=0, clock=SystemClock())
    receiver._panels["1234"] = _Panel("p")  # registered, without a listening socket
    body = message_body(message_id, seq, line="1", account="1234",
                        data=data.replace("[", "(").replace("]", ")"))
    kind = parse_frame(receiver.handle(encode_frame(body))).message_id
    assert kind in ("ACK", "DUH")


# --- over real TCP, with the panel simulator -------------------------------------------


async def _until(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def receiver_and_panel():
    receiver = Dc09Receiver(name="rx", host="127.0.0.1", port=0, clock=SystemClock())
    device = AlarmHostDevice(device_id="panel-b3", receiver=receiver, account="1234")
    items: list = []

    async def emit(batch):
        items.extend(batch)

    task = asyncio.create_task(device.stream(emit), name="driver[panel-b3]")
    await _until(lambda: receiver.bound_port is not None)
    yield receiver, items
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert receiver.bound_port is None  # the last panel out stops listening


async def test_events_and_heartbeats_arrive_acked_in_order(receiver_and_panel):
    receiver, items = receiver_and_panel
    async with AlarmPanelSimulator(receiver=("127.0.0.1", receiver.bound_port), account="1234",
                                   heartbeat_s=3600) as panel:
        assert await panel.send_event(1, "130", 3) == "ACK"
        assert await panel.send_event(3, "130", 3) == "ACK"
        assert await panel.send_event(1, "120", 5) == "ACK"
        await _until(lambda: len([i for i in items if isinstance(i, DeviceEvent)]) == 3)
    events = [(i.name, i.channel) for i in items if isinstance(i, DeviceEvent)]
    assert events == [("burglary", 3), ("burglary_restore", 3), ("emergency", 5)]
    assert any(isinstance(i, Reading) and i.values == {"online": 1.0} for i in items)
    assert receiver.counters()["acked"] == 4  # three events and the first heartbeat


async def test_a_resent_frame_is_acked_again_but_delivered_once(receiver_and_panel):
    receiver, items = receiver_and_panel
    body = message_body("ADM-CID", 42, line="1", account="1234", data="#1234|1110 00 012")
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.bound_port)
    for _ in range(2):  # the panel missed our ACK and sends the same frame again
        writer.write(encode_frame(body))
        assert parse_frame(await reader.readuntil(b"\r")).message_id == "ACK"
    writer.close()
    await _until(lambda: receiver.counters()["duplicates"] == 1)
    assert [i.name for i in items if isinstance(i, DeviceEvent)] == ["fire"]


async def test_bad_crc_is_naked_then_the_resent_frame_is_taken(receiver_and_panel):
    receiver, items = receiver_and_panel
    async with AlarmPanelSimulator(receiver=("127.0.0.1", receiver.bound_port), account="1234",
                                   heartbeat_s=3600, fault="bad-crc") as panel:
        assert await panel.send_event(1, "137", 7) == "ACK"
        assert "NAK" in panel.answers
    await _until(lambda: any(isinstance(i, DeviceEvent) for i in items))
    assert [i.name for i in items if isinstance(i, DeviceEvent)] == ["tamper"]
    assert receiver.counters()["nak_bad_frame"] == 1


async def test_garbage_on_the_line_does_not_hide_the_frame_after_it(receiver_and_panel):
    receiver, items = receiver_and_panel
    async with AlarmPanelSimulator(receiver=("127.0.0.1", receiver.bound_port), account="1234",
                                   heartbeat_s=3600, fault="garbage") as panel:
        assert await panel.send_event(1, "110", 12) == "ACK"
    await _until(lambda: any(isinstance(i, DeviceEvent) for i in items))
    assert receiver.counters()["nak_bad_frame"] >= 1


async def test_unknown_account_is_refused_and_counted(receiver_and_panel):
    receiver, items = receiver_and_panel
    async with AlarmPanelSimulator(receiver=("127.0.0.1", receiver.bound_port), account="9999",
                                   heartbeat_s=3600) as panel:
        assert await panel.send_event(1, "120", 5) == "DUH"
    assert receiver.counters()["unknown_account"] >= 1
    assert not [i for i in items if isinstance(i, DeviceEvent)]


async def test_a_full_queue_is_answered_nak_so_the_panel_resends(monkeypatch):
    import drivers.sia_dc09.receiver as rx
    monkeypatch.setattr(rx, "QUEUE_SIZE", 1)
    receiver = Dc09Receiver(name="rx", host="127.0.0.1", port=0, clock=SystemClock())
    queue = await receiver.attach("1234", "panel")  # nobody drains it
    try:
        first = message_body("ADM-CID", 1, line="1", account="1234", data="#1234|1120 01 005")
        second = message_body("ADM-CID", 2, line="1", account="1234", data="#1234|1130 01 003")
        assert parse_frame(receiver.handle(encode_frame(first))).message_id == "ACK"
        assert parse_frame(receiver.handle(encode_frame(second))).message_id == "NAK"
        queue.get_nowait()  # the pipeline catches up; the panel's resend is taken
        assert parse_frame(receiver.handle(encode_frame(second))).message_id == "ACK"
        assert queue.get_nowait().name == "burglary"
    finally:
        await receiver.detach("1234")


async def test_an_oversized_line_is_naked_and_the_connection_dropped(receiver_and_panel):
    receiver, _ = receiver_and_panel
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.bound_port)
    writer.write(b"\n" + b"A" * 5000)
    await writer.drain()
    assert parse_frame(await reader.readuntil(b"\r")).message_id == "NAK"
    assert await reader.read() == b""  # closed
    writer.close()


async def test_clock_window_naks_a_panel_whose_clock_is_off():
    receiver = Dc09Receiver(name="rx", host="127.0.0.1", port=0, clock=SystemClock())
    await receiver.attach("1234", "panel", time_window=(40, 20))
    try:
        stale = datetime(2020, 1, 1, tzinfo=timezone.utc)
        body = message_body("ADM-CID", 1, line="1", account="1234", data="#1234|1120 01 005",
                            when=stale)
        reply = parse_frame(receiver.handle(encode_frame(body)))
        assert reply.message_id == "NAK" and receiver.counters()["nak_time"] == 1
        body = message_body("ADM-CID", 2, line="1", account="1234", data="#1234|1120 01 005",
                            when=datetime.now(timezone.utc))
        assert parse_frame(receiver.handle(encode_frame(body))).message_id == "ACK"
    finally:
        await receiver.detach("1234")
