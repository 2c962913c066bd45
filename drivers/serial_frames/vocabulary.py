"""What a radar of each protocol reports: its value fields and its event names.

The config check uses these to tell an installer which fields a rule can watch;
``tests/test_radar_driver.py`` checks them against what the codecs really decode.
"""

from __future__ import annotations

#: Protocol names a ``serial_frames`` device config accepts (keys of ``CODECS``).
PROTOCOLS = ("mr60fda1", "ld6002c", "mr60fda2", "mr60bha2")

_MR60FDA1_FIELDS = frozenset({
    "presence", "motion", "body_movement", "fall", "stationary_dwell",
    "fall_detection", "fall_sensitivity",
})
_TINYFRAME_FIELDS = frozenset({
    "fall", "presence", "target_height",
    "mount_height", "fall_threshold", "sensitivity", "zone_xl", "zone_xr", "zone_zf", "zone_zb",
})

#: Value fields by protocol: what the readings of such a device can carry.
FIELDS: dict[str, frozenset[str]] = {
    "mr60fda1": _MR60FDA1_FIELDS,
    "ld6002c": _TINYFRAME_FIELDS,
    "mr60fda2": _TINYFRAME_FIELDS,
    "mr60bha2": frozenset({"presence", "breath_rate", "heart_rate", "distance", "no_breathing"}),
}

#: The kind of device each protocol is, unless the config names one.
KINDS: dict[str, str] = {"mr60fda1": "fall_radar", "ld6002c": "fall_radar",
                         "mr60fda2": "fall_radar", "mr60bha2": "health_radar"}

#: The driver's own event: a setting from ``setup:`` was not confirmed by the radar.
SETUP_FAILED = "setup_failed"

#: Event names by protocol: what the device events of such a device can be called.
EVENTS: dict[str, frozenset[str]] = {
    "mr60fda1": frozenset({"fall", "heartbeat", "reset", "device_info", SETUP_FAILED}),
    "ld6002c": frozenset({"fall", SETUP_FAILED}),
    "mr60fda2": frozenset({"fall", SETUP_FAILED}),
    "mr60bha2": frozenset({SETUP_FAILED}),
}

#: Codec events that only answer a command; the driver consumes them.
COMMAND_REPLY_EVENTS = frozenset({"ack", "reply"})
