"""Command line: ``community-gateway run|check|demo|simulate|outbox|...``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine

from gateway.runtime.site import load_site
from gateway.config.secrets import find_secrets
from gateway.errors import ConfigError
from gateway.operations.log_format import setup_logging
from gateway.operations.systemd import SystemdNotifier

EXIT_CONFIG = 2
EXIT_WOULD_NOT_START = 1  # `check`: the file is valid, but a secret or the users file is missing


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else argv
    # `run` builds only its own parser: the other commands' modules (simulators with
    # pymodbus' server, the console's users, the tools) would stay in the gateway's
    # memory for nothing.
    words = [a for a in argv if not a.startswith("-")]
    parser = _parser(only_run=bool(words) and words[0] == "run")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    return args.handler(args)


def _parser(only_run: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="community-gateway",
        description="Edge gateway for smart residential communities: reads door, EV-charging, "
                    "fall-radar and camera sensors, raises alarms locally, forwards readings.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the gateway with a site config",
        description="Check the site config, then poll its devices, apply its alarm rules and "
                    "forward every reading through the durable outbox until SIGINT/SIGTERM "
                    "(SIGHUP re-reads the config). Devices, the broker and the time-series "
                    "database that cannot be reached are retried. Open alarms and the outbox "
                    "are kept in state_dir (default: a folder per site id under "
                    "$STATE_DIRECTORY, else /var/lib/community-gateway as root or "
                    "~/.local/state/community-gateway otherwise); the first log line says "
                    "where. Exit status 2 when the config is refused.")
    run.add_argument("config", help="site config YAML file")
    run.set_defaults(handler=_run)
    if only_run:
        return parser
    from gateway.console.user_cli import add_user_parser
    from gateway.outbox.report import add_outbox_parser
    from gateway.tools import add_tool_parsers
    from simulators.cli_args import (add_alarm_panel_parser, add_door_and_camera_parsers,
                                     add_fire_centre_parser, add_health_radar_parser,
                                     add_io_module_parser, add_smoke_detector_parser)

    check = sub.add_parser("check", help="check a site config and exit (0 = good)",
                           description="Validate a site config: types, unknown keys, references "
                                       "between devices, buses, profiles and rules, then what the "
                                       "start needs besides the file (secrets in the environment "
                                       "or files, the console's users file). Prints every problem "
                                       "with its key path. Exit status: 0 the gateway would start, "
                                       "1 the file is valid but the gateway would not start, "
                                       "2 the file has problems.")
    check.add_argument("config", help="site config YAML file (or a hub file: one with 'hub:')")
    check.set_defaults(handler=_check)

    hub = sub.add_parser("hub", help="run the hub above the gateways with a hub file",
                         description="Watches every site in its scope on the broker: live "
                                     "alarms, gateways offline, history; read-only HTTP API.")
    hub.add_argument("config", help="hub config YAML file (top-level 'hub:' section)")
    hub.set_defaults(handler=_hub)

    add_user_parser(sub)
    add_tool_parsers(sub)  # probe modbus|serial, tail, alarms
    add_outbox_parser(sub)  # what waits for the upstream

    demo = sub.add_parser(
        "demo", help="run the whole system on simulators, no outside service",
        description="Starts, all on loopback, an embedded MQTT broker, four simulated sensor "
                    "kinds and the gateway: a 4-port EV-bike charging cabinet (Modbus TCP; the "
                    "--scenario incident on port 3 after 10 s), a fall-detection radar on a "
                    "pseudo-terminal (a fall after 15 s), a door module and an access terminal "
                    "(from 25 s: a forced door, five denials, duress, tamper) and a "
                    "thrown-object camera (a throw after 30 s). "
                    "Prints readings and each alarm as it happens, and the security-room "
                    "console's URL with a fresh login, until Ctrl-C. Each run starts with no "
                    "open alarms.")
    demo.add_argument("--scenario", default="overpower",
                      help="cabinet scenario: normal, overpower, overheat, smoke (default overpower)")
    demo.add_argument("--data-dir", default="demo-data",
                      help="where the demo keeps its config, console login, time series and "
                           "alarm history (default demo-data)")
    demo.set_defaults(handler=_demo)

    sim = sub.add_parser("simulate", help="run a device simulator by hand")
    sim.set_defaults(handler=_simulate)  # each kind sets ``simulation``: args -> coroutine
    sim_kinds = sim.add_subparsers(dest="kind", metavar="KIND", required=True)
    cab = sim_kinds.add_parser("cabinet", help="EV-bike charging cabinet (Modbus TCP or RTU)")
    cab.add_argument("--scenario", default="normal",
                     help="normal, overpower, overheat, smoke (default normal)")
    cab.add_argument("--ports", type=int, default=4)
    cab.add_argument("--incident-port", type=int, default=3, help="port the incident happens on")
    cab.add_argument("--incident-after", type=float, default=10.0, help="seconds before the incident")
    where = cab.add_mutually_exclusive_group()
    where.add_argument("--tcp", default=None, metavar="HOST:PORT",
                       help="serve Modbus TCP here (default 127.0.0.1:5020)")
    where.add_argument("--serial", default=None, metavar="DEVICE",
                       help="serve Modbus RTU on this serial port or pseudo-terminal")
    cab.add_argument("--baudrate", type=int, default=9600)
    cab.add_argument("--meter-base", type=int, default=1, help="slave id of port 1's meter")
    cab.add_argument("--controller-id", type=int, default=100, help="slave id of the controller")
    cab.add_argument("--speed", type=float, default=1.0, help="charging speed-up factor")
    cab.set_defaults(simulation=_cabinet)
    add_door_and_camera_parsers(sim_kinds)
    add_alarm_panel_parser(sim_kinds)
    add_health_radar_parser(sim_kinds)
    add_io_module_parser(sim_kinds)
    add_smoke_detector_parser(sim_kinds)
    add_fire_centre_parser(sim_kinds)

    radar = sim_kinds.add_parser(
        "radar", help="fall-detection radar writing real frames on a serial line",
        description="Writes MR60FDA1 or TinyFrame (LD6002C / MR60FDA2) frames as a ceiling radar "
                    "would, answers the radar's commands, and can inject faults.")
    radar.add_argument("--protocol", default="mr60fda1", choices=["mr60fda1", "ld6002c", "mr60fda2"])
    radar.add_argument("--scenario", default="normal", choices=["normal", "fall", "empty"],
                       help="normal: a day of coming and going; fall: moving, a fall after "
                            "--fall-after s, then no motion; empty: nobody (default normal)")
    radar.add_argument("--serial", default="pty", metavar="pty|DEVICE",
                       help="serial port to write to, or 'pty' to make a pty pair and print the "
                            "gateway's side (default pty)")
    radar.add_argument("--baudrate", type=int, default=115200)
    radar.add_argument("--fault", action="append", default=[],
                       choices=["silence", "garbage", "bad_checksum", "truncated", "deaf", "vanish"],
                       help="inject a fault (repeatable): silence, garbage bytes, bad checksums, "
                            "truncated frames, deaf (ignores commands), vanish (pty unplugged "
                            "now and then)")
    radar.add_argument("--fall-after", type=float, default=10.0, help="seconds before the fall")
    radar.add_argument("--dwell-after", type=float, default=10.0,
                       help="seconds after the fall before stationary dwell is reported")
    radar.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    radar.add_argument("--seed", type=int)
    radar.set_defaults(simulation=_radar)
    return parser


def _check(args: argparse.Namespace) -> int:
    from gateway.hub.cli import check_hub_file

    checked = check_hub_file(args.config)  # None: not a hub file, a site file then
    if checked is not None:
        return checked
    try:
        site = load_site(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    cfg = site.config
    errors = []
    blockers = list(site.blockers)
    for key, secret in find_secrets(cfg):  # mqtt.password, influxdb.token, http.token, ...
        try:
            value = secret.reveal()
        except ValueError as exc:
            blockers.append(f"{key} ({secret.describe()}): {exc}")
            continue
        if key.startswith("mqtt.commands.keys["):
            try:
                from gateway.alarms.signing import check_secret

                check_secret(value)
            except ValueError as exc:
                errors.append(f"{key} ({secret.describe()}): {exc}")
    for warning in site.warnings:
        print(f"warning: {warning}")
    if errors:
        print(f"{args.config}: " + "; ".join(errors), file=sys.stderr)
        return EXIT_CONFIG
    summary = (f"site {cfg.site.id}: {len(cfg.buses)} buses, {len(cfg.devices)} devices, "
               f"{len(cfg.rules)} rules")
    if blockers:
        print(f"{args.config}: valid ({summary}), but the gateway will not start: "
              f"{len(blockers)} problem(s)", file=sys.stderr)
        for blocker in blockers:
            print(f"  {blocker}", file=sys.stderr)
        return EXIT_WOULD_NOT_START
    print(f"{args.config}: OK ({summary})")
    return 0


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from gateway.runtime.app import Gateway

    try:
        site = load_site(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in site.warnings:
        logging.getLogger("gateway").warning("config: %s", warning)
    if os.geteuid() == 0:
        logging.getLogger("gateway").warning(
            "running as root: the systemd unit (deploy/) runs it as user community-gateway")

    notifier = SystemdNotifier.from_environment()

    async def serve() -> None:
        # Built inside the loop: the HTTP and MQTT clients bind to it.
        gateway = Gateway(site, notifier=notifier)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, gateway.request_reload)  # systemctl reload
        try:
            await gateway.run()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    return run_until_signal(serve())


def _hub(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from gateway.hub.cli import run_hub

    return run_hub(args.config, run_until_signal)


def _demo(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from gateway.demo.run import run_demo

    return run_until_signal(run_demo(scenario=args.scenario, data_dir=args.data_dir))


def _simulate(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_until_signal(args.simulation(args))


def _cabinet(args: argparse.Namespace) -> Coroutine:
    from simulators.modbus_server import run_cabinet

    tcp = args.tcp if args.serial is None and args.tcp is not None else (
        None if args.serial else "127.0.0.1:5020")
    return run_cabinet(
        ports=args.ports, scenario=args.scenario, tcp=tcp, serial=args.serial,
        baudrate=args.baudrate, meter_base=args.meter_base, controller_id=args.controller_id,
        speed=args.speed, scenario_port=args.incident_port, incident_after=args.incident_after)


def _radar(args: argparse.Namespace) -> Coroutine:
    from simulators.radar import run_radar

    return run_radar(
        protocol=args.protocol, scenario=args.scenario, serial=args.serial,
        baudrate=args.baudrate, faults=args.fault, fall_after=args.fall_after,
        dwell_after=args.dwell_after, interval=args.interval, seed=args.seed)


def run_until_signal(coro: Coroutine) -> int:
    """Run a coroutine until it ends or SIGINT/SIGTERM cancels it; 0 on a clean stop."""

    async def supervise() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        try:
            await coro
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(supervise())
    except asyncio.CancelledError:
        return 0
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    return 0
