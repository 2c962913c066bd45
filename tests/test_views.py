"""The HTTP API serves whatever implements gateway.views, not only a running Gateway.

This is the seam the hub needs: a process showing many sites' alarms gives the
same API and console its own alarms and devices views.
"""

from __future__ import annotations

import subprocess
import sys

from http_support import AppClient

from gateway.alarms.commands import apply_command
from gateway.alarms.alarm import iso
from gateway.alarms.manager import AlarmManager
from gateway.clock import FakeClock
from gateway.config.models import SiteInfo
from gateway.device_health import DeviceHealth
from gateway.operations.http_api import build_app
from gateway.operations.metrics import CollectorRegistry
from gateway.readings import Reading
from gateway.runtime.views import SiteDevices
from gateway.views import Views


class RelayedAlarms:
    """An alarms view with its history kept elsewhere (as a hub would hold a site's)."""

    def __init__(self, manager: AlarmManager):
        self._manager = manager
        self.max_shelve = manager.max_shelve
        self.history_rows = [{"alarm_id": "earlier", "event": "raised"}]

    def open_alarms(self):
        return self._manager.open_alarms()

    def recently_closed(self):
        return self._manager.recently_closed()

    async def history(self, *, alarm_id=None, limit=100):
        rows = [r for r in self.history_rows if alarm_id in (None, r["alarm_id"])]
        return rows[:limit]

    def apply_command(self, alarm_id, command, body):
        return apply_command(self._manager, alarm_id, command, body)

    def add_listener(self, listener):
        self._manager.add_listener(listener)


async def test_the_api_serves_views_without_a_gateway(tmp_path) -> None:
    clock = FakeClock()
    manager = AlarmManager(clock=clock)
    alarm = manager.activate(rule="smoke", severity=1, device="cab-1", kind="charging_cabinet",
                             channel=None, location={"building": "3"}, message="smoke in B3",
                             value=1.0, ts=clock.time(), latch=True)
    health = DeviceHealth("cab-1", online=True, polls=3)
    reading = Reading("cab-1", None, {"temperature": 31.5}, clock.time())
    views = Views(site=SiteInfo(id="hub-site"), config_dir=tmp_path, console=None,
                  alarms=RelayedAlarms(manager),
                  devices=SiteDevices(specs=dict, health=lambda: {"cab-1": health},
                                      latest=lambda: {("cab-1", None): reading}),
                  clock=clock)
    app = build_app(views, token="t0ken", health=lambda: (True, {"status": "ok"}),
                    metrics=CollectorRegistry())
    async with AppClient(app) as client:
        body = await (await client.get("/api/alarms")).json()
        assert [a["id"] for a in body["alarms"]] == [alarm.id]
        assert body["history"] == [{"alarm_id": "earlier", "event": "raised"}]
        r = await client.post(f"/api/alarms/{alarm.id}/ack", json={"by": "wang"},
                              headers={"Authorization": "Bearer t0ken"})
        assert r.status == 200 and (await r.json())["acked"]
        [device] = (await (await client.get("/api/devices")).json())["devices"]
        assert device["id"] == "cab-1" and device["polls"] == 3
        assert device["readings"] == [{"channel": None, "ts": iso(reading.ts),
                                       "values": {"temperature": 31.5}}]
        assert (await client.get("/healthz")).status == 200


def test_the_api_and_the_console_load_without_the_application() -> None:
    # The static rules are in test_layers; this is what a hub process would import.
    code = ("import sys, gateway.operations.http_api, gateway.console.routes, "
            "gateway.operations.metrics, gateway.operations.liveness; "
            "print(sorted(m for m in sys.modules if m.startswith(('gateway.runtime', 'drivers'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
