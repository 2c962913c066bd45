"""Three levels on Mosquitto bridges: two community brokers, each with its gateway, bridge
their sites' topics up to a subdistrict broker, where one subdistrict hub sees both
communities (retained state and events up; commands down, as docs/hub.md configures)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.hub.history import HistoryQuery
from harness import running_gateway, wait_until, write_site
from servers import Mosquitto
from test_hub_e2e import hub_config, running_hub

pytestmark = pytest.mark.integration

UP = ("info", "status", "health", "alarms/+", "alarm_events")


def bridge_lines(name: str, subdistrict_port: int) -> list[str]:
    """A community broker's bridge to the subdistrict broker (docs/hub.md)."""
    return [f"connection to-subdistrict-{name}", f"address 127.0.0.1:{subdistrict_port}",
            "cleansession false", f"remote_clientid bridge-{name}",
            *(f"topic community/+/{t} out 1" for t in UP),
            "topic community/+/alarms/+/+ in 1"]


def site(site_id: str, community: str, port: int, tmp_path) -> dict:
    return {
        "site": {"id": site_id, "subdistrict": "Riverside", "community": community,
                 "compound": f"{community}-1", "building": "1"},
        "state_dir": str(tmp_path / site_id),
        "mqtt": {"host": "127.0.0.1", "port": port, "health_interval": 1},
        "devices": [{"id": "meter-1", "type": "synthetic", "kind": "meter", "fields": ["power"],
                     "poll_interval": 0.2}],
        "rules": [{"id": "overload", "type": "threshold", "select": {"kinds": ["meter"]},
                   "field": "power", "above": -1, "severity": 1}],
    }


async def test_two_bridged_communities_reach_one_subdistrict_hub(tmp_path) -> None:
    with contextlib.ExitStack() as stack:
        subdistrict = Mosquitto()
        stack.callback(subdistrict.close)
        subdistrict.start()
        communities = {}
        for name in ("North", "South"):
            broker = Mosquitto(extra_config=bridge_lines(name.lower(), subdistrict.port))
            stack.callback(broker.close)
            broker.start()
            communities[name] = broker
        hub_path = hub_config(tmp_path, subdistrict.port, scope={"subdistrict": "Riverside"},
                              hub_id="riverside")
        folders = {}
        for name in communities:
            folders[name] = tmp_path / name
            folders[name].mkdir()
        north = write_site(folders["North"], site("n-b1", "North", communities["North"].port, tmp_path))
        south = write_site(folders["South"], site("s-b7", "South", communities["South"].port, tmp_path))
        # the hub first: events are not retained, a hub sees those after its first session
        async with running_hub(hub_path) as hub:
            async with running_gateway(north), running_gateway(south):
                await wait_until(lambda: {s.site: s.status for s in hub.live.in_scope()}
                                 == {"n-b1": "online", "s-b7": "online"}, 15,
                                 "both communities' gateways at the subdistrict hub")
                await wait_until(lambda: {r["site"] for r in hub.view.open_alarms()}
                                 == {"n-b1", "s-b7"}, 15, "both communities' alarms")
                rows = hub.view.open_alarms()
                assert {(r["site"], r["community"]) for r in rows} == {("n-b1", "North"),
                                                                       ("s-b7", "South")}
                fleet = hub.view.fleet()
                assert [c["name"] for c in fleet["subdistricts"][0]["communities"]] == \
                    ["North", "South"]
                await wait_until(lambda: hub.history.written >= 2, 10, "both raised in the history")
                history = await hub.history.search(HistoryQuery(event="raised"))
                assert {r["site"] for r in history} == {"n-b1", "s-b7"}
                # a hub connecting late rebuilds both communities from the bridged retained state
                late = hub_config(tmp_path, subdistrict.port, scope={"subdistrict": "Riverside"},
                                  hub_id="riverside-late")
                async with running_hub(late) as again:
                    assert {r["site"] for r in again.view.open_alarms()} == {"n-b1", "s-b7"}
                    assert {s.site for s in again.live.in_scope()} == {"n-b1", "s-b7"}


def documented_bridge_topics() -> list[str]:
    """The ``topic`` lines of the bridge in docs/hub.md, as written there."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "hub.md").read_text()
    block = doc.split("connection to-subdistrict\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("topic ")]


async def test_the_documented_bridge_carries_what_the_hub_uses(tmp_path) -> None:
    """Each topic the hub reads goes up (retained ones still retained), commands come down,
    refusals go up; the hub's own _hub/ topics stay on their broker."""
    import aiomqtt

    topics = documented_bridge_topics()
    assert "topic community/+/alarms/+/+/error out 1" in topics
    with contextlib.ExitStack() as stack:
        subdistrict = Mosquitto()
        stack.callback(subdistrict.close)
        subdistrict.start()
        community = Mosquitto(extra_config=[
            "connection to-subdistrict", f"address 127.0.0.1:{subdistrict.port}",
            "cleansession false", "remote_clientid bridge-doc", *topics])
        stack.callback(community.close)
        community.start()
        up = {"community/n-b1/info": True, "community/n-b1/status": True,
              "community/n-b1/health": True, "community/n-b1/alarms/a1": True,
              "community/n-b1/alarm_events": False,
              "community/n-b1/alarms/a1/ack/error": False}
        local = "community/_hub/hub-north/sync"
        async with aiomqtt.Client("127.0.0.1", subdistrict.port) as top, \
                aiomqtt.Client("127.0.0.1", community.port) as bottom:
            await top.subscribe("community/#", qos=1)
            await bottom.subscribe("community/+/alarms/+/+", qos=1)
            got: dict[str, bool] = {}  # topic -> retain flag (0 for a live delivery)
            down: list[str] = []

            async def collect(client, sink) -> None:
                async for message in client.messages:
                    sink(message)

            readers = [asyncio.create_task(collect(top, lambda m: got.setdefault(
                           m.topic.value, m.retain))),
                       asyncio.create_task(collect(bottom, lambda m: down.append(m.topic.value)))]
            try:
                # wait for the bridge: a probe goes up once it is connected
                async def bridged() -> bool:
                    await bottom.publish("community/probe/info", b"{}", qos=1, retain=True)
                    return "community/probe/info" in got
                deadline = asyncio.get_running_loop().time() + 20
                while not await bridged():
                    assert asyncio.get_running_loop().time() < deadline, "bridge never came up"
                    await asyncio.sleep(0.1)
                for topic, retain in up.items():
                    await bottom.publish(topic, b"{}", qos=1, retain=retain)
                await bottom.publish(local, b"marker", qos=1)
                await top.publish("community/n-b1/alarms/a1/ack", b"{}", qos=1)
                await wait_until(lambda: set(up) <= set(got) and down, 10, "both ways")
                assert "community/n-b1/alarms/a1/ack" in down
            finally:
                for reader in readers:
                    reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*readers)
        assert local not in got
        # a subscriber that comes later gets the retained state from the subdistrict broker
        async with aiomqtt.Client("127.0.0.1", subdistrict.port) as late:
            await late.subscribe("community/n-b1/#", qos=1)
            seen = set()
            async with asyncio.timeout(10):
                async for message in late.messages:
                    assert message.retain
                    seen.add(message.topic.value)
                    if seen >= {t for t, retain in up.items() if retain}:
                        break
