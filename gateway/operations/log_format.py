"""Log lines fit for journald: one line per record, the level as a syslog priority.

Under systemd (``$JOURNAL_STREAM`` names our stderr) each line starts with
``<N>`` so journald stores the record's level (``journalctl -p err`` works), the
timestamp is left to journald, and a traceback is folded into the same line so
one event stays one journal entry. In a terminal the format is the usual one.
"""

from __future__ import annotations

import logging
import os
import sys

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def _priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, tracebacks folded into the one line."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\r", "").replace("\n", " | ")
        return f"<{_priority(record.levelno)}>{text}"


def under_journald(stream=None) -> bool:
    """Whether ``stream`` (stderr) is connected to the journal, per ``$JOURNAL_STREAM``."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def log_formatter(stream=None) -> logging.Formatter:
    """The formatter for ``stream``: journald's or the terminal's."""
    return JournalFormatter() if under_journald(stream) else logging.Formatter(TERMINAL_FORMAT)


# Libraries that would log every failed reconnect; the gateway logs the state change
# once. "mqtt" is paho's logger (under aiomqtt).
NOISY_LOGGERS = ("pymodbus", "amqtt", "transitions", "aiohttp", "mqtt")


def setup_logging(verbose: bool, stream=None) -> None:
    """Log to ``stream`` (stderr) in journald's format under systemd, else the terminal's."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_formatter(stream))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.CRITICAL)
