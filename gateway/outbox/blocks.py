"""How the outbox packs the rows of one commit into one compressed block.

During an uplink outage every reading is committed: stored one SQLite row per
reading (its line protocol and its JSON document side by side), a reading cost
about 540 bytes of SD-card writes (WAL, then the checkpoint). Readings from one
poll differ in little but their values, so a commit's rows packed together and
compressed take about a tenth of the space, and SQLite writes a few large pages
instead of a b-tree cell per row.

A block is ``CODEC_TEXT`` followed by zlib of: a JSON header (the rows' id steps,
kinds, devices, timestamps and which rows have no document), a NUL, then each
row's line and document (when it has one) joined by NULs. A row's line and
document sit next to each other, so the values they share compress to a back
reference. Text that itself holds a NUL (it never should) goes as ``CODEC_JSON``:
zlib of one JSON array ``[header, texts]``.

zlib (level 6) and not lzma: about 26 bytes a reading here against 18, for a
third of the CPU, in the same worker thread that runs the commit; lzma's
compressor also needs several MB more of memory.
"""

from __future__ import annotations

import json
import zlib

CODEC_TEXT = b"\x01"
CODEC_JSON = b"\x02"
LEVEL = 6
_SEP = "\x00"
_ID = 5  # a staged row is (kind, device, ts, line, doc, id)
# A block's columns, in the order pack() returns them.
INSERT_BLOCK = "INSERT INTO blocks(id, first_id, rows, events, ts, body) VALUES (?, ?, ?, ?, ?, ?)"


class BlockError(ValueError):
    """A block's bytes do not decode (damage on disk)."""


def pack(rows: list[tuple]) -> tuple[int, int, int, int, float, bytes]:
    """Rows ``(kind, device, ts, line, doc, id)`` in id order -> the block's columns
    ``(last_id, first_id, rows, events, oldest_ts, body)``."""
    ids = [r[_ID] for r in rows]
    steps = [ids[0]] + [b - a for a, b in zip(ids, ids[1:])]
    kinds = [r[0] for r in rows]
    header = [steps, kinds, [r[1] for r in rows], [r[2] for r in rows],
              [i for i, r in enumerate(rows) if r[4] is None]]
    texts = []
    for r in rows:
        texts.append(r[3])
        if r[4] is not None:
            texts.append(r[4])
    joined = _SEP.join(texts)
    if joined.count(_SEP) == len(texts) - 1:
        body = CODEC_TEXT + zlib.compress(
            (json.dumps(header, separators=(",", ":")) + _SEP + joined).encode(), LEVEL)
    else:
        body = CODEC_JSON + zlib.compress(
            json.dumps([header, texts], separators=(",", ":")).encode(), LEVEL)
    events = len(rows) - kinds.count(0)
    return ids[-1], ids[0], len(rows), events, min(r[2] for r in rows), body


def unpack(body: bytes) -> list[tuple]:
    """A block's body -> its rows ``(id, kind, device, ts, line, doc)`` in id order.

    Raises ``BlockError`` when the bytes do not decode to a consistent block."""
    try:
        codec, text = body[:1], zlib.decompress(body[1:]).decode()
        if codec == CODEC_TEXT:
            head, _, joined = text.partition(_SEP)
            header = json.loads(head)
            texts = joined.split(_SEP)
        elif codec == CODEC_JSON:
            header, texts = json.loads(text)
        else:
            raise BlockError(f"unknown block codec {codec!r}")
        steps, kinds, devices, stamps, no_doc = header
        n = len(steps)
        if not n or not (len(kinds) == len(devices) == len(stamps) == n) or \
                len(texts) != 2 * n - len(no_doc):
            raise BlockError("block columns do not match")
        rows = []
        missing = set(no_doc)
        row_id = 0
        t = iter(texts)
        for i in range(n):
            row_id += steps[i]
            line = next(t)
            doc = None if i in missing else next(t)
            rows.append((row_id, kinds[i], devices[i], stamps[i], line, doc))
        return rows
    except BlockError:
        raise
    except (ValueError, TypeError, zlib.error, StopIteration) as exc:  # (UnicodeError, JSON: ValueError)
        raise BlockError(f"block does not decode: {exc}") from exc
