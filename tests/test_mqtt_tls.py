"""MQTT over TLS: a throwaway CA made with openssl, Mosquitto with a TLS listener, the gateway
connecting with a password or a client certificate, and an alarm arriving."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.runtime.site import load_site
from gateway.errors import ConfigError
from harness import MqttRecorder, running_gateway, wait_until, write_site
from servers import Mosquitto, free_port

PASSWORD = "broker-pass-for-tests-93ab"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path) -> Path:
    """ca.pem, server.pem/.key (for 127.0.0.1 and localhost), client.pem/.key (CN gw-client)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing: run `bash scripts/test.sh`", pytrace=False)
    where.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=gateway test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
    for name, usage, san in (("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
                             ("client", "clientAuth", None)):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=gw-{name}", cwd=where)
        ext = where / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n"
                       "authorityKeyIdentifier=keyid\n" + (f"subjectAltName={san}\n" if san else ""))
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name,
                cwd=where)
        os.chmod(where / f"{name}.key", 0o600)
    return where


def tls_broker(pki: Path, tls_port: int, *lines: str) -> Mosquitto:
    """Mosquitto with its plain test listener plus a TLS listener on ``tls_port``."""
    return Mosquitto(extra_config=[
        f"listener {tls_port} 127.0.0.1",
        f"cafile {pki / 'ca.pem'}",
        f"certfile {pki / 'server.pem'}",
        f"keyfile {pki / 'server.key'}",
        *lines,
    ])


def alarm_site(site_id: str, mqtt: dict) -> dict:
    return {
        "site": {"id": site_id},
        "mqtt": {"host": "127.0.0.1", **mqtt},
        "devices": [{"id": "meter-1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.1}],
        "rules": [{"id": "always", "type": "threshold", "select": {"kinds": ["meter"]},
                   "field": "power", "above": -1, "severity": 2}],
    }


async def test_tls_with_username_and_password(tmp_path, unique_id, monkeypatch, caplog) -> None:
    pki = make_pki(tmp_path / "pki")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gateway", PASSWORD],
                   check=True, capture_output=True)
    tls_port = free_port()
    monkeypatch.setenv("TEST_MQTT_PASSWORD", PASSWORD)
    with tls_broker(pki, tls_port, f"password_file {passwords}") as broker:
        raw = alarm_site(unique_id, {"port": tls_port, "username": "gateway",
                                     "password": {"env": "TEST_MQTT_PASSWORD"},
                                     "tls": {"ca_file": str(pki / "ca.pem")}})
        async with MqttRecorder(broker.port, f"community/{unique_id}/#") as mqtt:
            async with running_gateway(write_site(tmp_path, raw)) as gw:
                raised = await mqtt.wait_for(lambda: [m for _, m in mqtt.json_on("/alarm_events")
                                                      if m["event"] == "raised"], 5)
                assert gw.mqtt.connected
        assert raised[0]["alarm"]["device"] == "meter-1"
        assert "New client connected from 127.0.0.1" in broker.log()
        assert f"as gateway-{unique_id}" in broker.log() and "u'gateway'" in broker.log()

        # the same broker refuses a wrong password: the link stays down, said once
        monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong")
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.mqtt_link"):
            async with running_gateway(write_site(tmp_path, raw)) as gw:
                await wait_until(lambda: any("unreachable" in r.getMessage()
                                             for r in caplog.records), 5, "refusal logged")
                assert not gw.mqtt.connected
    assert PASSWORD not in caplog.text and "wrong" not in caplog.text


async def test_tls_with_a_client_certificate(tmp_path, unique_id) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    with tls_broker(pki, tls_port, "require_certificate true",
                    "use_identity_as_username true") as broker:
        raw = alarm_site(unique_id, {"port": tls_port, "tls": {
            "ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
            "key_file": str(pki / "client.key")}})
        async with MqttRecorder(broker.port, f"community/{unique_id}/#") as mqtt:
            async with running_gateway(write_site(tmp_path, raw)):
                await mqtt.wait_for(lambda: [m for _, m in mqtt.json_on("/alarm_events")
                                             if m["event"] == "raised"], 5)
        assert "u'gw-client'" in broker.log()  # the certificate's CN became the user name

        # without the certificate the broker refuses the connection
        del raw["mqtt"]["tls"]["cert_file"], raw["mqtt"]["tls"]["key_file"]
        async with running_gateway(write_site(tmp_path, raw)) as gw:
            await wait_until(lambda: "peer did not return a certificate" in broker.log(),
                             5, "refused")
            assert not gw.mqtt.connected


def test_tls_settings_are_checked(tmp_path) -> None:
    pki = make_pki(tmp_path / "pki")
    raw = alarm_site("s", {"tls": {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
                                   "key_file": str(pki / "client.key")}})
    site = load_site(write_site(tmp_path, raw))
    assert site.config.mqtt.port == 8883  # TLS's port unless one is given

    os.chmod(pki / "client.key", 0o644)
    with pytest.raises(ConfigError) as info:
        load_site(write_site(tmp_path, raw))
    [(key, msg)] = info.value.problems
    assert key == "mqtt.tls.key_file" and "accessible by other users" in msg and "chmod" in msg

    del raw["mqtt"]["tls"]["key_file"]
    with pytest.raises(ConfigError) as info:
        load_site(write_site(tmp_path, raw))
    assert info.value.problems == [("mqtt.tls", "a client certificate needs both 'cert_file' "
                                                "and 'key_file'")]

    raw["mqtt"]["tls"] = {"ca_file": str(tmp_path / "missing.pem")}
    with pytest.raises(ConfigError) as info:
        load_site(write_site(tmp_path, raw))
    [(key, msg)] = info.value.problems
    assert key == "mqtt.tls.ca_file" and "missing.pem" in msg
