"""`community-gateway demo` as a person runs it: twice in a row, each run starts with no
open alarm, and each alarm is printed once, in aligned columns."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

from gateway.demo.run import alarm_line, radar_line

REPO = Path(__file__).resolve().parent.parent
ALARM_ID = re.compile(r"id (\w+-\d+)")
READINGS = re.compile(r"^\d\d:\d\d:\d\d  cabinet ")  # the first print of what the gateway reads


async def demo_until(data_dir: Path, done, timeout: float = 90) -> list[str]:
    """Run the demo until ``done(lines)`` is true, then Ctrl-C it; every output line."""
    # The README's command (bash scripts/demo.sh), with a private data folder.
    proc = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts" / "demo.sh"), "--data-dir", str(data_dir), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(lines):
                line = await proc.stdout.readline()
                assert line, f"the demo ended early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                rest, _ = await proc.communicate()
        except TimeoutError:
            raise AssertionError(f"the demo did not stop on Ctrl-C: {lines}") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines += rest.decode().splitlines()
    assert proc.returncode == 0, lines
    return lines


async def test_a_second_demo_starts_fresh_and_each_alarm_is_printed_once(tmp_path: Path) -> None:
    first = await demo_until(tmp_path, lambda lines: any("ALARM" in x and "raised" in x
                                                         for x in lines))
    [raised] = [x for x in first if "ALARM" in x and "raised" in x]
    alarm_id = ALARM_ID.search(raised).group(1)
    assert [x for x in first if alarm_id in x] == [raised], first  # not also as a log line
    assert "starting fresh" not in "\n".join(first)

    second = await demo_until(tmp_path, lambda lines: any(READINGS.match(x) for x in lines))
    text = "\n".join(second)
    assert f"starting fresh: removed the open alarms and the outbox of the last run " \
           f"({(tmp_path / 'state').resolve()})" in text
    assert "restored" not in text and "escalated" not in text and alarm_id not in text


def test_alarm_lines_keep_their_columns() -> None:
    def event(name: str, message: str, count: int = 1) -> dict:
        return {"event": name, "alarm": {"severity": 1, "message": message, "device": "d",
                                         "id": "x-001", "count": count}}

    lines = [alarm_line(event("raised", "one")), alarm_line(event("condition_cleared", "two")),
             alarm_line(event("acked", "three", count=2) | {"by": "wang"})]
    assert len({line.index("L1") for line in lines}) == 1, lines
    assert "condition cleared" in lines[1] and "acked by wang" in lines[2] and "count 2" in lines[2]


def test_radar_numbers_are_said_in_words() -> None:
    moving = radar_line({"presence": 1, "motion": 2, "body_movement": 37, "fall": 0,
                         "stationary_dwell": 0}, "302 bathroom")
    fallen = radar_line({"presence": 1, "motion": 1, "body_movement": 0, "fall": 1,
                         "stationary_dwell": 1}, "302 bathroom")
    empty = radar_line({"presence": 0}, "302 bathroom")
    assert "someone there, moving, body movement  37/100" in moving and "no fall" in moving
    assert "still" in fallen and "FALL, motionless for long" in fallen
    assert "nobody there" in empty
    assert moving.index("fall") == empty.index("fall")
