"""Logs fit for journald: one line per event, the level as a priority, a state change once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import yaml

from gateway.operations.log_format import JournalFormatter, under_journald
from harness import cabinet_site, running_gateway, wait_until, write_site
from simulators.charging_cabinet import CabinetModel
from simulators.modbus_server import CabinetServer


def record(level: int, msg: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("gateway.x", level, __file__, 1, msg, (), exc_info)


def test_journal_lines_carry_the_priority_and_stay_one_line() -> None:
    f = JournalFormatter()
    assert f.format(record(logging.ERROR, "charger-b3: offline")) == "<3>gateway.x: charger-b3: offline"
    assert f.format(record(logging.WARNING, "w")).startswith("<4>")
    assert f.format(record(logging.INFO, "i")).startswith("<6>")
    assert f.format(record(logging.DEBUG, "d")).startswith("<7>")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = f.format(record(logging.ERROR, "driver failed", sys.exc_info()))
    assert "\n" not in line and "Traceback" in line and "RuntimeError: boom" in line


def test_journal_is_recognised_by_its_stream(tmp_path, monkeypatch) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not under_journald(stream)  # stderr redirected elsewhere: plain lines
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not under_journald()


async def test_daemon_writes_journal_lines(tmp_path, unique_id) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"site": {"id": unique_id}, "devices": [
        {"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"]}]}))
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", str(path),
                                                env=env, stderr=write_fd)
    os.close(write_fd)
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb"))
    lines: list[str] = []
    try:
        async with asyncio.timeout(10):
            while not any("starting" in line for line in lines):
                lines.append((await reader.readline()).decode().rstrip("\n"))
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await proc.wait()
            while line := await reader.readline():
                lines.append(line.decode().rstrip("\n"))
    finally:
        transport.close()
    assert any(line.startswith(f"<6>gateway.runtime.app: gateway {unique_id} starting: 1 devices, "
                               "0 rules, 0 sinks; state in ") for line in lines), lines
    assert "<4>gateway: config: no 'mqtt' section: alarms go to the log only" in lines
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines
    assert lines[-1] == f"<6>gateway.runtime.app: gateway {unique_id} stopped"


async def test_offline_and_back_are_each_logged_once(tmp_path, unique_id, caplog) -> None:
    model = CabinetModel(ports=1, scenario="normal", scenario_port=1, seed=7)
    async with CabinetServer(model, tcp=("127.0.0.1", 0)) as srv:
        raw = cabinet_site(unique_id, bus={"type": "modbus_tcp", "host": "127.0.0.1",
                                           "port": srv.port, "timeout": 0.05, "retries": 0},
                           poll_interval=0.02, rules=[])
        raw["devices"][0]["channels"] = 1
        with caplog.at_level(logging.INFO):
            async with running_gateway(write_site(tmp_path, raw)) as gw:
                [runner] = gw.runners
                await wait_until(lambda: runner.health.online is True, 5, "online")
                await srv.set_silent(True)
                await wait_until(lambda: runner.health.errors >= 8, 15, "many failed polls")
                await srv.set_silent(False)
                await wait_until(lambda: runner.health.online is True, 10, "back online")
    ours = [r for r in caplog.records if r.name.startswith(("gateway", "drivers"))]
    offline = [r for r in ours if "offline:" in r.getMessage() and r.name == "gateway.runtime.device_runner"]
    back = [r for r in ours if r.getMessage().endswith("back online")]
    assert [r.levelname for r in offline] == ["ERROR"] and [r.levelname for r in back] == ["INFO"]
    # 8+ failed polls, and no more than a handful of lines at WARNING or above in all
    loud = [r for r in ours if r.levelno >= logging.WARNING]
    assert len(loud) <= 4, [r.getMessage() for r in loud]
