"""Line protocol edges found by mutation testing: the prefix cache keeps devices and
channels apart, a channel tag without a profile, events on a channel, backslashes."""

from __future__ import annotations

from gateway.readings import DeviceEvent, Reading
from gateway.upstream.line_protocol import LineEncoder


def test_each_device_channel_and_kind_of_point_has_its_own_prefix() -> None:
    enc = LineEncoder("s", {})
    lines = [enc.encode(Reading("a", None, {"v": 1.0}, 1.0)),
             enc.encode(Reading("b", None, {"v": 1.0}, 1.0)),
             enc.encode(Reading("a", 2, {"v": 1.0}, 1.0)),
             enc.encode(Reading("a", None, {"v": 1.0}, 1.0))]  # from the cache
    assert lines == ["unknown,device=a,site=s v=1.0 1000000000",
                     "unknown,device=b,site=s v=1.0 1000000000",
                     "unknown,channel=2,device=a,site=s v=1.0 1000000000",
                     "unknown,device=a,site=s v=1.0 1000000000"]


def test_an_event_on_a_channel_is_tagged_with_it_and_text_is_escaped() -> None:
    enc = LineEncoder("s", {})
    line = enc.encode_event(DeviceEvent("door", 2, "forced_open", 3.0, {"path": 'C:\\cam\\"x"'}))
    assert line == ('unknown_event,channel=2,device=door,site=s,event=forced_open '
                    'count=1.0,path="C:\\\\cam\\\\\\"x\\"" 3000000000')
