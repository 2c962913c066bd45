"""GB/T 26875.3 frames, byte for byte, against the public worked examples; and a fuzzed parser.

The examples are the frames that circulate with the standard (reproduced in the
Rust codec ActorLancer/GB-T-26875.3.2011-rs, GB26875文档.md: device address
0x000379, centre 0x015B38, 2012-09-26 09:58) and a captured frame from the Go codec
shootingfans/codec_gb26875_3_2011 (codec/reader_decoder_test.go). Their checksums
were recomputed by hand; both codecs agree on every field these tests read.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import gb26875 as codec
from drivers.gb26875 import (Command, ComponentState, DeviceState, Frame,
                                                FrameError, FrameReader, TypeFlag)

DEVICE, CENTRE = 0x000379, 0x015B38  # on the wire: 79 03 00.. and 38 5B 01.. (LE)
TAG = bytes.fromhex("20 3A 09 1A 09 0C")  # 2012-09-26 09:58:32 (the examples' send time)

# 上传 "2号10区 感烟探测器 火警": a smoke detector's fire alarm, component address zone 10 no. 2
SMOKE_FIRE = bytes.fromhex(
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 30 00 02"
    " 02 01 01 01 28 0A 00 02 00 02 00" + " 20" * 30 + " 00 02 3A 09 1A 09 0C 46 23 23")
CENTRE_CONFIRM = bytes.fromhex(
    "40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 00 00 03 AB 23 23")
CENTRE_DENY = bytes.fromhex(
    "40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 00 00 06 AE 23 23")
# 上传传输装置主电源故障 (type 21, state 0x08)
MAIN_POWER_FAULT = bytes.fromhex(
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 09 00 02"
    " 15 01 08 02 3A 09 1A 09 0C 42 23 23")
# 上传软件版本号 V1.1 (type 25)
VERSION_1_1 = bytes.fromhex(
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 04 00 02"
    " 19 01 01 01 C7 23 23")
# 读传输装置状态: the centre's request (type 81) and the device's response
READ_STATE = bytes.fromhex(
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 03 00 04"
    " 51 01 00 FE 23 23")
READ_STATE_RESPONSE = bytes.fromhex(
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 09 00 05"
    " 15 01 08 02 3A 09 1A 09 0C 45 23 23")
# 同步用户信息传输装置时间 (type 90, a control command carrying the time)
SET_TIME = bytes.fromhex(
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 08 00 01"
    " 5A 01 02 3A 09 1A 09 0C 7D 23 23")
# A captured component fire alarm from the Go codec's tests ("Ａ区１层呷哺走廊")
CAPTURED = bytes.fromhex(
    "40 40 00 00 01 01 18 0d 11 16 0a 14 00 00 00 00 00 00 06 05 04 03 02 01 30 00 02"
    " 02 01 01 03 00 d9 00 06 00 02 00 a3 c1 c7 f8 a3 b1 b2 e3 df c8 b2 b8 d7 df c0 c8"
    " 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 30 12 13 01 08 14 68 23 23")


def test_component_fire_alarm_encodes_byte_for_byte() -> None:
    description = " " * 30  # the example pads with spaces, then one NUL
    obj = ComponentState(system_type=1, system_address=1, component_type=40,
                         component_address=(2 << 16) | 10, state=0x0002,
                         description=description, time=bytes.fromhex("02 3A 09 1A 09 0C"))
    data = codec.encode_unit(TypeFlag.COMPONENT_STATE, [obj])
    frame = Frame(seq=1, command=Command.SEND, source=DEVICE, destination=CENTRE, time=TAG, data=data)
    assert frame.encode() == SMOKE_FIRE


def test_component_fire_alarm_decodes() -> None:
    frame = codec.decode_frame(SMOKE_FIRE)
    assert (frame.seq, frame.command, frame.source, frame.destination, frame.version) == \
        (1, Command.SEND, DEVICE, CENTRE, (1, 1))
    assert codec.tag_text(frame.time) == "2012-09-26 09:58:32"
    flag, [obj] = codec.decode_unit(frame.data)
    assert flag == TypeFlag.COMPONENT_STATE
    assert (obj.system_type, obj.system_address, obj.component_type) == (1, 1, 40)
    assert obj.component_address & 0xFFFF == 10 and obj.component_address >> 16 == 2
    assert codec.state_names(obj.state) == ["test", "fire_alarm"]  # bit 0 clear in the example
    assert obj.description == ""


def test_captured_frame_decodes_with_gb18030_description() -> None:
    frame = codec.decode_frame(CAPTURED)
    assert frame.destination == 0x010203040506 and frame.source == 0
    _, [obj] = codec.decode_unit(frame.data)
    assert obj.description == "Ａ区１层呷哺走廊"
    assert obj.component_address == 0x0600D9 and obj.system_address == 3 and obj.state == 0x0002
    local = datetime(2020, 8, 1, 19, 18, 48, tzinfo=timezone(timedelta(hours=8)))
    assert codec.tag_time(obj.time) == local.timestamp()
    # our encoder gives the same bytes back
    again = Frame(frame.seq, frame.command, frame.source, frame.destination, frame.time,
                  codec.encode_unit(TypeFlag.COMPONENT_STATE, [obj]))
    assert again.encode() == CAPTURED


def test_confirm_and_deny_answer_with_the_same_sequence_number() -> None:
    sent = codec.decode_frame(SMOKE_FIRE)
    tag = bytes.fromhex("23 3A 09 1A 09 0C")
    assert sent.answer(Command.CONFIRM, time=tag).encode() == CENTRE_CONFIRM
    assert sent.answer(Command.DENY, time=tag).encode() == CENTRE_DENY


def test_device_objects_encode_byte_for_byte() -> None:
    def frame(command: int, flag: int, obj) -> bytes:
        return Frame(1, command, DEVICE, CENTRE, TAG, codec.encode_unit(flag, [obj])).encode()

    when = bytes.fromhex("02 3A 09 1A 09 0C")
    main_power_fault = DeviceState(1 << codec.DEVICE_STATE_BITS["main_power_fault"], when)
    assert frame(Command.SEND, TypeFlag.DEVICE_STATE, main_power_fault) == MAIN_POWER_FAULT
    assert frame(Command.SEND, TypeFlag.DEVICE_VERSION, codec.Version(1, 1)) == VERSION_1_1
    request = codec.decode_frame(READ_STATE)
    assert codec.decode_unit(request.data) == (TypeFlag.READ_DEVICE_STATE, [codec.Reserved(0)])
    response = request.answer(Command.RESPONSE, time=TAG, data=codec.encode_unit(
        TypeFlag.DEVICE_STATE, [main_power_fault]))
    assert response.encode() == READ_STATE_RESPONSE


def test_set_time_command_carries_the_time() -> None:
    frame = codec.decode_frame(SET_TIME)
    assert frame.command == Command.CONTROL
    flag, [obj] = codec.decode_unit(frame.data)
    assert flag == TypeFlag.SET_DEVICE_TIME and codec.tag_text(obj.time) == "2012-09-26 09:58:02"


def test_time_tag_is_local_time_at_the_offset() -> None:
    ts = datetime(2024, 5, 1, 0, 15, 30, tzinfo=timezone.utc).timestamp()
    assert codec.time_tag(ts) == bytes((30, 15, 8, 1, 5, 24))  # 08:15:30 in China
    assert codec.tag_time(codec.time_tag(ts)) == ts
    assert codec.time_tag(ts, 0) == bytes((30, 15, 0, 1, 5, 24))
    with pytest.raises(FrameError):
        codec.tag_time(bytes((0, 0, 0, 31, 2, 24)))  # 31 February


def test_description_longer_than_31_bytes_is_refused() -> None:
    assert codec.encode_text("3号楼B1充电间烟感") .startswith("3号楼B1充电间烟感".encode("gb18030"))
    with pytest.raises(ValueError, match="31"):
        codec.encode_text("一二三四五六七八九十一二三四五六")  # 16 characters = 32 bytes


@pytest.mark.parametrize("bad, reason", [
    (SMOKE_FIRE[:-3] + bytes((SMOKE_FIRE[-3] ^ 1,)) + b"##", "bad_checksum"),
    (SMOKE_FIRE[:-2] + b"#!", "bad_end"),
    (SMOKE_FIRE[:24] + (2000).to_bytes(2, "little") + SMOKE_FIRE[26:], "too_long"),
])
def test_reader_counts_bad_frames_and_keeps_going(bad: bytes, reason: str) -> None:
    reader = FrameReader()
    frames = reader.feed(b"noise" + bad + CENTRE_CONFIRM[:10])
    frames += reader.feed(CENTRE_CONFIRM[10:] + b"@" + SMOKE_FIRE)  # "@@@": one '@' too many
    assert [f.command for f in frames] == [Command.CONFIRM, Command.SEND]
    assert reason in reader.errors and sum(reader.errors.values()) == 2


def test_reader_reassembles_byte_by_byte() -> None:
    reader = FrameReader()
    stream = CENTRE_CONFIRM + READ_STATE + CENTRE_DENY
    frames = [f for b in stream for f in reader.feed(bytes((b,)))]
    assert [f.command for f in frames] == [Command.CONFIRM, Command.REQUEST, Command.DENY]
    assert reader.errors == {} and reader.skipped_bytes == 0


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80),
                          st.sampled_from([SMOKE_FIRE, CENTRE_CONFIRM, READ_STATE, SET_TIME])),
                max_size=12),
       st.data())
def test_fuzz_reader_never_raises_nor_invents_frames(chunks, data) -> None:
    """The centre's bytes are untrusted: garbage and good frames mixed, split anywhere."""
    stream = b"".join(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = FrameReader()
    frames = []
    last = 0
    for cut in cuts + [len(stream)]:
        frames += reader.feed(stream[last:cut])
        last = cut
    for frame in frames:
        assert frame.encode() in stream  # nothing invented
        if frame.data:
            try:
                codec.decode_unit(frame.data)
            except FrameError:
                pass  # counted by the caller, never anything else
    assert len(reader._buf) <= codec.FRAME_OVERHEAD + codec.MAX_DATA
    good = [c for c in chunks if c in (SMOKE_FIRE, CENTRE_CONFIRM, READ_STATE, SET_TIME)]
    if all(b"@" not in c for c in chunks if c not in good):
        assert [f.encode() for f in frames] == good  # garbage without a start byte hides nothing


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=2, max_size=300))
def test_fuzz_unit_decoder_raises_only_frame_errors(data: bytes) -> None:
    try:
        flag, objects = codec.decode_unit(data)
    except FrameError:
        return
    for obj in objects:
        obj.encode()
