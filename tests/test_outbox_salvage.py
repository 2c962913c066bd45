"""The salvage of a damaged outbox, step by step, on small files.

tests/test_state_files.py damages real files; here the damage is put exactly where a
test wants it (a wrapper that makes chosen ids unreadable, as a damaged page does), so
each step of the search for readable rows can be checked. ``source()`` is a file of the
version before blocks (one row per reading, tests/outbox_v1.py), ``block_source()`` one
of blocks."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.outbox import READING, SqliteOutbox
from gateway.outbox.blocks import INSERT_BLOCK, pack, unpack
from gateway.outbox.recovery import Salvage
from outbox_v1 import V1_SCHEMA


def test_the_summary_says_what_was_salvaged_and_lost() -> None:
    report = Salvage(moved_to=Path("/x/outbox.sqlite.corrupt-1"), damage="malformed",
                     copied=7, unreadable=3, holes=[(4, 6)])
    assert report.summary() == ("outbox was damaged (malformed); moved to "
                                "outbox.sqlite.corrupt-1: 7 rows salvaged, 3 unreadable")
    report.tail_lost = report.cursors_lost = True
    assert report.summary().endswith("3 unreadable and an unknown number at the end; sink "
                                     "cursors lost, sending every salvaged row again")


def test_the_details_carry_the_first_twenty_holes() -> None:
    report = Salvage(moved_to=Path("/x/o.corrupt"), damage="d", copied=5, unreadable=25,
                     holes=[(i, i) for i in range(1, 26)], cursors_lost=True)
    assert report.details() == {
        "moved_to": "/x/o.corrupt", "salvaged_rows": 5, "unreadable_rows": 25, "tail_lost": False,
        "holes": [[i, i] for i in range(1, 21)], "cursors_lost": True}
    fresh = Salvage(moved_to=Path("a"), damage="d")
    assert (fresh.copied, fresh.unreadable, fresh.holes, fresh.tail_lost, fresh.cursors_lost,
            fresh.quarantine_copied, fresh.quarantine_unreadable) == (0, 0, [], False, False, 0, 0)


# -- a source with damage exactly where a test wants it ---------------------------------------


MALFORMED = "database disk image is malformed"


class Cursor:
    def __init__(self, cur, bad: set[int]):
        self.cur, self.bad = cur, bad

    def fetchone(self):
        row = self.cur.fetchone()
        if row is not None and row[0] in self.bad:
            raise sqlite3.DatabaseError(MALFORMED)
        return row

    def fetchall(self):
        out = []
        while (row := self.fetchone()) is not None:
            out.append(row)
        return out

    def __iter__(self):
        return iter(self.fetchall())


class Damaged:
    """A real SQLite database on which the rows with chosen ids cannot be read, as on a
    damaged page: a scan fails when it reaches one, a seek when it lands on one.
    ``scan_only``: ids a seek reads but a scan does not get past; ``unreadable``: queries
    (by a part of their text) that fail whole, as when a table's root page is damaged."""

    def __init__(self, con: sqlite3.Connection, bad=(), *, quarantine_bad=(), scan_only=(),
                 unreadable=()):
        self.con = con
        self.bad = {"rows": set(bad), "quarantine": set(quarantine_bad), "blocks": set(bad)}
        self.scan_only = set(scan_only)
        self.unreadable = unreadable
        self.seeks: list[int] = []

    def execute(self, sql: str, params=()):
        if len(self.seeks) > 1000:
            raise AssertionError("the search for readable rows does not end")
        if any(part in sql for part in self.unreadable):
            raise sqlite3.DatabaseError(MALFORMED)
        cur = self.con.execute(sql, params)
        if not sql.startswith("SELECT id"):
            return cur
        table = next((t for t in ("quarantine", "blocks") if f"FROM {t}" in sql), "rows")
        bad = set(self.bad[table])
        if "id >= ?" in sql:
            self.seeks.append(params[0])
            highest = self.con.execute(f"SELECT max(id) FROM {table}").fetchone()[0]
            if highest in bad and self.con.execute(sql, params).fetchone() is None:
                raise sqlite3.DatabaseError(MALFORMED)  # past the end: the last page, damaged
        elif table in ("rows", "blocks"):
            bad |= self.scan_only
        return Cursor(cur, bad)


def source(ids, *, head: int | None = None, cursors=(("influxdb", 5),), quarantined=0,
           schema: str | None = None) -> sqlite3.Connection:
    """A v1 outbox file's tables in memory, rows with the given ids (line ``"line <id>"``)."""
    con = sqlite3.connect(":memory:", isolation_level=None)
    con.executescript(schema or V1_SCHEMA)
    con.executemany("INSERT INTO rows(id, kind, device, ts, line, doc) VALUES (?, ?, ?, ?, ?, ?)",
                    [(i, READING, "d1", 1000.0 + i, f"line {i}", None) for i in ids])
    if head is not None:
        con.execute("DELETE FROM sqlite_sequence WHERE name = 'rows'")
        con.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('rows', ?)", (head,))
    con.executemany("INSERT INTO cursors(sink, last_id) VALUES (?, ?)", list(cursors))
    con.execute("INSERT INTO meta(key, value) VALUES ('dropped', 7)")
    con.executemany("INSERT INTO quarantine(sink, row_id, kind, device, ts, line, doc, status, "
                    "error, at) VALUES ('influxdb', ?, 0, 'd1', 1.0, 'q', NULL, 400, 'bad', 2.0)",
                    [(i,) for i in range(1, quarantined + 1)])
    return con


def target() -> sqlite3.Connection:
    from gateway.outbox.store import SCHEMA

    con = sqlite3.connect(":memory:", isolation_level=None)
    con.executescript(SCHEMA)
    return con


def salvage(src: Damaged, sinks=("influxdb",)) -> tuple[Salvage, sqlite3.Connection]:
    from gateway.outbox.recovery import salvage_into

    dst = target()
    report = Salvage(moved_to=Path("o.corrupt"), damage="d")
    salvage_into(src, dst, list(sinks), report)
    return report, dst


def block_source(blocks: list[list[int]], *, head: int | None = None,
                 cursors=(("influxdb", 5),)) -> sqlite3.Connection:
    """A blocks outbox file's tables in memory: one block per list of ids."""
    from gateway.outbox.store import SCHEMA

    con = sqlite3.connect(":memory:", isolation_level=None)
    con.executescript(SCHEMA)
    for block in blocks:
        con.execute(INSERT_BLOCK, pack([(READING, "d1", 1000.0 + i, f"line {i}", None, i)
                                        for i in block]))
    if head is not None:
        con.execute("INSERT INTO meta(key, value) VALUES ('head', ?)", (head,))
    con.executemany("INSERT INTO cursors(sink, last_id) VALUES (?, ?)", list(cursors))
    return con


def all_rows(dst: sqlite3.Connection) -> list[tuple]:
    """Every row in the new file's blocks, ``(id, kind, device, ts, line, doc)``."""
    return [r for (body,) in dst.execute("SELECT body FROM blocks ORDER BY id")
            for r in unpack(body)]


def ids(dst: sqlite3.Connection) -> list[int]:
    return [r[0] for r in all_rows(dst)]


def next_id(dst: sqlite3.Connection) -> int:
    """The id the new file gives its next row."""
    from gateway.outbox.store import _head

    return _head(dst) + 1


def test_an_undamaged_file_comes_across_whole(monkeypatch) -> None:
    from gateway.outbox import recovery

    monkeypatch.setattr(recovery, "_CHUNK", 3)  # several chunks from a few rows
    src = source(range(3, 13), head=14, cursors=[("influxdb", 5), ("mqtt", 12)], quarantined=2)
    report, dst = salvage(Damaged(src), sinks=["influxdb", "mqtt"])
    assert all_rows(dst) == src.execute("SELECT * FROM rows ORDER BY id").fetchall()
    assert (report.copied, report.unreadable, report.holes, report.tail_lost,
            report.cursors_lost) == (10, 0, [], False, False)
    assert dict(dst.execute("SELECT sink, last_id FROM cursors")) == {"influxdb": 5, "mqtt": 12}
    assert dict(dst.execute("SELECT key, value FROM meta")) == {"dropped": 7, "head": 14}
    assert dst.execute("SELECT * FROM quarantine ORDER BY id").fetchall() == \
        src.execute("SELECT * FROM quarantine ORDER BY id").fetchall()
    assert (report.quarantine_copied, report.quarantine_unreadable) == (2, 0)
    assert next_id(dst) == 15  # ids go on after the old file's highest, never reused


def test_a_hole_in_the_middle_is_stepped_over_and_counted(monkeypatch) -> None:
    from gateway.outbox import recovery

    monkeypatch.setattr(recovery, "_CHUNK", 3)
    report, dst = salvage(Damaged(source(range(1, 31)), bad=range(11, 18)))
    assert ids(dst) == [*range(1, 11), *range(18, 31)]
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (
        23, 7, [(11, 17)], False)
    assert [r[4] for r in all_rows(dst) if r[0] in (10, 18)] == ["line 10", "line 18"]


def test_an_unreadable_end_is_counted_up_to_the_highest_id_the_file_gave() -> None:
    report, dst = salvage(Damaged(source(range(1, 21), head=25), bad=range(16, 21)))
    assert ids(dst) == list(range(1, 16))
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (
        15, 10, [(16, 25)], False)
    assert next_id(dst) == 26
    src = Damaged(source(range(1, 21), head=25), bad=range(16, 21))
    salvage(src)
    assert src.seeks == [16, 17, 19, 23, 26]  # not past the highest id the file gave
    # the sequence unreadable: the highest id comes from max(id)
    report, dst = salvage(Damaged(source(range(1, 21)), bad=range(16, 21),
                                  unreadable=("sqlite_sequence",)))
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (
        15, 5, [(16, 20)], False)
    assert next_id(dst) == 21


def test_an_end_of_unknown_length_is_said_to_be_lost() -> None:
    report, dst = salvage(Damaged(source(range(1, 21)), bad=range(16, 21),
                                  unreadable=("sqlite_sequence", "max(id)")))
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (15, 0, [], True)
    assert next_id(dst) == 16  # after the highest salvaged id


def test_rows_the_new_file_refuses_are_skipped_and_counted(monkeypatch) -> None:
    from gateway.outbox import recovery

    monkeypatch.setattr(recovery, "_CHUNK", 3)
    src = source(range(1, 11), schema=V1_SCHEMA.replace("device TEXT NOT NULL", "device TEXT"))
    src.execute("UPDATE rows SET device = NULL WHERE id = 5")  # garbage from a damaged page
    report, dst = salvage(Damaged(src))
    assert ids(dst) == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert (report.copied, report.unreadable) == (9, 1)


def test_lost_cursors_start_every_sink_at_the_first_salvaged_row(monkeypatch) -> None:
    from gateway.outbox import recovery

    monkeypatch.setattr(recovery, "_CHUNK", 3)
    report, dst = salvage(Damaged(source(range(3, 9)), unreadable=("FROM cursors",)),
                          sinks=["influxdb", "mqtt"])
    assert report.cursors_lost and report.copied == 6
    assert dict(dst.execute("SELECT sink, last_id FROM cursors")) == {"influxdb": 2, "mqtt": 2}
    # nothing salvaged: the sinks start after the old file's highest id
    report, dst = salvage(Damaged(source([], head=9), unreadable=("FROM cursors",)),
                          sinks=["influxdb"])
    assert report.cursors_lost and dict(dst.execute("SELECT sink, last_id FROM cursors")) == {
        "influxdb": 9}


def test_unreadable_counters_are_left_out_and_the_rest_comes_across() -> None:
    report, dst = salvage(Damaged(source(range(1, 4)), unreadable=("FROM meta",)))
    assert ids(dst) == [1, 2, 3]
    assert dict(dst.execute("SELECT key, value FROM meta")) == {"head": 3}  # no "dropped"
    assert dict(dst.execute("SELECT sink, last_id FROM cursors")) == {"influxdb": 5}


def test_unreadable_quarantined_rows_are_counted_apart_from_the_outbox_rows() -> None:
    report, dst = salvage(Damaged(source(range(1, 6), quarantined=6), quarantine_bad=[3, 4]))
    assert (report.quarantine_copied, report.quarantine_unreadable) == (4, 2)
    assert (report.copied, report.unreadable, report.holes) == (5, 0, [])
    assert [r[0] for r in dst.execute("SELECT id FROM quarantine ORDER BY id")] == [1, 2, 5, 6]


def test_a_row_a_seek_reads_but_a_scan_cannot_pass_is_skipped() -> None:
    src = Damaged(source(range(1, 21)), bad=range(6, 9), scan_only=[9])
    report, dst = salvage(src)
    assert ids(dst) == [1, 2, 3, 4, 5, *range(10, 21)]
    assert (report.holes, report.unreadable, report.copied) == ([(6, 8), (9, 9)], 4, 16)


def test_the_search_seeks_further_in_doubling_steps_then_halves_back() -> None:
    from gateway.outbox.recovery import _next_readable

    src = Damaged(source(range(1, 101)), bad=range(11, 41))
    assert _next_readable(src, "rows", 10, 100) == 41
    assert src.seeks == [11, 12, 14, 18, 26, 42, 34, 38, 40, 41]
    # ids deleted before the damage: the next readable id is the next one there is
    src = Damaged(source([*range(1, 11), *range(50, 61)]), bad=range(5, 11))
    assert _next_readable(src, "rows", 4, 60) == 50
    # nothing readable up to the end
    src = Damaged(source(range(1, 101)), bad=range(91, 101))
    assert _next_readable(src, "rows", 90, 100) is None
    assert src.seeks == [91, 92, 94, 98, 101]
    # rows past the highest id the file gave are not searched
    src = Damaged(source(range(1, 101)), bad=range(50, 101))
    assert _next_readable(src, "rows", 49, 60) is None
    assert src.seeks == [50, 51, 53, 57, 61]


def test_files_are_moved_aside_with_their_wal_and_shm(tmp_path) -> None:
    from gateway.outbox.recovery import move_aside

    (tmp_path / "o.sqlite").write_text("db")
    (tmp_path / "o.sqlite-wal").write_text("wal")
    move_aside(tmp_path / "o.sqlite", tmp_path / "o.sqlite.corrupt")  # no -shm: not an error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sqlite.corrupt", "o.sqlite.corrupt-wal"]
    assert (tmp_path / "o.sqlite.corrupt-wal").read_text() == "wal"
    (tmp_path / "p.sqlite-shm").write_text("shm")
    move_aside(tmp_path / "p.sqlite", tmp_path / "p.aside")
    assert (tmp_path / "p.aside-shm").read_text() == "shm"


def test_a_file_that_is_no_database_cannot_be_opened_for_salvage(tmp_path) -> None:
    import pytest

    from gateway.outbox.recovery import open_damaged

    (tmp_path / "o.bin").write_bytes(b"not a database at all" * 200)
    with pytest.raises(sqlite3.DatabaseError, match="o.bin: no schema can be read"):
        open_damaged(tmp_path / "o.bin")


def test_a_seek_to_the_highest_id_itself_is_not_stepped_over() -> None:
    from gateway.outbox.recovery import _next_readable

    src = Damaged(source(range(1, 101)), bad=range(97, 100))
    assert _next_readable(src, "rows", 96, 100) == 100
    assert src.seeks == [97, 98, 100, 99]
    # rows past a highest id that was too low are still found right after it
    src = Damaged(source(range(1, 71)), bad=range(57, 61))
    assert _next_readable(src, "rows", 56, 60) == 61


def test_rows_come_in_chunks_of_a_bounded_size(monkeypatch) -> None:
    from gateway.outbox import recovery

    monkeypatch.setattr(recovery, "_CHUNK", 3)
    holes: list = []
    chunks = list(recovery._readable_rows(Damaged(source(range(1, 11)), bad=[5, 6]), "rows", "id",
                                          10, holes))
    assert [[r[0] for r in c] for c in chunks] == [[1, 2, 3], [4], [7, 8, 9], [10]]
    assert holes == [(5, 6)]


def test_a_file_whose_first_rows_cannot_be_read_keeps_the_rest() -> None:
    report, dst = salvage(Damaged(source(range(1, 11)), bad=[1, 2, 3]))
    assert ids(dst) == list(range(4, 11)) and report.holes == [(1, 3)] and report.unreadable == 3


def test_holes_in_the_middle_and_at_the_end_add_up() -> None:
    report, dst = salvage(Damaged(source(range(1, 21)), bad=[6, 7, 8, *range(16, 21)]))
    assert (report.holes, report.unreadable, report.copied, report.tail_lost) == (
        [(6, 8), (16, 20)], 8, 12, False)


def test_rows_past_a_highest_id_that_was_too_low_are_an_end_of_unknown_length() -> None:
    report, dst = salvage(Damaged(source(range(1, 26), head=20), bad=range(21, 26)))
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (20, 0, [], True)


def test_nothing_readable_and_no_highest_id_starts_the_new_file_at_one() -> None:
    report, dst = salvage(Damaged(source([]), unreadable=("sqlite_sequence", "max(id)",
                                                          "FROM cursors")))
    assert report.cursors_lost and dict(dst.execute("SELECT sink, last_id FROM cursors")) == {
        "influxdb": 0}
    assert next_id(dst) == 1


def test_the_quarantine_end_is_counted_from_its_sequence_or_its_highest_id() -> None:
    def quarantine_lost(*unreadable: str) -> int:
        report, _ = salvage(Damaged(source(range(1, 4), quarantined=6), quarantine_bad=[5, 6],
                                    unreadable=unreadable))
        assert report.quarantine_copied == 4
        return report.quarantine_unreadable

    assert quarantine_lost() == 2
    assert quarantine_lost("max(id) FROM quarantine") == 2
    assert quarantine_lost("name = 'quarantine'") == 2
    assert quarantine_lost("name = 'quarantine'", "max(id) FROM quarantine") == 0  # not known


# -- the store's salvage of a real damaged file --------------------------------------------------


def written_outbox(path: Path, n: int = 300) -> None:
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    store.open(["influxdb"])
    for start in range(0, n, 10):  # a block per commit of 10 rows; random text fills pages
        store.append([(READING, "d1", 1000.0 + i, f"m,device=d1 v={i} " + os.urandom(75).hex(),
                       None) for i in range(start, min(n, start + 10))])
    store.advance("influxdb", 40)
    store.close()


def stamps(seconds: int) -> set[str]:
    """The damage stamps (UTC) of the next few seconds."""
    import time

    now = time.time()
    return {time.strftime("%Y%m%dT%H%M%S", time.gmtime(now + s)) for s in range(seconds)}


@pytest.fixture
def far_timezone(monkeypatch):
    """Local time 9 hours off UTC: the stamp must still be UTC."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_damaged_page_of_rows_is_salvaged_around_and_reported(tmp_path, caplog,
                                                                 far_timezone) -> None:
    import logging

    from state_damage import garbage_pages

    path = tmp_path / "outbox.sqlite"
    written_outbox(path)
    with contextlib.closing(sqlite3.connect(path)) as con:  # a b-tree page of the blocks
        leaves = [p for (p,) in con.execute("SELECT pageno FROM dbstat WHERE name = 'blocks' "
                                            "AND pagetype = 'leaf' ORDER BY pageno")]
    garbage_pages(path, leaves[len(leaves) // 2], leaves[len(leaves) // 2])
    expected = stamps(5)
    taken = {f"outbox.sqlite.corrupt-{s}" for s in expected}
    for name in taken:  # a file damaged before, within the same second: not overwritten
        (tmp_path / name).write_text("earlier")
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    with caplog.at_level(logging.WARNING, logger="gateway.outbox.store"):
        assert store.open(["influxdb"]) == {"influxdb": 40}
    report = store.salvage
    assert report.moved_to.parent == tmp_path and report.moved_to.name in {
        f"{name}-2" for name in taken}
    assert "malformed" in report.damage and not report.tail_lost
    assert report.unreadable > 0 and report.copied + report.unreadable == 300
    assert store.rows == report.copied == len(store.read(0, 1000, "line"))
    assert store.append([(READING, "d1", 1.0, "m v=1 1", None)]) == 301
    store.close()
    [record] = [r for r in caplog.records if "rows salvaged" in r.getMessage()]
    assert record.levelno == logging.ERROR  # rows were lost
    assert record.getMessage() == f"outbox {path}: {report.summary()}"


def test_damaged_cursors_alone_lose_no_row_and_are_only_warned_about(tmp_path, caplog) -> None:
    import logging

    from state_damage import garbage_pages

    path = tmp_path / "outbox.sqlite"
    written_outbox(path)
    with contextlib.closing(sqlite3.connect(path)) as con:
        [page] = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'cursors'").fetchone()
    garbage_pages(path, page, page)
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    with caplog.at_level(logging.WARNING, logger="gateway.outbox.store"):
        assert store.open(["influxdb"]) == {"influxdb": 0}  # from the first row again
    report = store.salvage
    assert (report.copied, report.unreadable, report.cursors_lost) == (300, 0, True)
    store.close()
    [record] = [r for r in caplog.records if "rows salvaged" in r.getMessage()]
    assert record.levelno == logging.WARNING


def test_a_file_with_nothing_readable_is_replaced_and_says_so(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = SqliteOutbox(path=path, budget_bytes=1 << 30)
    assert store.open(["influxdb"]) == {"influxdb": 0}
    assert store.salvage.tail_lost and store.salvage.copied == 0
    assert store.salvage.damage == "file is not a database"
    store.close()


def test_a_last_row_whose_content_alone_is_damaged_is_one_hole() -> None:
    # a seek reads its key, a scan cannot read it: no empty hole, and nothing after it
    report, dst = salvage(Damaged(source(range(1, 21)), scan_only=[20]))
    assert ids(dst) == list(range(1, 20))
    assert (report.holes, report.unreadable, report.tail_lost) == ([(20, 20)], 1, False)
    report, dst = salvage(Damaged(source(range(1, 21)), scan_only=[5]))
    assert (report.holes, report.unreadable, report.copied) == ([(5, 5)], 1, 19)


def test_the_halving_seeks_whole_ids() -> None:
    from gateway.outbox.recovery import _next_readable

    src = Damaged(source(range(1, 101)), bad=range(91, 100))
    assert _next_readable(src, "rows", 90, 100) == 100
    assert src.seeks == [91, 92, 94, 98, 101, 99, 100]
    assert all(isinstance(x, int) for x in src.seeks)



# -- files of blocks -------------------------------------------------------------------------


def test_an_unreadable_block_is_a_hole_of_its_rows_and_the_rest_comes_across() -> None:
    blocks = [list(range(1, 11)), list(range(11, 21)), list(range(21, 31))]
    report, dst = salvage(Damaged(block_source(blocks), bad=[20]))  # blocks go by last id
    assert ids(dst) == [*range(1, 11), *range(21, 31)]
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (
        20, 10, [(11, 20)], False)
    assert all_rows(dst)[10] == (21, READING, "d1", 1021.0, "line 21", None)
    assert dict(dst.execute("SELECT sink, last_id FROM cursors")) == {"influxdb": 5}
    assert next_id(dst) == 31


def test_a_block_whose_bytes_do_not_decode_is_a_hole_too() -> None:
    src = block_source([list(range(1, 11)), list(range(11, 21)), [21, 23, 25]])
    src.execute("UPDATE blocks SET body = x'01deadbeef' WHERE id = 20")  # the page reads
    report, dst = salvage(Damaged(src))
    assert ids(dst) == [*range(1, 11), 21, 23, 25]
    assert (report.copied, report.unreadable, report.holes) == (13, 10, [(11, 20)])
    # a block whose columns say other ids than its rows: not trusted either
    src = block_source([list(range(1, 11))])
    src.execute("UPDATE blocks SET first_id = 2")
    report, dst = salvage(Damaged(src))
    assert (ids(dst), report.unreadable, report.holes) == ([], 9, [(2, 10)])


def test_blocks_keyed_between_readable_ones_count_the_ids_up_to_the_next_first() -> None:
    # blocks of 5 with ids skipped (rows shed in memory): keys 5, 12, 19, 26
    blocks = [[1, 2, 3, 4, 5], [8, 9, 10, 11, 12], [15, 16, 17, 18, 19], [22, 23, 24, 25, 26]]
    report, dst = salvage(Damaged(block_source(blocks), bad=[12, 19]))
    assert ids(dst) == [1, 2, 3, 4, 5, 22, 23, 24, 25, 26]
    assert (report.holes, report.unreadable) == ([(6, 21)], 16)  # an upper bound


def test_an_unreadable_last_block_and_lost_cursors_in_a_file_of_blocks() -> None:
    blocks = [list(range(3, 11)), list(range(11, 21))]
    report, dst = salvage(Damaged(block_source(blocks, head=25), bad=[20],
                                  unreadable=("FROM cursors",)), sinks=["influxdb", "mqtt"])
    assert ids(dst) == list(range(3, 11)) and report.cursors_lost
    # (up to the head the file gave: 21..25 were committed, then deleted or lost)
    assert (report.copied, report.unreadable, report.holes, report.tail_lost) == (
        8, 15, [(11, 25)], False)
    assert dict(dst.execute("SELECT sink, last_id FROM cursors")) == {"influxdb": 2, "mqtt": 2}
    assert next_id(dst) == 26  # never given again


def test_a_file_with_old_rows_and_blocks_keeps_both() -> None:
    # (the conversion is one transaction, so no file holds both; the salvage copes anyway)
    from gateway.outbox.store import SCHEMA

    src = source(range(1, 6), head=5, schema=V1_SCHEMA)
    src.executescript(SCHEMA)
    src.execute(INSERT_BLOCK, pack([(READING, "d1", 1.0, "line 6", None, 6)]))
    report, dst = salvage(Damaged(src))
    assert ids(dst) == [1, 2, 3, 4, 5, 6] and report.copied == 6 and next_id(dst) == 7


# -- survivors of the blocks redesign's mutation run ------------------------------------------


def test_holes_are_merged_in_id_order_when_they_touch_or_overlap() -> None:
    from gateway.outbox.recovery import _merged

    assert _merged([(10, 12), (1, 3)]) == [(1, 3), (10, 12)]  # apart: both stay
    assert _merged([(1, 3), (5, 6)]) == [(1, 3), (5, 6)]  # one id between: apart
    assert _merged([(1, 3), (4, 6)]) == [(1, 6)]  # next to each other: one
    assert _merged([(4, 6), (1, 3), (3, 5)]) == [(1, 6)]  # touching, overlapping
    assert _merged([(5, 6), (1, 20)]) == [(1, 20)]  # ordered by their starts
    assert _merged([(5, None), (5, 7)]) == [(5, None)]  # an end of unknown length wins
    assert _merged([(1, 3), (2, None)]) == [(1, None)]
    assert _merged([(1, None), (7, 9)]) == [(1, None)]


def test_an_undecodable_block_before_a_gap_in_the_ids_is_a_hole_of_its_own_rows() -> None:
    src = block_source([list(range(1, 11)), list(range(11, 21)), list(range(31, 41))])
    src.execute("UPDATE blocks SET body = x'01deadbeef' WHERE id = 20")
    report, dst = salvage(Damaged(src))
    assert (report.unreadable, report.holes) == (10, [(11, 20)])  # not up to 30


def test_a_block_of_one_row_that_does_not_decode_is_a_hole_of_one() -> None:
    src = block_source([list(range(1, 11)), [11], list(range(12, 21))])
    src.execute("UPDATE blocks SET body = x'01deadbeef' WHERE id = 11")
    report, dst = salvage(Damaged(src))
    assert (report.unreadable, report.holes) == (1, [(11, 11)])


def test_an_undecodable_block_whose_columns_are_garbage_is_no_hole() -> None:
    src = block_source([list(range(1, 11)), list(range(11, 21)), list(range(21, 31))])
    src.execute("UPDATE blocks SET body = x'01deadbeef', first_id = 25 WHERE id = 20")
    src.execute("UPDATE blocks SET body = x'01deadbeef', first_id = 'x' WHERE id = 30")
    report, dst = salvage(Damaged(src))
    assert ids(dst) == list(range(1, 11))
    assert (report.unreadable, report.holes) == (0, [])  # no ids can be told for them


def test_a_file_of_blocks_without_a_head_ends_at_its_highest_block() -> None:
    blocks = [list(range(1, 11)), list(range(11, 21)), list(range(21, 31))]
    report, dst = salvage(Damaged(block_source(blocks), bad=[30]))
    assert (report.unreadable, report.holes, report.tail_lost) == (10, [(21, 30)], False)
    assert next_id(dst) == 31
    report, dst = salvage(Damaged(block_source([])))  # nothing, no head: ids start at 1
    assert next_id(dst) == 1


def test_a_quarantine_row_the_new_file_refuses_leaves_the_others_in() -> None:
    schema = V1_SCHEMA.replace("line TEXT NOT NULL,\n    doc TEXT,\n    status",
                               "line TEXT,\n    doc TEXT,\n    status")
    src = source(range(1, 4), quarantined=4, schema=schema)
    src.execute("UPDATE quarantine SET line = NULL WHERE id = 2")
    report, dst = salvage(Damaged(src))
    assert report.quarantine_copied == 3
    assert [r[0] for r in dst.execute("SELECT id FROM quarantine ORDER BY id")] == [1, 3, 4]


def test_lost_cursors_of_a_half_converted_file_start_at_its_oldest_row() -> None:
    # the conversion moves the oldest rows first: blocks hold 1..10, the old table 11..20
    src = source(range(11, 21), head=20)
    from gateway.outbox.store import SCHEMA

    src.executescript(SCHEMA)
    src.execute(INSERT_BLOCK, pack([(READING, "d1", 1000.0 + i, f"line {i}", None, i)
                                    for i in range(1, 11)]))
    report, dst = salvage(Damaged(src, unreadable=("FROM cursors",)), sinks=["influxdb"])
    assert report.cursors_lost and report.copied == 20 and ids(dst) == list(range(1, 21))
    assert dict(dst.execute("SELECT sink, last_id FROM cursors")) == {"influxdb": 0}


def test_a_file_whose_table_list_cannot_be_read_is_salvaged_as_blocks() -> None:
    src = block_source([list(range(1, 11))], head=12)
    report, dst = salvage(Damaged(src, unreadable=("sqlite_master",)))
    assert ids(dst) == list(range(1, 11)) and next_id(dst) == 13
    # a file of the version before: no block to find, but its counter still holds
    report, dst = salvage(Damaged(source(range(1, 6), head=9), unreadable=("sqlite_master",)))
    assert next_id(dst) == 10
