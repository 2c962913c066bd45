"""``check`` warns about settings that are legal but probably wrong: bus load, exposure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config.advice import poll_seconds_on_rtu
from gateway.runtime.site import load_site


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
    return load_site(path).warnings


def test_a_cabinet_poll_costs_about_a_quarter_of_a_second_at_9600_baud(tmp_path) -> None:
    site = load_site(_write(tmp_path, rtu_site(1)))
    seconds = poll_seconds_on_rtu(site.devices["cab-0"], site.config.buses[0])
    # 7 requests (4 meters, controller inputs, smoke, relays), 10 bits a character,
    # 3.5 silent characters after each frame (the default gap is that silence)
    assert seconds == pytest.approx(0.24, abs=0.02)
    slow_adapter = dict(rtu_site(1))
    slow_adapter["buses"] = [dict(slow_adapter["buses"][0], frame_gap=0.01)]
    site = load_site(_write(tmp_path, slow_adapter))
    assert poll_seconds_on_rtu(site.devices["cab-0"], site.config.buses[0]) == pytest.approx(
        seconds + 7 * (0.01 - 3.5 * 10 / 9600), abs=1e-9)


def test_the_default_frame_gap_is_the_rtu_silence_at_the_baud_rate(tmp_path) -> None:
    for baudrate, gap in ((9600, 3.5 * 10 / 9600), (19200, 3.5 * 10 / 19200),
                          (38400, 0.00175), (115200, 0.00175)):
        site = load_site(_write(tmp_path, rtu_site(1, baudrate=baudrate)))
        assert site.config.buses[0].gap_seconds == pytest.approx(gap)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bus_load_warnings(tmp_path) -> None:
    assert not [w for w in warnings_of(tmp_path, rtu_site(2)) if "bus line" in w]  # ~48%
    [headroom] = [w for w in warnings_of(tmp_path, rtu_site(3)) if "bus line" in w]
    assert "about 72%" in headroom and "little room" in headroom
    [overload] = [w for w in warnings_of(tmp_path, rtu_site(5)) if "bus line" in w]
    assert "fall behind" in overload and "9600 baud" in overload
    slow = warnings_of(tmp_path, rtu_site(1, baudrate=1200))
    assert any(w.startswith("device cab-0: about 1.9") and "exceeds its poll interval 1.0s" in w
               for w in slow)


def test_exposure_warnings(tmp_path, capsys, monkeypatch) -> None:
    raw = {"site": {"id": "s"},
           "devices": [{"id": "m", "type": "synthetic", "kind": "meter", "fields": ["p"]}],
           "http": {"listen": "0.0.0.0:8080"},
           "mqtt": {"host": "10.0.0.5", "username": "s", "password": {"env": "NOT_SET_X"}}}
    assert main(["check", str(_write(tmp_path, raw))]) == 1  # valid, but would not start
    out, err = capsys.readouterr()
    assert ("http.listen 0.0.0.0:8080 is not loopback and no http.token is set: every /api "
            "request (reads too) is refused") in out
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
    raw["http"] = {"listen": "192.168.1.20:8080", "token": {"env": "NOT_SET_Y"}}
    monkeypatch.setenv("NOT_SET_Y", "a-token-for-the-lan")
    assert main(["check", str(_write(tmp_path, raw))]) == 0
    out = capsys.readouterr().out
    assert "/api needs the token for reads too, but /healthz and /metrics are open" in out
    for loopback in ("127.0.0.2:8080", "[::1]:8080", "localhost:8080"):
        raw["http"] = {"listen": loopback}
        assert main(["check", str(_write(tmp_path, raw))]) == 0
        assert "http.listen" not in capsys.readouterr().out
