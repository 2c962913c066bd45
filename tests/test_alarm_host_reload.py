"""Alarm-host receivers across a config reload: a panel whose ``listen`` changes is heard on
its new address, the panels left on the old one still are, an address no panel uses any
more is closed; one socket spelt two ways is refused with the key; and panels sharing an
address all attach at the start (they used to race for the socket, one failing)."""

from __future__ import annotations

import asyncio
import copy
import logging

import yaml

from drivers.sia_dc09.receiver import Dc09Receiver
from gateway.clock import SystemClock
from gateway.runtime.reload import reload_config
from harness import running_gateway, wait_until, write_site
from simulators.alarm_panel import AlarmPanelSimulator
from test_alarm_host_e2e import panel_site


def two_panels(unique_id: str, mqtt_port: int, port: int) -> dict:
    raw = panel_site(unique_id, mqtt_port=mqtt_port, listen_port=port)
    second = copy.deepcopy(raw["devices"][0])
    second.update(id="panel-2", account="5678")
    raw["devices"].append(second)
    return raw


async def heard(port: int, account: str) -> str:
    """The receiver's answer to one event of ``account`` sent to ``port``."""
    async with AlarmPanelSimulator(receiver=("127.0.0.1", port), account=account,
                                   heartbeat_s=3600) as panel:
        return await panel.send_event(1, "130", 3)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_panels_on_one_address_all_attach_at_once(free_port) -> None:
    receiver = Dc09Receiver(name="shared", host="127.0.0.1", port=free_port(),
                            clock=SystemClock())
    try:
        queues = await asyncio.gather(receiver.attach("1234", "panel-1"),
                                      receiver.attach("5678", "panel-2"),
                                      return_exceptions=True)
        assert not [q for q in queues if isinstance(q, BaseException)], queues
        assert receiver.bound_port == receiver.port
    finally:
        await asyncio.gather(receiver.detach("1234"), receiver.detach("5678"))
    assert receiver.bound_port is None


async def test_a_reload_moves_a_panel_to_its_new_listen_address(
        tmp_path, mosquitto, unique_id, free_port) -> None:
    old, new = free_port(), free_port()
    raw = two_panels(unique_id, mosquitto.port, old)
    path = write_site(tmp_path, raw)
    async with running_gateway(path) as gw:
        await wait_until(lambda: gw.receivers[f"127.0.0.1:{old}"].bound_port == old, 5,
                         "the shared receiver listening")
        assert await heard(old, "1234") == "ACK" and await heard(old, "5678") == "ACK"

        raw["devices"][0]["listen"] = f"127.0.0.1:{new}"  # panel-b7 (1234) moves
        path.write_text(yaml.safe_dump(raw))
        assert await reload_config(gw)
        await wait_until(lambda: f"127.0.0.1:{new}" in gw.receivers
                         and gw.receivers[f"127.0.0.1:{new}"].bound_port == new, 5,
                         "the new address listening")
        assert await heard(new, "1234") == "ACK"
        assert await heard(old, "5678") == "ACK"  # the panel left there is still heard
        assert await heard(old, "1234") == "DUH"  # and the moved one no longer there

        raw["devices"][1]["listen"] = f"127.0.0.1:{new}"  # panel-2 follows: old is unused
        path.write_text(yaml.safe_dump(raw))
        assert await reload_config(gw)
        assert await heard(new, "5678") == "ACK" and await heard(new, "1234") == "ACK"
        assert await refused(old)
        assert set(gw.receivers) == {f"127.0.0.1:{new}"}
        assert gw.reloads == {"applied": 2}


async def test_a_reload_that_spells_one_socket_two_ways_is_refused(
        tmp_path, mosquitto, unique_id, free_port, caplog) -> None:
    port = free_port()
    raw = two_panels(unique_id, mosquitto.port, port)
    path = write_site(tmp_path, raw)
    async with running_gateway(path) as gw:
        await wait_until(lambda: gw.receivers[f"127.0.0.1:{port}"].bound_port == port, 5,
                         "the shared receiver listening")
        raw["devices"][0]["listen"] = f"localhost:{port}"  # the same socket as panel-2's
        path.write_text(yaml.safe_dump(raw))
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.reload"):
            assert not await reload_config(gw)
        assert gw.reloads == {"refused": 1}
        assert await heard(port, "1234") == "ACK" and await heard(port, "5678") == "ACK"
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.runtime.reload"]
    assert "devices[0].listen" in line and f"localhost:{port}" in line
