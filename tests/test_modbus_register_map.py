"""Register decoding (types, word and byte order) and request planning."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.modbus.register_map import ModbusProfile, RegisterField, RequestLimits, decode, encode, expand
from drivers.modbus.request_plan import plan_reads


def point(**kw):
    profile = ModbusProfile(kind="k", fields=[RegisterField(name="v", table="holding", address=0, **kw)])
    return expand(profile)[0]


def test_pzem_low_word_first_u32() -> None:
    # 123456 * 0.1 W = 12345.6 W, low word first: [0xE240, 0x0001]
    p = point(type="u32", word_order="little", scale=0.1)
    assert decode(p, [0xE240, 0x0001], 0) == pytest.approx(12345.6)


# word order applies to 32-bit types only (the model refuses it on 16-bit ones)
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
CASES = ([(t, v, w, b) for t, v in [("u32", 4_000_000_000), ("i32", -123456), ("f32", -2.5)]
          for w, b in ORDERS]
         + [(t, v, "big", b) for t, v in [("i16", -300), ("u16", 65000)] for b in ("big", "little")])


@pytest.mark.parametrize("type_,value,word_order,byte_order", CASES)
def test_encode_decode_round_trip(type_, value, word_order, byte_order) -> None:
    p = point(type=type_, word_order=word_order, byte_order=byte_order)
    assert decode(p, encode(p, value), 0) == pytest.approx(value)


def test_f32_big_endian_matches_struct() -> None:
    p = point(type="f32")
    raw = struct.pack(">f", 230.5)
    assert decode(p, [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")], 0) == 230.5


@given(st.integers(0, 2**32 - 1), st.sampled_from(["big", "little"]), st.sampled_from(["big", "little"]))
def test_u32_round_trip_any_value(value, word_order, byte_order) -> None:
    p = point(type="u32", word_order=word_order, byte_order=byte_order)
    assert decode(p, encode(p, value), 0) == value


def test_bit_in_register() -> None:
    p = point(type="bit", bit=3)
    assert decode(p, [0b1000], 0) == 1.0 and decode(p, [0b0111], 0) == 0.0


@pytest.mark.parametrize("bad", [
    {"table": "coil", "type": "u16"},
    {"table": "holding", "type": "bool"},
    {"table": "holding", "type": "bit"},
    {"table": "holding", "type": "u16", "word_order": "little"},
    {"table": "input", "type": "u16", "writable": True},
    {"table": "holding", "type": "u16", "scale": 0},
])
def test_incoherent_fields_are_refused(bad) -> None:
    with pytest.raises(ValidationError):
        RegisterField(name="x", address=0, **bad)


@pytest.mark.parametrize("value", [-1, 70_000, float("nan"), float("inf")])
async def test_a_value_the_register_cannot_hold_is_a_driver_error(value) -> None:
    # An action writing it must fail like any failed write (and raise actuation_failed),
    # not end its task with a struct.error nobody sees.
    from drivers.modbus.device import ModbusDevice
    from gateway.errors import DriverProtocolError

    profile = ModbusProfile(kind="k", fields=[RegisterField(
        name="limit", table="holding", address=1, type="u16", writable=True)])
    device = ModbusDevice(device_id="meter", bus=None, points=expand(profile),  # type: ignore[arg-type]
                          limits=RequestLimits())
    with pytest.raises(DriverProtocolError, match="limit"):
        await device.write(None, "limit", value)


def _profile(fields, **limits):
    return ModbusProfile(kind="k", fields=[RegisterField(**f) for f in fields],
                         requests=RequestLimits(**limits))


def test_adjacent_registers_are_read_in_one_request() -> None:
    prof = _profile([{"name": f"r{i}", "table": "input", "address": i} for i in range(10)])
    [req] = plan_reads(expand(prof), prof.requests)
    assert (req.address, req.count, len(req.points)) == (0, 10, 10)


def test_gap_and_size_limits_split_requests() -> None:
    prof = _profile([{"name": "a", "table": "input", "address": 0},
                     {"name": "b", "table": "input", "address": 5},
                     {"name": "c", "table": "input", "address": 30, "type": "u32"},
                     {"name": "d", "table": "holding", "address": 1}], max_gap=3)
    plan = plan_reads(expand(prof), prof.requests)
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("holding", 1, 1), ("input", 0, 1), ("input", 5, 1), ("input", 30, 2)]
    prof = _profile([{"name": f"r{i}", "table": "input", "address": i} for i in range(10)],
                    max_registers=4)
    assert [r.count for r in plan_reads(expand(prof), prof.requests)] == [4, 4, 2]


def test_cabinet_profile_request_count() -> None:
    from gateway.config.loader import load_profile
    from pathlib import Path

    prof = load_profile("ev-cabinet", Path("."), ModbusProfile)
    plan = plan_reads(expand(prof, channels=4), prof.requests)
    # 4 meters (one request each) + controller coils + discrete + input registers
    assert len(plan) == 7
