"""``community-gateway simulate door|camera``: the sub-commands of the MQTT-speaking simulators.

Each sub-command sets ``simulation``: a function from the parsed arguments to the
simulator's coroutine. The CLI sets up logging and runs it until a signal; the
simulators know nothing of the CLI (the CLI imports them, never the reverse).
"""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from typing import Any

from simulators import camera, door
from simulators.mqtt_publisher import FAULTS


def add_door_and_camera_parsers(sim_kinds) -> None:
    """Add ``door`` and ``camera`` to the ``simulate`` sub-parsers."""
    d = sim_kinds.add_parser(
        "door", help="door access: Modbus door I/O module + access terminal on MQTT",
        description="Serves a door I/O module (contact, exit button, lock relay per door) on Modbus "
                    "TCP (or RTU) and publishes an access terminal's JSON events to an MQTT broker.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in door.SCENARIOS.items()))
    d.add_argument("--scenario", default="normal", choices=sorted(door.SCENARIOS))
    d.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                   help="MQTT broker the terminal publishes to (default 127.0.0.1:1883)")
    d.add_argument("--tcp", default="127.0.0.1:5021", metavar="HOST:PORT",
                   help="serve the door module on Modbus TCP here (default 127.0.0.1:5021; '' for none)")
    d.add_argument("--serial", default=None, metavar="DEVICE",
                   help="also serve the door module on Modbus RTU on this serial port")
    d.add_argument("--baudrate", type=int, default=9600)
    d.add_argument("--terminal-id", default="T3E-01", help="the terminal's id in its topic")
    d.add_argument("--doors", type=int, default=2)
    d.add_argument("--incident-door", type=int, default=1)
    d.add_argument("--incident-after", type=float, default=10.0, metavar="SECONDS")
    d.add_argument("--held-s", type=float, default=150.0, help="how long the held door stays open")
    d.add_argument("--fault", choices=FAULTS, default=None,
                   help="silence: module and terminal go quiet; malformed: broken JSON as well")
    d.add_argument("--seed", type=int)
    d.set_defaults(simulation=_door)

    c = sim_kinds.add_parser(
        "camera", help="thrown-object camera analytics events on MQTT",
        description="Publishes a thrown-object camera's analytics events (start/stop pulses with "
                    "building, facade, floor estimate, confidence, snapshot and clip) and heartbeats.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in camera.SCENARIOS.items()))
    c.add_argument("--scenario", default="throw", choices=sorted(camera.SCENARIOS))
    c.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    c.add_argument("--camera-id", default="cam-b5-east")
    c.add_argument("--building", default="5")
    c.add_argument("--facade", default="east")
    c.add_argument("--floor", type=int, default=12, help="floor the object is thrown from")
    c.add_argument("--incident-after", type=float, default=10.0, metavar="SECONDS")
    c.add_argument("--pulse", type=float, default=3.0, metavar="SECONDS",
                   help="time from a throw's start pulse to its stop pulse")
    c.add_argument("--fault", choices=FAULTS, default=None)
    c.set_defaults(simulation=_camera)


def _door(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    return door.run_door(
        broker=args.broker, tcp=args.tcp or None, serial=args.serial, baudrate=args.baudrate,
        scenario=args.scenario, terminal_id=args.terminal_id, doors=args.doors,
        incident_door=args.incident_door, incident_after=args.incident_after, held_s=args.held_s,
        fault=args.fault, seed=args.seed)


def _camera(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    return camera.run_camera(
        broker=args.broker, scenario=args.scenario, camera_id=args.camera_id,
        building=args.building, facade=args.facade, floor=args.floor,
        incident_after=args.incident_after, pulse_s=args.pulse, fault=args.fault)


def add_alarm_panel_parser(sim_kinds) -> None:
    """Add ``alarm-panel`` (SIA DC-09 / Contact ID over TCP) to the ``simulate`` sub-parsers."""
    from simulators import alarm_panel

    p = sim_kinds.add_parser(
        "alarm-panel", help="intrusion / emergency panel reporting over SIA DC-09 (Contact ID)",
        description="Dials a SIA DC-09 receiver (the gateway's alarm_host device) over TCP, sends "
                    "NULL heartbeats and Contact ID events, and prints the receiver's answers.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in alarm_panel.SCENARIOS.items()))
    p.add_argument("--receiver", default="127.0.0.1:9000", metavar="HOST:PORT",
                   help="the gateway's alarm_host 'listen' address (default 127.0.0.1:9000)")
    p.add_argument("--account", default="1234", help="the panel's account (hex digits)")
    p.add_argument("--scenario", default="one-key", choices=sorted(alarm_panel.SCENARIOS))
    p.add_argument("--incident-after", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--heartbeat", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between NULL supervision frames")
    p.add_argument("--fault", choices=alarm_panel.FAULTS, default=None,
                   help="silent: nothing at all; bad-crc: each event first with a broken CRC; "
                        "garbage: random bytes before each frame")
    p.set_defaults(simulation=_alarm_panel)


def _alarm_panel(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from simulators import alarm_panel

    return alarm_panel.run_panel(
        receiver=args.receiver, account=args.account, scenario=args.scenario,
        incident_after=args.incident_after, heartbeat_s=args.heartbeat, fault=args.fault)


def add_health_radar_parser(sim_kinds) -> None:
    """Add ``health-radar`` (MR60BHA2 frames on a serial line) to the ``simulate`` sub-parsers."""
    from simulators import health_radar

    p = sim_kinds.add_parser(
        "health-radar", help="breathing and heart-rate radar (MR60BHA2) on a serial line",
        description="Writes MR60BHA2 TinyFrame frames (presence, distance, breath and heart "
                    "rate) as a radar over a resident's bed would.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in health_radar.SCENARIOS.items()))
    p.add_argument("--scenario", default="normal", choices=sorted(health_radar.SCENARIOS))
    p.add_argument("--serial", default="pty", metavar="pty|DEVICE",
                   help="'pty' makes a pseudo-terminal pair and prints the gateway's side")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--incident-after", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    p.add_argument("--fault", action="append", default=[], choices=health_radar.FAULTS)
    p.set_defaults(simulation=_health_radar)


def _health_radar(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from simulators import health_radar

    return health_radar.run_health_radar(
        scenario=args.scenario, serial=args.serial, baudrate=args.baudrate,
        incident_after=args.incident_after, interval=args.interval, faults=args.fault)


def add_io_module_parser(sim_kinds) -> None:
    """Add ``io-module`` (a DI/DO/AI Modbus module) to the ``simulate`` sub-parsers."""
    from simulators import io_module

    p = sim_kinds.add_parser(
        "io-module", help="Modbus I/O module: perimeter beams, one-key buttons, 4-20 mA water",
        description="Serves an 8 DI / 8 DO / 4 AI Modbus module (slave 1) on TCP or RTU: "
                    "normally-closed contact loops, relay outputs, 4-20 mA pressure and level.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in io_module.SCENARIOS.items()))
    p.add_argument("--scenario", default="normal", choices=sorted(io_module.SCENARIOS))
    p.add_argument("--tcp", default="127.0.0.1:5022", metavar="HOST:PORT",
                   help="serve on Modbus TCP here (default 127.0.0.1:5022; '' for none)")
    p.add_argument("--serial", default=None, metavar="pty|DEVICE",
                   help="also serve Modbus RTU on this serial port ('pty' makes a pair)")
    p.add_argument("--baudrate", type=int, default=9600)
    p.add_argument("--incident-after", type=float, default=10.0, metavar="SECONDS")
    p.set_defaults(simulation=_io_module)


def _io_module(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from simulators.io_module import run_io_module

    return run_io_module(
        scenario=args.scenario, tcp=args.tcp or None, serial=args.serial,
        baudrate=args.baudrate, incident_after=args.incident_after)


def add_smoke_detector_parser(sim_kinds) -> None:
    """Add ``smoke-detector`` (vendor platform JSON over MQTT) to the ``simulate`` sub-parsers."""
    from simulators import smoke_detector
    from simulators.mqtt_publisher import FAULTS as MQTT_FAULTS

    p = sim_kinds.add_parser(
        "smoke-detector", help="stand-alone smoke detector reported by its platform over MQTT",
        description="Publishes a smoke detector's reports (heartbeat, alarm, fault, low battery, "
                    "normal) as its vendor platform forwards them, on fire-detectors/<id>/report.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in smoke_detector.SCENARIOS.items()))
    p.add_argument("--scenario", default="smoke", choices=sorted(smoke_detector.SCENARIOS))
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    p.add_argument("--detector-id", default="sd-0001")
    p.add_argument("--incident-after", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--fault", choices=MQTT_FAULTS, default=None)
    p.set_defaults(simulation=_smoke_detector)


def _smoke_detector(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from simulators.smoke_detector import run_smoke_detector

    return run_smoke_detector(
        broker=args.broker, detector_id=args.detector_id, scenario=args.scenario,
        incident_after=args.incident_after, fault=args.fault)
def add_fire_centre_parser(sim_kinds) -> None:
    """Add ``fire-centre`` (the city fire remote-monitoring centre) to ``simulate``."""
    f = sim_kinds.add_parser(
        "fire-centre", help="city fire remote-monitoring centre (GB/T 26875.3): shows what the "
                            "gateway reports",
        description="Listens as the centre the gateway's fire_centre section points at, confirms "
                    "each frame and prints it decoded: component fire alarms and faults with their "
                    "addresses and descriptions, system and device states, heartbeats.")
    f.add_argument("--listen", default="127.0.0.1:9000", metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:9000)")
    f.add_argument("--address", type=lambda v: int(v, 0), default=None,
                   help="the centre's address (default 0x015B38, the standard's examples)")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--deny", action="store_true", help="deny every frame (to see resends)")
    mode.add_argument("--silent", action="store_true", help="answer nothing (to see timeouts)")
    f.add_argument("--utc-offset", type=float, default=8.0, metavar="HOURS",
                   help="time zone of the time tags (default 8, China)")
    f.set_defaults(simulation=_fire_centre)


def _fire_centre(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from simulators.fire_centre import CENTRE_ADDRESS, run_fire_centre

    return run_fire_centre(
        listen=args.listen, deny=args.deny, silent=args.silent,
        address=CENTRE_ADDRESS if args.address is None else args.address,
        utc_offset_hours=args.utc_offset)
