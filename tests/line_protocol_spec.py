"""InfluxDB line protocol read back to the letter of the spec, for the tests.

Written from the InfluxDB line-protocol reference, not from the encoder: a
measurement, tag keys, tag values and field keys end at an unescaped separator
(``,`` and space; ``=`` after a key), ``\\`` escapes ``,``, ``=``, space and
``\\`` itself there (any other ``\\`` is a literal backslash); a string field is
quoted, with ``\\"`` and ``\\\\`` its only escapes. VictoriaMetrics reads names the
same way (checked against it in ``test_line_protocol_props.py``), but keeps no
strings: this parser is how the tests see a string field's text.

Also the encoder's documented contract for untrusted text (``expected_*``): what a
value must read back as, written here from ``gateway/upstream/line_protocol.py``'s
module doc so that a change of the rules shows up as a failing test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_ESCAPABLE = frozenset(",= \\")
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TIMESTAMP = re.compile(r"-?\d+")

REPLACEMENT = "\ufffd"
UNCARRIABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_NAME, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_STRING = 128, 64, 256, 4096


class LineError(ValueError):
    """The text is not one valid line of line protocol."""


@dataclass
class Point:
    measurement: str
    tags: dict[str, str]
    fields: list[tuple[str, float | str]]  # in line order; numbers as float, strings as str
    ts: int


def _name(line: str, i: int, stops: str) -> tuple[str, int]:
    out = []
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n and line[i + 1] in NAME_ESCAPABLE:
            out.append(line[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    return "".join(out), i


def _expect(line: str, i: int, char: str) -> int:
    if i >= len(line) or line[i] != char:
        raise LineError(f"expected {char!r} at {i} in {line!r}")
    return i + 1


def parse_line(line: str) -> Point:
    """One line of line protocol (no newline in it) as a Point; LineError if invalid."""
    if "\n" in line or "\r" in line:
        raise LineError("more than one line")
    if not line or line[0] == "#" or line[0] in " \t":
        raise LineError("empty, a comment or leading whitespace")
    measurement, i = _name(line, 0, ", ")
    if not measurement:
        raise LineError("empty measurement")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        key, i = _name(line, i + 1, "=")
        i = _expect(line, i, "=")
        value, i = _name(line, i, ", ")
        if not key or not value:
            raise LineError(f"empty tag key or value in {line!r}")
        if key in tags:
            raise LineError(f"tag {key!r} twice")
        tags[key] = value
    i = _expect(line, i, " ")
    fields: list[tuple[str, float | str]] = []
    while True:
        key, i = _name(line, i, "=")
        i = _expect(line, i, "=")
        if not key:
            raise LineError("empty field key")
        if i < len(line) and line[i] == '"':
            i += 1
            text = []
            while True:
                if i >= len(line):
                    raise LineError("unterminated string field")
                c = line[i]
                if c == "\\" and i + 1 < len(line) and line[i + 1] in '"\\':
                    text.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    text.append(c)
                    i += 1
            fields.append((key, "".join(text)))
        else:
            end = i
            while end < len(line) and line[end] not in ", ":
                end += 1
            token = line[i:end]
            if not _NUMBER.fullmatch(token):
                raise LineError(f"field {key!r}: {token!r} is not a float")
            fields.append((key, float(token)))
            i = end
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    i = _expect(line, i, " ")
    if not _TIMESTAMP.fullmatch(line[i:]):
        raise LineError(f"bad timestamp {line[i:]!r}")
    return Point(measurement, tags, fields, int(line[i:]))


# -- what the encoder promises for untrusted text ------------------------------------


def expected_text(text: str, limit: int) -> str:
    """Uncarriable characters as U+FFFD, then cut to ``limit``."""
    return UNCARRIABLE.sub(REPLACEMENT, text)[:limit]


def expected_key(text: str) -> str:
    return expected_text(text, MAX_NAME) or REPLACEMENT


def expected_field_key(text: str) -> str:
    # VictoriaMetrics drops a line with '"' in a field key, whatever the escape
    return expected_key(text).replace('"', REPLACEMENT)


def expected_measurement(text: str) -> str:
    m = expected_text(text, MAX_NAME) or REPLACEMENT
    return REPLACEMENT + m[1:] if m.startswith("#") else m


def expected_tags(raw: dict[str, str]) -> dict[str, str]:
    out = {}
    for k, v in raw.items():
        value = expected_text(v, MAX_TAG_VALUE)
        if value:
            out[expected_text(k, MAX_TAG_KEY) or REPLACEMENT] = value
    return out
