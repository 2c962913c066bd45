"""An alarm already open when the hub first sees it (raised before the hub subscribed)
gets one history row, marked ``retained``, and only one: not again at a reconnect or a
restart, and none for an alarm whose raise the hub saw."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from pathlib import Path

import aiomqtt
import pytest
import yaml

from gateway.hub.config import HubScope, load_hub_config
from gateway.hub.history import HistoryQuery, HubHistory
from gateway.hub.live import LivePicture
from gateway.hub.service import Hub
from harness import wait_until


class Clock:
    def time(self) -> float:
        return 1_800_000_000.0


def info(site: str) -> bytes:
    return json.dumps({"site": site, "name": site, "hierarchy": {
        "subdistrict": "Riverside", "community": "North", "compound": "N1"}}).encode()


def alarm(alarm_id: str, first_ts: str = "2026-11-28T23:50:00.000Z") -> bytes:
    return json.dumps({"id": alarm_id, "rule": "door-forced", "severity": 1, "state": "active",
                       "acked": True, "device": "door-1", "kind": "door", "count": 3,
                       "location": {"building": "1"}, "message": "forced",
                       "first_ts": first_ts, "last_ts": "2026-12-01T08:00:00.000Z"}).encode()


def record(live: LivePicture, history: HubHistory, topic: str, payload: bytes) -> None:
    for event in live.handle(topic, payload):  # as Hub.on_message does
        history.add(site=event.site, place=event.place, body=event.body, raw=event.raw,
                    retained=event.retained)


async def test_an_alarm_found_open_gets_one_retained_row(tmp_path: Path) -> None:
    history = HubHistory(path=tmp_path / "h.sqlite3", retention_days=400, clock=Clock())
    await history.open()
    try:
        raised = json.dumps({"event": "raised", "ts": "2026-12-01T07:00:00.000Z",
                             "alarm": json.loads(alarm("seen", "2026-12-01T07:00:00.000Z"))})
        for restart in range(2):
            live = LivePicture(prefix="community", scope=HubScope(all=True), clock=Clock())
            for reconnect in range(2):
                live.begin_sync()
                record(live, history, "community/n-b1/info", info("n-b1"))
                record(live, history, "community/n-b1/alarms/old", alarm("old"))
                if restart == 0 and reconnect == 0:  # a raise the hub saw live
                    record(live, history, "community/n-b1/alarm_events", raised.encode())
                record(live, history, "community/n-b1/alarms/seen",
                       alarm("seen", "2026-12-01T07:00:00.000Z"))
                live.end_sync()
            # outside a rebuild, a new alarm's state comes with its own raised event
            record(live, history, "community/n-b1/alarms/live", alarm("live"))
            # a site whose info comes after its alarms: found open once its scope is known
            record(live, history, "community/n-b9/alarms/early", alarm("early"))
            record(live, history, "community/n-b9/info", info("n-b9"))
            await history.flush()
        rows = await history.search(HistoryQuery())
        assert sorted((r["site"], r["alarm_id"], r["event"], r["ts"]) for r in rows) == [
            ("n-b1", "old", "retained", "2026-11-28T23:50:00.000Z"),
            ("n-b1", "seen", "raised", "2026-12-01T07:00:00.000Z"),
            ("n-b9", "early", "retained", "2026-11-28T23:50:00.000Z"),
        ]
        old = next(r for r in rows if r["alarm_id"] == "old")
        assert (old["origin"], old["state"], old["community"]) == ("gateway", "active", "North")
        assert old["transition"]["alarm"]["count"] == 3
        # the November report has it, though the hub only came in December
        report = await history.csv(HistoryQuery(until=1_796_083_200.0))  # 2026-12-01
        assert [(r["alarm_id"], r["event"]) for r in csv.DictReader(io.StringIO(report))] == \
            [("old", "retained"), ("early", "retained")]
    finally:
        await history.close()


@pytest.mark.integration
async def test_a_hub_started_after_the_alarm_records_it_once(tmp_path: Path, mosquitto) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish("community/n-b1/info", info("n-b1"), qos=1, retain=True)
        await client.publish("community/n-b1/alarms/old", alarm("old"), qos=1, retain=True)
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({
        "hub": {"id": "north-room"}, "broker": {"host": "127.0.0.1", "port": mosquitto.port},
        "scope": {"communities": ["North"]}, "state_dir": str(tmp_path / "state")}))
    for start in range(2):  # the second start finds the same retained alarm: no second row
        hub = Hub(load_hub_config(path))
        task = asyncio.create_task(hub.run())
        try:
            await wait_until(lambda: hub.link.synced.is_set(), 10, "the hub synced")
            await wait_until(lambda: hub.history.written + hub.history.duplicates == 1, 10,
                             "the found alarm handled")
            rows = await hub.history.search(HistoryQuery(event="retained"))
            assert [(r["site"], r["alarm_id"]) for r in rows] == [("n-b1", "old")]
            assert (hub.history.written, hub.history.duplicates) == ((1, 0) if start == 0 else (0, 1))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
