"""The hub serves the gateway's console package over many sites: users with a role and a
scope, enforced by the server on every read, stream and command (real Mosquitto, the
hub in process, sites' retained state published as gateways do)."""

from __future__ import annotations

import json

import aiohttp
import pytest
import yaml

from gateway.console.passwords import hash_password
from gateway.console.users import UserScope, UsersFile
from harness import MqttRecorder, wait_until
from test_hub_e2e import alarm_json, hub_config, publish, running_hub, site_info

pytestmark = pytest.mark.integration

NORTH = ("north-guard", "north-pass-1")
ADMIN = ("district-admin", "district-pass-1")
HUB_KEY = "hub-north-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def command_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HUB_NORTH_KEY", HUB_KEY)


def console_hub(tmp_path, mqtt_port: int, http_port: int):
    users = UsersFile(path=tmp_path / "hub-users.yaml")
    users.add(NORTH[0], "operator", hash_password(NORTH[1]),
              scope=UserScope(communities=["North"]))
    users.add(ADMIN[0], "admin", hash_password(ADMIN[1]))
    path = hub_config(tmp_path, mqtt_port, http_port=http_port, scope={"subdistrict": "Riverside"})
    raw = yaml.safe_load(path.read_text())
    raw["console"] = {"users_file": "hub-users.yaml"}
    raw["commands"] = {"key_id": "hub-north", "key": {"env": "TEST_HUB_NORTH_KEY"},
                       "confirm_timeout": 1}
    path.write_text(yaml.safe_dump(raw))
    return path


async def login(session: aiohttp.ClientSession, base: str, user: tuple[str, str]) -> dict:
    async with session.post(f"{base}/console/api/login",
                            json={"user": user[0], "password": user[1]}) as r:
        assert r.status == 200, await r.text()
    async with session.get(f"{base}/console/api/me") as r:
        return await r.json()


async def next_event(response) -> tuple[str, dict]:
    name = None
    while True:
        line = (await response.content.readline()).decode()
        if not line:
            raise AssertionError("the stream ended")
        line = line.rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            return name, json.loads(line[6:])


def event(site: str, alarm_id: str, name: str = "raised") -> bytes:
    return json.dumps({"event": name, "ts": "2026-12-01T08:00:00.000Z",
                       "alarm": {**alarm_json(alarm_id), "device": f"door-{site}"}}).encode()


async def test_a_user_scoped_to_one_community_never_sees_or_commands_another(
        tmp_path, mosquitto, free_port) -> None:
    await publish(mosquitto.port, [
        ("community/n-b1/info", site_info("n-b1", "North"), True),
        ("community/n-b1/status", b"online", True),
        ("community/n-b1/alarms/a1", json.dumps(alarm_json("a1")).encode(), True),
        ("community/s-b7/info", site_info("s-b7", "South"), True),
        ("community/s-b7/status", b"online", True),
        ("community/s-b7/alarms/a9", json.dumps(alarm_json("a9")).encode(), True),
    ])
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    async with running_hub(console_hub(tmp_path, mosquitto.port, http_port)) as hub, \
            MqttRecorder(mosquitto.port, "community/+/alarms/+/+") as commands, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as north, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin:
        await wait_until(lambda: hub.http.listening and len(hub.view.open_alarms()) == 2, 10,
                         "the hub's console and both alarms")
        me = await login(north, base, NORTH)
        assert me["hub"] is True and me["user_scope"] == {"communities": ["North"]}
        assert me["levels"] == ["subdistrict", "community", "compound", "building"]
        admin_me = await login(admin, base, ADMIN)
        assert admin_me["user_scope"] is None and "ack" in admin_me["actions"]

        # the page API: alarms, gateways, fleet
        async with north.get(f"{base}/console/api/alarms") as r:
            rows = (await r.json())["alarms"]
        assert [(a["id"], a["community"]) for a in rows] == [("n-b1:a1", "North")]
        assert rows[0]["alarm_id"] == "a1" and rows[0]["site"] == "n-b1"
        async with admin.get(f"{base}/console/api/alarms") as r:
            assert {a["id"] for a in (await r.json())["alarms"]} == {"n-b1:a1", "s-b7:a9"}
        async with north.get(f"{base}/console/api/devices") as r:
            assert [d["id"] for d in (await r.json())["devices"]] == ["n-b1"]
        async with north.get(f"{base}/console/api/fleet") as r:
            fleet = await r.json()
        assert [c["name"] for sd in fleet["subdistricts"] for c in sd["communities"]] == ["North"]
        assert fleet["counts"]["open_alarms"] == 1

        # the stream: the snapshot, then only North's transitions
        stream = await north.get(f"{base}/console/events")
        assert (await next_event(stream))[0] == "hello"
        name, snapshot = await next_event(stream)
        assert name == "snapshot" and [a["id"] for a in snapshot["alarms"]] == ["n-b1:a1"]
        assert [d["id"] for d in snapshot["devices"]] == ["n-b1"]
        await publish(mosquitto.port, [("community/s-b7/alarm_events", event("s-b7", "a9"), False),
                                       ("community/n-b1/alarm_events", event("n-b1", "a1"), False)])
        name, transition = await next_event(stream)
        assert name == "alarm" and transition["alarm"]["id"] == "n-b1:a1"
        assert transition["alarm"]["community"] == "North"
        stream.close()

        # history: the South transition is in the hub's store, never in North's answer
        await wait_until(lambda: hub.history.written >= 2, 5, "both transitions stored")
        async with north.get(f"{base}/console/api/history") as r:
            entries = (await r.json())["entries"]
        assert entries and {e["alarm"]["site"] for e in entries} == {"n-b1"}
        async with admin.get(f"{base}/console/api/history") as r:
            assert {e["alarm"]["site"] for e in (await r.json())["entries"]} == {"n-b1", "s-b7"}

        # the hub's read API has no user and so no scope: with a console it needs the token
        for path in ("/api/alarms", "/api/sites", "/api/history"):
            async with north.get(f"{base}{path}") as r:
                assert r.status == 403, path

        # a command on South's alarm: refused as unknown, and nothing reaches the broker
        headers = {"X-CSRF-Token": me["csrf"]}
        async with north.post(f"{base}/console/api/alarms/s-b7:a9/ack", json={},
                              headers=headers) as r:
            assert r.status == 404
        # on North's own alarm it is sent (no gateway answers here: not delivered)
        async with north.post(f"{base}/console/api/alarms/n-b1:a1/ack", json={},
                              headers=headers) as r:
            body = await r.json()
            assert r.status == 504 and body["state"] == "not_delivered", body
        assert [topic for _, topic, _ in commands.messages] == ["community/n-b1/alarms/a1/ack"]


def test_a_users_file_keeps_scopes_and_stays_readable_without_them(tmp_path, monkeypatch) -> None:
    import io

    from gateway.cli import main
    path = tmp_path / "users.yaml"
    # a gateway's users file of before: no scope, no admin
    UsersFile(path=path).add("wang", "operator", hash_password("night-shift-1"))
    before = UsersFile(path=path).load()["wang"]
    monkeypatch.setattr("sys.stdin", io.StringIO("north-pass-1\n"))
    assert main(["user", "add", "zhou", "--role", "viewer", "--community", "North",
                 "--community", "East", "-f", str(path), "--password-stdin"]) == 0
    users = UsersFile(path=path).load()
    assert users["wang"].scope is None and users["wang"].credential == before.credential
    assert users["zhou"].scope.describe() == {"communities": ["North", "East"]}
    assert users["zhou"].scope.covers({"community": "North"})
    assert not users["zhou"].scope.covers({"community": "South"})
    assert "scope:" in path.read_text()


class CountingGateways:
    """A DevicesView with ready-made rows (as the hub's) that counts its builds."""

    def __init__(self, rows: list[dict]):
        self._rows = rows
        self.builds = 0

    def rows(self) -> list[dict]:
        self.builds += 1
        return [dict(r) for r in self._rows]


class NoAlarms:
    def add_listener(self, listener) -> None:
        pass

    def open_alarms(self) -> list:
        return []


def test_open_pages_share_one_build_of_the_fleet_per_tick(monkeypatch) -> None:
    """Issue 11: ten open pages of two scopes tick every second; the fleet is built once
    per tick for all of them (not once per page), its JSON once per scope."""
    import types

    from gateway.console import live
    from gateway.console.live import LiveFeed
    from gateway.console.stream import ConsoleStream
    from gateway.console.users import UserScope

    now = [1000.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: now[0])
    gateways = CountingGateways([{"id": f"gw-{n}", "community": "North" if n % 2 else "South",
                                  "online": True} for n in range(500)])
    feed = LiveFeed(alarms=NoAlarms(), devices=gateways,
                    clock=types.SimpleNamespace(time=lambda: 0))
    console = types.SimpleNamespace(feed=feed)
    north, south = UserScope(communities=["North"]), UserScope(communities=["South"])
    streams = [ConsoleStream(console, None, covers=s.covers, scope=s.model_dump_json())
               for s in (north, south) * 4] + [ConsoleStream(console, None) for _ in range(2)]
    for tick in range(3):
        sent = [stream.tick() for stream in streams]
        assert all(len(out) == 1 for out in sent) if tick == 0 else not any(sent)
        now[0] += 1.0  # the stream's tick: a second
    assert gateways.builds == 3  # one per tick, whatever the number of pages
    north_text = streams[0].devices
    assert north_text is streams[2].devices  # one JSON text per scope, shared
    assert '"gw-1"' in north_text and '"gw-2"' not in north_text
    assert '"gw-2"' in streams[1].devices and '"gw-1"' not in streams[1].devices
    assert '"gw-1"' in streams[-1].devices and '"gw-2"' in streams[-1].devices
