"""``community-gateway outbox CONFIG``: what waits in a site's outbox, read without writing.

Safe while the gateway runs: the file is opened read-only (WAL lets a reader in
beside the writer). Prints the depth, the age of the oldest row, readings dropped
for the budget, quarantined rows, per sink its cursor, lag and oldest unsent row, and
the bytes the running gateway (the process holding the outbox's lock) writes to disk
per hour, from /proc.
"""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path

from gateway.config.loader import read_config
from gateway.errors import ConfigError, OutboxError
from gateway.outbox.location import outbox_path
from gateway.outbox.store import read_summary

EXIT_CONFIG = 2
EXIT_NO_OUTBOX = 1


def add_outbox_parser(sub) -> None:
    """The ``outbox`` subcommand."""
    p = sub.add_parser("outbox", help="show what waits in the site's outbox (read-only)",
                       description="Opens the site's outbox file read-only (also while the "
                                   "gateway runs) and prints its depth, the age of the oldest "
                                   "row, dropped and quarantined rows, and each sink's lag.")
    p.add_argument("config", help="site config YAML file")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(handler=_outbox)


def _outbox(args: argparse.Namespace) -> int:
    try:
        config = read_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if config.outbox.store == "memory":
        print(f"{args.config}: the outbox is kept in memory (outbox.store: memory); "
              f"nothing to read", file=sys.stderr)
        return EXIT_NO_OUTBOX
    path = outbox_path(config, Path(args.config))
    try:
        summary = read_summary(path)
    except OutboxError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NO_OUTBOX
    summary["budget_bytes"] = int(config.outbox.max_mb * 1024 * 1024)
    summary["gateway_process"] = gateway_writes(path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def gateway_writes(path) -> dict | None:
    """The running gateway's disk writes (the process holding the outbox's lock), read
    from /proc: nothing is written to measure them."""
    from gateway.operations.process_probe import lock_holder, process_writes

    pid = lock_holder(f"{path}.lock")
    return None if pid is None else process_writes(pid)


def format_summary(s: dict) -> str:
    """The summary as a few lines for a person."""
    lines = [
        f"outbox {s['path']}",
        f"  rows waiting: {s['rows']:,}   oldest: {_age(s['oldest_age_seconds'])}",
        f"  size: {s['used_bytes'] / 1e6:.1f} MB used of a {s['budget_bytes'] / 1e6:.1f} MB "
        f"budget (file {s['file_bytes'] / 1e6:.1f} MB)",
        f"  dropped for the budget: {s['dropped']:,}   quarantined: {s['quarantined']:,}",
    ]
    proc = s.get("gateway_process")
    if proc:
        lines.append(f"  gateway pid {proc['pid']}: {proc['write_bytes_per_hour'] / 1e6:.2f} MB "
                     f"written to disk per hour (all files; {proc['write_bytes'] / 1e6:.1f} MB "
                     f"in {_age(proc['running_seconds']).removesuffix(' ago')})")
    elif "gateway_process" in s:
        lines.append("  no gateway running on this outbox (or its /proc not readable)")
    if not s["sinks"]:
        lines.append("  no sinks recorded yet")
    for name, sink in s["sinks"].items():
        state = "up to date" if not sink["lag_rows"] else (
            f"{sink['lag_rows']:,} rows behind, oldest unsent {_age(sink['oldest_unsent_age_seconds'])}")
        lines.append(f"  sink {name}: cursor {sink['cursor']:,}, {state}, "
                     f"quarantined {sink['quarantined']:,}")
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
