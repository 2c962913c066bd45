"""Secrets come from the environment or private files, and never show in logs or ``check`` output."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
import yaml

from gateway.cli import main
from gateway.config.base import Secret
from harness import wait_until

SECRETS = {"TEST_MQTT_PASSWORD": "mqtt-pass-5b1e0c", "TEST_INFLUX_TOKEN": "influx-tok-77d2a9",
           "TEST_API_TOKEN": "api-tok-c4f8e1"}


def secret_site(site_id: str, *, mqtt_port: int, influx_port: int, http_port: int) -> dict:
    return {
        "site": {"id": site_id},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "username": "gw",
                 "password": {"env": "TEST_MQTT_PASSWORD"}},
        "influxdb": {"url": f"http://127.0.0.1:{influx_port}", "org": "o", "bucket": "b",
                     "token": {"env": "TEST_INFLUX_TOKEN"}, "flush_interval": 0.1},
        "http": {"listen": f"127.0.0.1:{http_port}", "token": {"env": "TEST_API_TOKEN"}},
        "devices": [{"id": "m1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.05}],
        "rules": [{"id": "always", "type": "threshold", "select": {"kinds": ["meter"]},
                   "field": "power", "above": -1}],
    }


def test_secret_files_must_be_private(tmp_path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    for mode in (0o600, 0o640, 0o400):
        os.chmod(path, mode)
        assert Secret(file=path).reveal() == "s3cret"
    for mode in (0o644, 0o604, 0o666):
        os.chmod(path, mode)
        with pytest.raises(ValueError, match=r"accessible by other users \(mode 06\d\d\); chmod 600"):
            Secret(file=path).reveal()


def test_check_never_echoes_an_inline_secret(tmp_path, capsys) -> None:
    raw = secret_site("s", mqtt_port=1883, influx_port=8428, http_port=8080)
    raw["mqtt"]["password"] = "inline-pass-0a9f"
    raw["http"]["token"] = {"value": "inline-tok-31c2"}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr()
    assert "mqtt.password" in out.err and "http.token" in out.err
    assert "inline-pass-0a9f" not in out.out + out.err and "inline-tok-31c2" not in out.out + out.err


def test_check_with_secrets_set_prints_none(tmp_path, capsys, monkeypatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    raw = secret_site("s", mqtt_port=1883, influx_port=8428, http_port=8080)
    raw["mqtt"]["host"] = "broker.example"  # not loopback: warns about the clear-text password
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr()
    assert "clear text" in out.out
    assert not any(value in out.out + out.err for value in SECRETS.values())


async def test_logs_carry_no_secrets(tmp_path, free_port, unique_id) -> None:
    """The daemon at debug level, with every secret in use and failing: the broker and the
    TSDB are unreachable and an API client sends a wrong token."""
    http_port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(secret_site(unique_id, mqtt_port=free_port(),
                                               influx_port=free_port(), http_port=http_port)))
    (tmp_path / "state").mkdir()
    env = dict(os.environ, **SECRETS)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-v", "run", str(path), env=env, cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE)
    log = bytearray()

    async def read_log() -> None:
        while line := await proc.stderr.readline():
            log.extend(line)

    reader = asyncio.create_task(read_log())
    try:
        await wait_until(lambda: b"MQTT broker" in log and b"HTTP API on" in log
                         and b"write failed" in log, 10, "failures logged")
        reader_w = await asyncio.open_connection("127.0.0.1", http_port)
        reader_w[1].write(b"POST /api/alarms/x/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + SECRETS["TEST_API_TOKEN"][:-1].encode() + b"\r\nContent-Length: 2\r\n"
                          b"Connection: close\r\n\r\n{}")
        await reader_w[0].read()
        reader_w[1].close()
        await wait_until(lambda: b"refused: missing or wrong token" in log, 5, "refusal logged")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
    text = bytes(log).decode()
    assert "DEBUG" in text  # really at debug level
    for value in SECRETS.values():
        assert value not in text and value[:-1] not in text
