"""Commands for installers: ``probe modbus``, ``probe serial``, ``tail``, ``alarms``,
``sign-command``.

Each module adds its subcommand to the parser (``add_parser``) and runs it; the
daemon itself needs none of them.
"""

from __future__ import annotations

import argparse

from gateway.tools import alarms_command, probe_modbus, probe_serial, sign_command, tail


def add_tool_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``probe``, ``tail``, ``alarms`` and ``sign-command`` on the top-level subparsers."""
    probe = sub.add_parser(
        "probe", help="read a device directly, to find the right settings on site",
        description="Talk to one device without a config file: read Modbus registers and see "
                    "them decoded, or watch a serial line's bytes and frames. Nothing is "
                    "written to the device.")
    kinds = probe.add_subparsers(dest="probe_kind", metavar="KIND", required=True)
    probe_modbus.add_parser(kinds)
    probe_serial.add_parser(kinds)
    tail.add_parser(sub)
    alarms_command.add_parser(sub)
    sign_command.add_parser(sub)
