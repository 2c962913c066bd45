"""Line protocol encoding: escaping, tags from the site and location, timestamps."""

from __future__ import annotations

import math
from pathlib import Path

from gateway.runtime.site import load_site
from gateway.readings import Reading
from gateway.upstream.line_protocol import LineEncoder, escape_tag

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "charging-site.yaml"


def test_reading_becomes_one_line_with_location_tags() -> None:
    site = load_site(EXAMPLE)
    enc = LineEncoder("sunny garden", site.devices)
    line = enc.encode(Reading("charger-b3", 3, {"power": 1200.5, "relay": 1.0}, 1_700_000_000.123))
    assert line == (r"ev_charging,building=3,device=charger-b3,floor=B1,port=3,"
                    r"room=charging\ room,site=sunny\ garden,unit=1 "
                    "power=1200.5,relay=1.0 1700000000123000000")


def test_escaping() -> None:
    assert escape_tag("a b,c=d") == r"a\ b\,c\=d"


def test_non_finite_values_are_skipped_and_counted() -> None:
    enc = LineEncoder("s", {})
    assert enc.encode(Reading("x", None, {"v": math.nan}, 1.0)) is None
    assert enc.encode(Reading("x", None, {"v": math.inf, "w": 2.0}, 1.0)) == "unknown,device=x,site=s w=2.0 1000000000"
    assert enc.skipped_values == 2


def test_device_event_line() -> None:
    from gateway.readings import DeviceEvent

    enc = LineEncoder("s", {})
    line = enc.encode_event(DeviceEvent("cam", None, "throw", 2.5,
                                        {"floor_low": 11, "snapshot": 'http://x/"a".jpg', "ok": True,
                                         "nested": {"x": 1}}))
    assert line == ('unknown_event,device=cam,site=s,event=throw count=1.0,floor_low=11.0,'
                    'snapshot="http://x/\\"a\\".jpg",ok=1.0,nested="{\\"x\\":1}" 2500000000')
