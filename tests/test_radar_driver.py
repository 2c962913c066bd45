"""The serial-frame driver over a real pseudo-terminal: frames, faults, commands, setup.

The radar is either raw bytes written into side b of a PtyPair or the radar simulator
there; the driver opens side a, as the gateway does. End to end through the gateway:
tests/test_radar_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial_asyncio_fast
import yaml

from drivers.serial_frames import CODECS, mr60fda1, tinyframe
from drivers.serial_frames.driver import SerialFrameDevice
from drivers.serial_frames.settings import SETTABLE
from drivers.serial_frames.vocabulary import COMMAND_REPLY_EVENTS, EVENTS, FIELDS
from simulators.radar import PROTOCOLS as FALL_RADAR_PROTOCOLS  # the health radar: test_health_radar
from gateway.clock import SystemClock
from gateway.runtime.site import load_site
from gateway.errors import ConfigError, DriverConnectError, DriverTimeout
from gateway.readings import DeviceEvent, Reading
from harness import wait_until
from simulators.ptypair import PtyPair
from simulators.radar import RadarSimulator, radar_on_pty
from simulators.radar_scenarios import RadarModel, RoomState

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

MR_FALL = bytes.fromhex("53 59 83 01 00 01 01 32 54 43")
MR_PRESENCE = bytes.fromhex("53 59 80 01 00 01 01 2F 54 43")
MR_RESET = bytes.fromhex("53 59 01 02 00 01 0F BF 54 43")
TF_FALL = bytes.fromhex("01 00 00 00 01 0E 02 F3 01 FE")
TF_GET_PARAMETERS = bytes.fromhex("01 00 00 00 00 0E 06 F6")

FAST = {"interval": 0.05, "refresh": 0.2, "heartbeat": 0.2}


class Collector:
    """The emit callback: keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Reading | DeviceEvent]] = []

    async def __call__(self, items: list[Reading | DeviceEvent]) -> None:
        self.batches.append(items)

    @property
    def readings(self) -> list[Reading]:
        return [i for b in self.batches for i in b if isinstance(i, Reading)]

    @property
    def events(self) -> list[DeviceEvent]:
        return [i for b in self.batches for i in b if isinstance(i, DeviceEvent)]

    def values(self, field: str) -> list[float]:
        return [r.values[field] for r in self.readings if field in r.values]


@contextlib.asynccontextmanager
async def streaming(driver: SerialFrameDevice) -> AsyncIterator[tuple[Collector, asyncio.Task]]:
    """Run ``driver.stream`` as a task; cancel it on exit."""
    out = Collector()
    task = asyncio.create_task(driver.stream(out), name="test-radar-stream")
    try:
        await wait_until(lambda: driver.connected or task.done(), 3, "port open")
        yield out, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, DriverConnectError):
            await task


def radar(port: str, protocol: str, **kw) -> SerialFrameDevice:
    return SerialFrameDevice(device_id="radar-1", port=port, protocol=protocol, clock=SystemClock(),
                             **kw)


@contextlib.asynccontextmanager
async def raw_line(path: str) -> AsyncIterator[asyncio.StreamWriter]:
    """The radar's end of the line as a bare serial port, to write chosen bytes."""
    _, writer = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=115200)
    try:
        yield writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# -- the checked examples, through the real transport -----------------------------------

async def test_checked_mr60fda1_examples_decode_to_readings_and_events() -> None:
    async with PtyPair() as pair, raw_line(pair.b) as line:
        driver = radar(pair.link_a, "mr60fda1")
        async with streaming(driver) as (out, _):
            # split mid-frame and wrapped in garbage: the parser reassembles and resyncs
            for chunk in (b"\x00\x53\xff", MR_FALL[:4], MR_FALL[4:] + b"\x54", MR_PRESENCE,
                          b"\x59\x59\x53", MR_RESET):
                line.write(chunk)
                await line.drain()
            await wait_until(lambda: any(e.name == "reset" for e in out.events), 3, "reset event")
    assert out.values("fall") == [1.0] and out.values("presence") == [1.0]
    assert [e.name for e in out.events] == ["fall", "reset"]
    assert all(r.device == "radar-1" and r.channel is None for r in out.readings)
    counters = driver.counters()
    assert counters["frames_ok"] == 3 and counters["garbage_bytes"] >= 6


async def test_checked_tinyframe_examples_decode_and_a_stray_ack_is_not_passed_on() -> None:
    async with PtyPair() as pair, raw_line(pair.b) as line:
        driver = radar(pair.link_a, "ld6002c")
        async with streaming(driver) as (out, _):
            line.write(b"\x01\x01" + TF_FALL + TF_GET_PARAMETERS + TF_FALL)
            await line.drain()
            await wait_until(lambda: len(out.values("fall")) == 2, 3, "two falls")
            await wait_until(lambda: driver.counters()["unmatched_replies"] == 1, 3, "stray ack")
    assert out.values("fall") == [1.0, 1.0]
    assert [e.name for e in out.events] == ["fall", "fall"]  # the ack is command chatter


async def test_a_frame_cut_short_is_given_up_when_the_line_goes_quiet() -> None:
    async with PtyPair() as pair, raw_line(pair.b) as line:
        driver = radar(pair.link_a, "ld6002c", quiet_gap=0.05)
        async with streaming(driver) as (out, _):
            line.write(TF_FALL[:-1])  # no DATA_CK: the radar stopped mid-frame
            await line.drain()
            await wait_until(lambda: driver.counters()["truncated"] >= 1, 3, "truncated counted")
            line.write(TF_FALL)
            await line.drain()
            await wait_until(lambda: out.values("fall") == [1.0], 3, "the next frame decoded")
    assert driver.codec.buffered == 0


# -- the simulator: real frames, faults --------------------------------------------------

def test_simulator_reports_are_the_checked_example_frames() -> None:
    fallen = RoomState(1, 1, 0, 1, 0, 0.3)
    mr = RadarSimulator(RadarModel(), protocol="mr60fda1", serial="unused")
    assert MR_FALL in mr.report_frames(fallen, now=0.0)
    assert MR_PRESENCE in mr.report_frames(fallen, now=0.0) or MR_PRESENCE in \
        mr.report_frames(fallen, now=100.0)
    tf = RadarSimulator(RadarModel(), protocol="ld6002c", serial="unused")
    assert TF_FALL in tf.report_frames(fallen, now=0.0)


@pytest.mark.parametrize("protocol", FALL_RADAR_PROTOCOLS)
def test_vocabulary_covers_every_report_and_reply_of_the_simulator(protocol: str) -> None:
    sim = RadarSimulator(RadarModel(), protocol=protocol, serial="unused")
    codec = CODECS[protocol]()
    frames = [f for i, state in enumerate((RoomState(0, 0, 0, 0, 0, None),
                                           RoomState(1, 2, 50, 0, 0, 1.2),
                                           RoomState(1, 1, 0, 1, 1, 0.3)))
              for f in sim.report_frames(state, now=100.0 * i)]
    if protocol == "mr60fda1":
        commands = [mr60fda1.query(c, m) for c, m in ((0x80, 1), (0x80, 2), (0x80, 3), (0x83, 1),
                                                      (0x83, 5), (0x83, 0), (0x83, 0x0D))]
        commands += [mr60fda1.Mr60fda1Frame(0x02, a, b"\x0f") for a in (0xA1, 0xA2, 0xA3, 0xA4)]
        commands += [mr60fda1.set_fall_sensitivity(2), mr60fda1.set_fall_detection(True),
                     mr60fda1.reset(), mr60fda1.query(0x01, 0x01)]
    else:
        commands = [tinyframe.get_parameters(), tinyframe.set_mount_height(2.5),
                    tinyframe.set_sensitivity(4), tinyframe.set_fall_threshold(0.5),
                    tinyframe.set_alarm_zone(-1, 1, 1, -1)]
    for command in commands:
        replies = sim.answer(command)
        assert replies, command
        frames += replies
    values, events = set(), set()
    for frame in codec.feed(b"".join(frames)):
        decoded = codec.decode(frame)
        values |= decoded.values.keys()
        events |= {e.name for e in decoded.events}
    assert codec.counters()["frames_ok"] == len(frames)
    assert codec.unknown == codec.implausible == 0
    assert values <= FIELDS[protocol] and events <= EVENTS[protocol] | COMMAND_REPLY_EVENTS
    assert {"fall", "presence"} <= values and "fall" in events


@pytest.mark.parametrize("protocol", ["mr60fda1", "ld6002c"])
@pytest.mark.parametrize("fault", ["garbage", "bad_checksum", "truncated"])
async def test_faults_are_counted_and_good_frames_still_decode(protocol: str, fault: str) -> None:
    # bursts far enough apart that a frame cut short is followed by a quiet line
    async with radar_on_pty(protocol=protocol, scenario="fall", fall_after=0.2, seed=3,
                            interval=0.15, refresh=0.3, heartbeat=0.3) as (sim, pair):
        driver = radar(pair.link_a, protocol, quiet_gap=0.03)
        async with streaming(driver) as (out, _):
            await wait_until(lambda: driver.counters()["frames_ok"] >= 3, 3, "clean frames")
            setattr(sim.faults, fault, True)
            counter = {"garbage": "garbage_bytes", "bad_checksum": "bad_checksum",
                       "truncated": "truncated"}[fault]
            await wait_until(lambda: driver.counters()[counter] >= 3, 5, f"{counter} counted")
            ok_before = driver.counters()["frames_ok"]
            falls_before = len(out.values("fall"))
            # frames the fault did not hit keep coming in, falls included
            await wait_until(lambda: driver.counters()["frames_ok"] >= ok_before + 5
                             and len(out.values("fall")) > falls_before, 5, "good frames")
    assert sim.faulted >= 1
    assert 1.0 in out.values("fall")


async def test_silence_stops_everything_and_deaf_only_the_replies() -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="normal", seed=4, **FAST) as (sim, pair):
        driver = radar(pair.link_a, "mr60fda1", command_timeout=0.3)
        async with streaming(driver) as (out, _):
            sim.faults.deaf = True
            with pytest.raises(DriverTimeout, match="no reply to command 53 59 80 81"):
                await driver.command(mr60fda1.query(0x80, 0x01))
            assert driver.counters()["command_timeouts"] == 1
            n = len(out.batches)
            await wait_until(lambda: len(out.batches) > n + 2, 3, "reports while deaf")
            sim.faults.silence = True
            sent = sim.frames_sent
            sim.faults.deaf = False
            with pytest.raises(DriverTimeout):
                await driver.command(mr60fda1.query(0x80, 0x01), timeout=0.3)
            assert sim.frames_sent == sent  # no reports either


# -- commands ----------------------------------------------------------------------------

async def test_mr60fda1_commands_get_their_replies() -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="empty", **FAST) as (sim, pair):
        driver = radar(pair.link_a, "mr60fda1")
        async with streaming(driver) as (out, _):
            reply = await driver.command(mr60fda1.query(0x80, 0x01))
            assert reply.values == {"presence": 0.0}
            reply = await driver.command(mr60fda1.set_fall_sensitivity(7))
            assert reply.values == {"fall_sensitivity": 7.0}
            reply = await driver.command(mr60fda1.Mr60fda1Frame(0x02, 0xA1, b"\x0f"))
            assert reply.frame.data == b"MR60FDA1"
            await wait_until(lambda: any(e.name == "device_info" for e in out.events), 2, "info")
    assert sim.settings["fall_sensitivity"] == 7
    assert out.values("fall_sensitivity") == [7.0]  # replies carry readings too
    info = next(e for e in out.events if e.name == "device_info")
    assert info.attrs == {"field": "product_model", "text": "MR60FDA1"}


async def test_tinyframe_command_waits_through_the_ack_for_the_answer() -> None:
    async with radar_on_pty(protocol="mr60fda2", scenario="empty", **FAST) as (sim, pair):
        driver = radar(pair.link_a, "mr60fda2")
        async with streaming(driver):
            reply = await driver.command(
                tinyframe.set_mount_height(2.9, frame_id=driver.next_frame_id()))
            assert reply.acked and reply.frame.data == b"\x01"
            ack = await driver.command(
                tinyframe.set_sensitivity(9, frame_id=driver.next_frame_id()), until="ack")
            assert ack.frame.data == b""
            params = await driver.command(tinyframe.get_parameters(frame_id=driver.next_frame_id()))
    assert params.values["mount_height"] == pytest.approx(2.9)
    assert params.values["sensitivity"] == 9.0
    assert [c.frame_id for c in sim.commands] == [1, 2, 3]


async def test_a_command_needs_an_open_port() -> None:
    driver = radar("/nonexistent/tty", "mr60fda1")
    with pytest.raises(DriverConnectError, match="is not open"):
        await driver.command(mr60fda1.query(0x80, 0x01))
    with pytest.raises(DriverConnectError, match="cannot open /nonexistent/tty"):
        await driver.stream(Collector())


async def test_a_pending_command_fails_when_the_port_vanishes() -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="empty", **FAST) as (sim, pair):
        driver = radar(pair.link_a, "mr60fda1", command_timeout=5)
        sim.faults.deaf = True
        async with streaming(driver) as (_, task):
            command = asyncio.create_task(driver.command(mr60fda1.query(0x80, 0x01)))
            await wait_until(lambda: sim.commands, 2, "command sent")
            pair.unplug()
            with pytest.raises(DriverConnectError, match="closed before the reply"):
                await command
            with pytest.raises(DriverConnectError):
                await task
            assert not driver.connected


# -- setup at connect --------------------------------------------------------------------

@pytest.mark.parametrize("protocol,setup", [
    ("mr60fda1", {"fall_sensitivity": 5, "fall_detection": 1}),
    ("ld6002c", {"mount_height": 2.75, "fall_sensitivity": 6}),
])
async def test_setup_is_written_and_confirmed_on_every_open(protocol: str, setup: dict) -> None:
    async with radar_on_pty(protocol=protocol, scenario="empty", **FAST) as (sim, pair):
        driver = radar(pair.link_a, protocol, setup=setup)
        async with streaming(driver) as (out, _):
            await wait_until(lambda: driver.setup_result.ok, 3, "setup confirmed")
        assert driver.setup_result.status == {name: "ok" for name in setup}
        sent = len(sim.commands)
        async with streaming(driver):
            await wait_until(lambda: len(sim.commands) >= 2 * sent, 3, "written again on reopen")
            await wait_until(lambda: driver.opens == 2 and driver.setup_result.ok, 3, "confirmed")
    stored = {("sensitivity" if k == "fall_sensitivity" and protocol != "mr60fda1" else k): v
              for k, v in setup.items()}
    assert {k: sim.settings[k] for k in stored} == pytest.approx(stored)
    assert SETUP_FAILED_NAME not in {e.name for e in out.events}


SETUP_FAILED_NAME = "setup_failed"


async def test_unconfirmed_setup_is_reported_and_the_radar_still_read() -> None:
    async with radar_on_pty(protocol="ld6002c", scenario="fall", fall_after=0.3,
                            **FAST) as (sim, pair):
        # the simulated LD6002C refuses a mounting height under 0.5 m
        driver = radar(pair.link_a, "ld6002c", setup={"mount_height": 0.2, "fall_sensitivity": 4},
                       command_timeout=0.3)
        async with streaming(driver) as (out, _):
            await wait_until(lambda: driver.setup_result.status, 3, "setup done")
            await wait_until(lambda: 1.0 in out.values("fall"), 3, "falls still reported")
    assert driver.setup_result.status["fall_sensitivity"] == "ok"
    assert driver.setup_result.status["mount_height"] == \
        "radar reports mount_height=2.6, wanted 0.2"
    [failed] = [e for e in out.events if e.name == SETUP_FAILED_NAME]
    assert failed.attrs == {"setting": "mount_height", "value": 0.2,
                            "detail": "radar reports mount_height=2.6, wanted 0.2"}


async def test_a_deaf_radar_fails_setup_with_a_timeout() -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="normal", **FAST) as (sim, pair):
        sim.faults.deaf = True
        driver = radar(pair.link_a, "mr60fda1", setup={"fall_sensitivity": 2},
                       command_timeout=0.2)
        async with streaming(driver) as (out, _):
            await wait_until(lambda: driver.setup_result.status, 3, "setup done")
            assert "fall_sensitivity" not in sim.settings or sim.settings["fall_sensitivity"] != 2
    assert driver.setup_result.status["fall_sensitivity"].startswith("no reply to command")
    assert out.values("body_movement")


def test_driver_refuses_a_setting_its_protocol_cannot_write() -> None:
    with pytest.raises(ValueError, match="mr60fda1 cannot set 'mount_height'"):
        radar("/dev/null", "mr60fda1", setup={"mount_height": 2.7})


# -- config ------------------------------------------------------------------------------

def test_radar_site_example_resolves() -> None:
    site = load_site(CONFIGS / "fall-radar-site.yaml")
    mr, tf = site.devices["radar-7-302-bath"], site.devices["radar-7-305-bath"]
    assert mr.kind == tf.kind == "fall_radar"
    assert {"fall", "presence", "motion", "stationary_dwell"} <= mr.fields
    assert {"fall", "presence", "target_height", "mount_height"} <= tf.fields
    assert "fall" in mr.events and "heartbeat" in mr.events and "heartbeat" not in tf.events
    assert mr.config.setup.values() == {"fall_detection": 1.0, "fall_sensitivity": 3.0}
    assert tf.config.baudrate == 115200 and tf.config.silence_timeout == 60


def _site_with(tmp_path: Path, radar_cfg: dict, rules: list | None = None) -> Path:
    raw = {"site": {"id": "s"}, "devices": [{"id": "r", "type": "serial_frames",
                                             "port": "/dev/ttyUSB0", **radar_cfg}],
           "rules": rules or []}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("cfg,where,expected", [
    ({"codec": "mr60fda1", "setup": {"mount_height": 2.7}}, "devices[0].setup.mount_height",
     "a mr60fda1 radar cannot set mount_height; it can set ['fall_detection', 'fall_sensitivity']"),
    ({"codec": "mr60fda1", "setup": {"fall_sensitivity": 300}}, "devices[0].setup.fall_sensitivity",
     "a mr60fda1 radar takes at most 255 (got 300)"),
    ({"codec": "ld6002c", "setup": {"fall_detection": True}}, "devices[0].setup.fall_detection",
     "a ld6002c radar cannot set fall_detection; it can set ['fall_sensitivity', 'mount_height']"),
])
def test_setup_a_protocol_cannot_write_is_a_config_error(tmp_path: Path, cfg: dict, where: str,
                                                         expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_site(_site_with(tmp_path, cfg))
    assert (where, expected) in info.value.problems


def test_unknown_codec_and_a_rule_on_a_field_the_radar_lacks_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_site(_site_with(tmp_path, {"codec": "mr60fda3"}))
    [(where, msg)] = info.value.problems
    assert where == "devices[0].codec" and "mr60fda1" in msg and "ld6002c" in msg
    rule = {"id": "still", "type": "threshold", "field": "motion", "below": 1}
    with pytest.raises(ConfigError) as info:
        load_site(_site_with(tmp_path, {"codec": "ld6002c"}, [rule]))
    assert any(w == "rules[0].field" and "'motion'" in m for w, m in info.value.problems)


def test_settable_names_match_the_config_model() -> None:
    from gateway.config.devices import RadarSetup

    assert set().union(*SETTABLE.values()) == set(RadarSetup.model_fields)


def test_simulator_answers_tinyframe_parameters_like_the_layout() -> None:
    sim = RadarSimulator(RadarModel(), protocol="ld6002c", serial="unused")
    ack, answer = sim.answer(tinyframe.get_parameters(frame_id=7))
    codec = tinyframe.TinyFrameCodec()
    frames = codec.feed(ack + answer)
    assert [f.frame_id for f in frames] == [7, 7] and frames[0].data == b""
    assert struct.unpack("<ffIffff", frames[1].data)[2] == 3


# -- by hand: `community-gateway simulate radar` -----------------------------------------

def test_cli_parses_simulate_radar() -> None:
    from gateway.cli import _parser

    args = _parser().parse_args(["simulate", "radar", "--protocol", "ld6002c", "--scenario", "fall",
                                 "--fault", "garbage", "--fault", "vanish"])
    assert args.simulation.__name__ == "_radar"
    assert (args.protocol, args.scenario, args.serial, args.fault) == \
        ("ld6002c", "fall", "pty", ["garbage", "vanish"])


async def test_run_radar_prints_the_gateway_side_and_can_vanish() -> None:
    from simulators.radar import run_radar

    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_radar(
        protocol="mr60fda1", scenario="fall", fall_after=0.1, interval=0.05, faults=["vanish"],
        vanish_every=0.6, status_every=0.1, stop_event=stop, out=lines.append))
    try:
        await wait_until(lambda: lines, 3, "banner")
        path = lines[0].split("gateway side ")[1].split(" ")[0]
        driver = radar(path, "mr60fda1")
        async with streaming(driver) as (out, stream):
            await wait_until(lambda: 1.0 in out.values("fall"), 3, "a fall")
            await wait_until(lambda: stream.done(), 3, "the port vanished")
        await wait_until(lambda: any("plugged back in" in line for line in lines), 3, "replugged")
    finally:
        stop.set()
        await task
    assert any("unplugged" in line for line in lines)


async def test_run_radar_refuses_unknown_faults() -> None:
    from simulators.radar import run_radar

    with pytest.raises(ValueError, match="unknown fault"):
        await run_radar(faults=["smoke"])
    with pytest.raises(ValueError, match="use it with --serial pty"):
        await run_radar(serial="/dev/ttyUSB0", faults=["vanish"])


async def test_a_second_reader_cannot_open_the_same_radar() -> None:
    async with radar_on_pty(protocol="mr60fda1", scenario="empty", **FAST) as (sim, pair):
        first = radar(pair.link_a, "mr60fda1")
        async with streaming(first):
            with pytest.raises(DriverConnectError, match="cannot open"):
                await radar(pair.link_a, "mr60fda1").stream(Collector())
