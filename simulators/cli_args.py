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
