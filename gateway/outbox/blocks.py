"""How the outbox packs the rows of one commit into one compressed block.

During an uplink outage every reading is committed. Stored one SQLite row per
reading (its line protocol and its JSON document side by side), a reading cost
about 540 bytes of SD-card writes (WAL, then the checkpoint). Readings from one
poll differ in little but their values, so a commit's rows packed together and
compressed take a tenth of the space or less, written as a few full pages instead
of a b-tree cell per row.

A block's body is a codec byte, then the compressed text: a JSON header (the rows'
id steps, kinds, devices, timestamps, and which rows have no document), a NUL, then
each row's line and document (when it has one) joined by NULs. A row's line and
document sit next to each other, so the value they share compresses to a short back
reference. Text that itself holds a NUL (it never should) goes as ``CODEC_JSON``:
one JSON array ``[header, texts]``.

The codec is lzma (raw LZMA2, a hash-chain match finder, a 256 kB window: a block
is about that), not zlib: on the bench's readings 18.6 bytes a reading against 24
(each byte reaches the SD card twice, WAL and checkpoint), for about twice the CPU
(14 ms per 1,000 readings on the bench machine, in the commit's worker thread) and
a few MB of memory while it runs.
"""

from __future__ import annotations

import json
import lzma

CODEC_TEXT = b"\x01"
CODEC_JSON = b"\x02"
FILTERS = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 18, "mf": lzma.MF_HC4,
            "nice_len": 32, "mode": lzma.MODE_NORMAL, "depth": 0}]
# A block's columns, in the order pack() returns them.
INSERT_BLOCK = "INSERT INTO blocks(id, first_id, rows, events, ts, body) VALUES (?, ?, ?, ?, ?, ?)"
_SEP = "\x00"
_ID = 5  # a staged row is (kind, device, ts, line, doc, id)


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
        codec, raw = CODEC_TEXT, json.dumps(header, separators=(",", ":")) + _SEP + joined
    else:
        codec, raw = CODEC_JSON, json.dumps([header, texts], separators=(",", ":"))
    body = codec + lzma.compress(raw.encode(), format=lzma.FORMAT_RAW, filters=FILTERS)
    events = len(rows) - kinds.count(0)
    return ids[-1], ids[0], len(rows), events, min(r[2] for r in rows), body


def unpack(body: bytes) -> list[tuple]:
    """A block's body -> its rows ``(id, kind, device, ts, line, doc)`` in id order.

    Raises ``BlockError`` when the bytes do not decode to a consistent block."""
    try:
        codec = body[:1]
        if codec not in (CODEC_TEXT, CODEC_JSON):
            raise BlockError(f"unknown block codec {codec!r}")
        text = lzma.decompress(body[1:], format=lzma.FORMAT_RAW, filters=FILTERS).decode()
        if codec == CODEC_TEXT:
            head, _, joined = text.partition(_SEP)
            header = json.loads(head)
            texts = joined.split(_SEP)
        else:
            header, texts = json.loads(text)
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
    except (ValueError, TypeError, lzma.LZMAError, StopIteration) as exc:  # (JSON, UTF-8: ValueError)
        raise BlockError(f"block does not decode: {exc}") from exc
