"""Operators' commands from the hub: signed MQTT to a real gateway process on a real
Mosquitto, confirmed only by the gateway's retained state; a refusal with its reason;
a gateway killed with kill -9 gives "not delivered" after the confirm timeout."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway.alarms.commands import CommandError
from gateway.hub.view import CommandNotDelivered, CommandRefusedByGateway
from harness import MqttRecorder, wait_until
from test_hub_e2e import gateway_site, hub_config, running_hub, start, stop

pytestmark = pytest.mark.integration

HUB_KEY = "hub-north-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def command_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HUB_NORTH_KEY", HUB_KEY)


def commands_hub(tmp_path, port: int, **extra):
    path = hub_config(tmp_path, port, **extra)
    raw = yaml.safe_load(path.read_text())
    raw["commands"] = {"key_id": "hub-north", "key": {"env": "TEST_HUB_NORTH_KEY"}}
    path.write_text(yaml.safe_dump(raw))
    return path


def commands_gateway(tmp_path, site: str, port: int):
    folder = tmp_path / site
    folder.mkdir()
    raw = gateway_site(site, port, folder / "state", alarm=True)
    raw["mqtt"]["commands"] = {"enabled": True, "keys": [
        {"name": "hub-north", "secret": {"env": "TEST_HUB_NORTH_KEY"}}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def retained(recorder: MqttRecorder, alarm_id: str) -> dict | None:
    found = [json.loads(p) if p else None for _, topic, p in recorder.messages
             if topic.endswith(f"/alarms/{alarm_id}")]
    return found[-1] if found else None


async def test_an_ack_in_the_hub_changes_the_gateways_retained_state(tmp_path, mosquitto) -> None:
    proc = await start("run", str(commands_gateway(tmp_path, "n-b1", mosquitto.port)))
    try:
        async with MqttRecorder(mosquitto.port, "community/n-b1/alarms/+") as broker, \
                running_hub(commands_hub(tmp_path, mosquitto.port)) as hub:
            rows = await wait_until(lambda: hub.view.open_alarms({"site": "n-b1"}), 20,
                                    "the gateway's alarm in the hub")
            alarm_id = rows[0]["id"]
            assert rows[0]["acked"] is False

            result = await hub.view.apply_command(site="n-b1", alarm_id=alarm_id, command="ack",
                                                  body={"note": "on my way"}, by="guard wang")
            assert result["status"] == "confirmed"
            assert result["alarm"]["acked"] is True
            # the gateway's own retained state says so, and the hub's live picture with it
            # (the recorder is another subscriber: it may get that state after the hub did)
            await wait_until(lambda: retained(broker, alarm_id)["acked"] is True, 5,
                             "the acked state at the recorder")
            assert hub.view.open_alarms({"site": "n-b1"})[0]["acked"] is True

            # a refusal comes back with the gateway's reason (the overload is still there)
            with pytest.raises(CommandRefusedByGateway) as refused:
                await hub.view.apply_command(site="n-b1", alarm_id=alarm_id, command="reset",
                                             body={"note": "checked"}, by="guard wang")
            assert "condition is still present" in refused.value.reason
            assert refused.value.gateway_status == 409
            # a body the gateway would refuse is refused before anything is sent
            with pytest.raises(CommandError):
                await hub.view.apply_command(site="n-b1", alarm_id=alarm_id, command="shelve",
                                             body={}, by="guard wang")

            # the gateway is killed: a command is "not delivered", and the state is unchanged
            proc.kill()
            await proc.wait()
            with pytest.raises(CommandNotDelivered) as lost:
                await hub.view.apply_command(site="n-b1", alarm_id=alarm_id, command="shelve",
                                             body={"minutes": 10}, by="guard wang")
            assert "not confirmed by gateway n-b1 within 5 s" in str(lost.value)
            assert hub.view.open_alarms({"site": "n-b1"})[0]["state"] != "shelved"
            assert retained(broker, alarm_id)["state"] != "shelved"
            assert hub.commands.counts == {"confirmed": 1, "refused": 1, "not_delivered": 1}
    finally:
        await stop(proc)


async def test_without_a_key_the_hub_sends_nothing(tmp_path, mosquitto) -> None:
    async with running_hub(hub_config(tmp_path, mosquitto.port)) as hub:
        assert hub.commands is None
        with pytest.raises(CommandNotDelivered):
            await hub.view.apply_command(site="n-b1", alarm_id="x", command="ack", body={},
                                         by="wang")
