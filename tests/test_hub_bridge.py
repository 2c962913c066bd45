"""Three levels on Mosquitto bridges: two community brokers, each with its gateway, bridge
their sites' topics up to a subdistrict broker, where one subdistrict hub sees both
communities (retained state and events up; commands down, as docs/hub.md configures)."""

from __future__ import annotations

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
