"""A commit's rows packed into one compressed block and back (gateway/outbox/blocks.py)."""

from __future__ import annotations

import pytest

from gateway.outbox import EVENT, READING
from gateway.outbox.blocks import CODEC_JSON, CODEC_TEXT, BlockError, pack, unpack


def test_rows_come_back_as_they_went_with_their_ids_kinds_and_missing_documents() -> None:
    rows = [(READING, "dev-1", 1.5, "m,device=dev-1 v=0.1 1", '{"v":0.1}', 7),
            (EVENT, "door", 2.25, "e,device=door open=1i 2", None, 8),
            (READING, "dev-1", 0.75, "m,device=dev-1 v=1e-300 3", '{"v":1e-300}', 11),  # a gap
            (READING, "dév", 3.0, "m,device=dév v=\"ünï\\\" 4", '{"v":"ü\\"\\n"}', 12)]
    last, first, n, events, oldest, body = pack(rows)
    assert (last, first, n, events, oldest) == (12, 7, 4, 1, 0.75)
    assert body[:1] == CODEC_TEXT
    assert unpack(body) == [(r[5], *r[:5]) for r in rows]


def test_text_holding_a_nul_goes_as_json_and_still_comes_back() -> None:
    rows = [(READING, "d", 1.0, "m v=1 1", None, 1), (READING, "d\x00x", 2.0, "m s=\"a\x00b\" 2",
                                                      '{"s":"a\\u0000b"}', 2)]
    body = pack(rows)[5]
    assert body[:1] == CODEC_JSON
    assert unpack(body) == [(r[5], *r[:5]) for r in rows]
    # only the line or only the document holding one is enough
    for row in ((READING, "d", 1.0, "a\x00", None, 1), (READING, "d", 1.0, "a", "\x00", 1)):
        body = pack([row])[5]
        assert body[:1] == CODEC_JSON and unpack(body) == [(1, *row[:5])]


def test_readings_of_one_poll_compress_to_a_small_share() -> None:
    rows = [(READING, "dev-0001", 1_796_145_280.728944,
             f"ev_charging,building=1,channel={c},device=dev-0001,site=bench,unit=1 "
             f"power={c * 3.14159 / 7!r} 1796145280728944000",
             f'{{"device":"dev-0001","channel":{c},"ts":"2026-12-01T17:14:40.728Z",'
             f'"values":{{"power":{c * 3.14159 / 7!r}}}}}', c) for c in range(1, 1001)]
    raw = sum(len(r[3]) + len(r[4]) for r in rows)
    assert len(pack(rows)[5]) < raw / 10


@pytest.mark.parametrize(("body", "says"), [
    (b"", "unknown block codec b''"), (b"\x09abc", "unknown block codec b'\\t'"),
    (b"\x01", "block does not decode: "), (b"\x01not lzma at all", "block does not decode: "),
    (pack([(READING, "d", 1.0, "x", None, 1)])[5][:-3], "block does not decode: ")])
def test_bytes_that_do_not_decode_raise_block_error_saying_why(body, says) -> None:
    # the message is what the log and the outbox's damage count show an installer
    with pytest.raises(BlockError) as raised:
        unpack(body)
    assert str(raised.value).startswith(says), raised.value


@pytest.mark.parametrize("nul", [False, True])
def test_the_header_is_written_without_spaces(nul) -> None:
    """Every byte reaches the SD card twice (WAL, checkpoint): no ", " between numbers."""
    import lzma

    from gateway.outbox.blocks import FILTERS

    rows = [(READING, "d", 1.0 + i, "m v=1 1" + ("\x00" if nul else ""), "{}", i + 1)
            for i in range(3)]
    body = pack(rows)[5]
    raw = lzma.decompress(body[1:], format=lzma.FORMAT_RAW, filters=FILTERS)
    assert body[:1] == (CODEC_JSON if nul else CODEC_TEXT)
    assert b" " not in raw.replace(b"m v=1 1", b""), raw


def test_a_header_that_does_not_match_its_texts_raises_block_error() -> None:
    import json
    import lzma

    from gateway.outbox.blocks import FILTERS

    def body(header, texts) -> bytes:
        raw = (json.dumps(header) + "\x00" + "\x00".join(texts)).encode()
        return CODEC_TEXT + lzma.compress(raw, format=lzma.FORMAT_RAW, filters=FILTERS)

    good = [[1], [0], ["d"], [1.0], []]
    assert unpack(body(good, ["line", "doc"])) == [(1, 0, "d", 1.0, "line", "doc")]
    columns = "^block columns do not match$"
    for header, texts, says in (
            ([[1], [0], ["d"], [1.0], []], ["line"], columns),  # a document missing
            ([[1], [0, 0], ["d"], [1.0], []], ["l", "d"], columns),  # columns of two lengths
            ([[], [], [], [], []], [""], columns),  # no row
            ([[1], [0], ["d"], [1.0]], ["l", "d"], "^block does not decode: not enough values"),
            ([[1], [0], ["d"], [1.0], [0]], ["l", "d"], columns)):  # a document too many
        with pytest.raises(BlockError, match=says):
            unpack(body(header, texts))
