import asyncio, sys
sys.path.insert(0, "/work/main/tests")
import pytest
from harness import running_gateway, wait_until, write_site
from simulators.door import DoorSimulator
from test_door_e2e import door_site, secrets  # noqa

@pytest.mark.parametrize("n", range(25))
async def test_hang(tmp_path, mosquitto, unique_id, n, monkeypatch):
    monkeypatch.setenv("TEST_PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
    series = tmp_path / "series.lp"
    async with asyncio.timeout(40):
        async with DoorSimulator(broker=("127.0.0.1", mosquitto.port), terminal_id=unique_id) as sim:
            path = write_site(tmp_path, door_site(unique_id, mqtt_port=mosquitto.port,
                                                  modbus_port=sim.modbus_port, terminal=unique_id,
                                                  series=series))
            print("A", flush=True)
            async with running_gateway(path) as gw:
                await wait_until(lambda: gw.drivers["terminal"].connected, 5, "first session")
            print("B", flush=True)
            sent = [sim.deny(1, f"4400{i:04d}") for i in range(25)]
            await sim.publisher.flush()
            print("C", flush=True)
            async with running_gateway(path) as gw:
                terminal = gw.drivers["terminal"]
                await wait_until(lambda: terminal.stats["events"] >= 6, 5, "queued events delivered")
            print("D", flush=True)
