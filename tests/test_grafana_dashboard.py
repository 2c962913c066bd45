"""deploy/grafana-dashboard.json matches the series the gateway writes: every panel's
PromQL query, run against a real VictoriaMetrics fed by the gateway's own line-protocol
encoder for every device of configs/example-site.yaml, returns data."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest

from gateway.runtime.site import load_site
from gateway.readings import DeviceEvent, Reading
from gateway.upstream.line_protocol import LineEncoder

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
EVENTS = {"door_access": "denied", "thrown_object": "throw"}


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def feed(victoria, site_id: str, now: float) -> None:
    """Two readings of every field of every device (value 1), and one event per event kind."""
    site = load_site(REPO / "configs" / "example-site.yaml")
    encoder = LineEncoder(site_id, site.devices)
    lines = []
    for spec in site.devices.values():
        channels = list(range(1, spec.channel_count + 1)) or [None]
        for ts in (now - 60, now - 30):
            for channel in channels:
                line = encoder.encode(Reading(spec.id, channel, {f: 1.0 for f in spec.fields}, ts))
                if line:
                    lines.append(line)
        if spec.kind in EVENTS:
            lines.append(encoder.encode_event(DeviceEvent(spec.id, 1 if spec.channel_count else None,
                                                          EVENTS[spec.kind], now - 20, {})))
    victoria.write_lines(lines)
    victoria.flush()


def query(victoria, expr: str, at: float) -> list[dict]:
    url = "/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    body = json.loads(victoria._request(url))
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.parametrize("title, expr", panel_queries(), ids=[f"{t}: {e[:40]}" for t, e in panel_queries()])
def test_every_panel_query_returns_the_gateways_series(victoria, unique_id, title, expr) -> None:
    now = time.time()
    feed(victoria, unique_id, now)
    concrete = expr.replace("$site", unique_id).replace("$building", ".*")
    result = query(victoria, concrete, now)
    assert result, f"{title}: {concrete} returned nothing"
    assert all(series["metric"].get("site", unique_id) == unique_id for series in result)


def test_the_building_variable_lists_the_sites_buildings(victoria, unique_id) -> None:
    feed(victoria, unique_id, time.time())
    dashboard = json.loads(DASHBOARD.read_text())
    [building] = [v for v in dashboard["templating"]["list"] if v["name"] == "building"]
    assert building["definition"] == 'label_values({site=~"$site"}, building)'
    match = urllib.parse.urlencode({"match[]": f'{{site=~"{unique_id}"}}'})
    body = json.loads(victoria._request(f"/api/v1/label/building/values?{match}"))
    assert sorted(body["data"]) == ["3", "5"]
