"""``check`` warns about settings that are legal but probably wrong: bus load, exposure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config.advice import poll_seconds_on_rtu
from gateway.config.loader import load_config


def rtu_site(cabinets: int, *, baudrate: int = 9600, poll_interval: float = 1.0) -> dict:
    return {
        "site": {"id": "s"},
        "buses": [{"id": "line", "type": "modbus_rtu", "port": "/dev/ttyUSB0",
                   "baudrate": baudrate, "timeout": 0.2, "retries": 0}],
        "devices": [{"id": f"cab-{i}", "type": "modbus", "bus": "line", "profile": "ev-cabinet",
                     "channels": 4, "slave_base": 4 * i, "poll_interval": poll_interval}
                    for i in range(cabinets)],
    }


def warnings_of(tmp_path: Path, raw: dict) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path).warnings


def test_a_cabinet_poll_costs_about_a_third_of_a_second_at_9600_baud(tmp_path) -> None:
    site = load_config(_write(tmp_path, rtu_site(1)))
    seconds = poll_seconds_on_rtu(site.devices["cab-0"], site.config.buses[0])
    # 7 requests (4 meters, controller inputs, smoke, relays), 10 bits a character,
    # 3.5 silent characters after each frame, 10 ms gap each
    assert seconds == pytest.approx(0.31, abs=0.02)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bus_load_warnings(tmp_path) -> None:
    assert not [w for w in warnings_of(tmp_path, rtu_site(2)) if "bus line" in w]  # ~62%
    [headroom] = [w for w in warnings_of(tmp_path, rtu_site(3)) if "bus line" in w]
    assert "about 9" in headroom and "little room" in headroom
    [overload] = [w for w in warnings_of(tmp_path, rtu_site(4)) if "bus line" in w]
    assert "fall behind" in overload and "9600 baud" in overload
    slow = warnings_of(tmp_path, rtu_site(1, baudrate=1200))
    assert any(w.startswith("device cab-0: about 2.") and "exceeds its poll interval 1.0s" in w
               for w in slow)


def test_exposure_warnings(tmp_path, capsys, monkeypatch) -> None:
    raw = {"site": {"id": "s"},
           "devices": [{"id": "m", "type": "synthetic", "kind": "meter", "fields": ["p"]}],
           "http": {"listen": "0.0.0.0:8080"},
           "mqtt": {"host": "10.0.0.5", "username": "s", "password": {"env": "NOT_SET_X"}}}
    assert main(["check", str(_write(tmp_path, raw))]) == 1  # valid, but would not start
    out, err = capsys.readouterr()
    assert "http.listen 0.0.0.0:8080: /metrics and /api can be read from the network" in out
    assert "mqtt: the password goes to 10.0.0.5 in clear text" in out
    assert "the gateway will not start" in err and "OK" not in out
    assert "mqtt.password (env NOT_SET_X): environment variable NOT_SET_X is not set" in err
    raw["mqtt"]["tls"] = {"insecure": True}
    raw["http"]["listen"] = "127.0.0.1:8080"
    monkeypatch.setenv("NOT_SET_X", "now-set")
    assert main(["check", str(_write(tmp_path, raw))]) == 0
    out = capsys.readouterr().out
    assert "clear text" not in out and "http.listen" not in out
    assert "mqtt.tls.insecure" in out
