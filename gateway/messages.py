"""Alarm messages from templates, with the location and the value filled in."""

from __future__ import annotations

from gateway.config.loader import DeviceSpec

_DEFAULT = {
    "en": "{rule} on {device}{where}: {field} = {value}",
    "zh": "{device}{where} 触发 {rule}：{field} = {value}",
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def alarm_location(spec: DeviceSpec | None, channel: int | None) -> dict[str, object]:
    """Building, unit, floor ... plus the channel under its own name (port, door)."""
    location: dict[str, object] = dict(spec.location()) if spec else {}
    if channel is not None:
        location[spec.channel_name if spec else "channel"] = channel
    return location


def render(template: str | None, *, language: str, rule: str, spec: DeviceSpec | None,
           device: str, channel: int | None, field: str, value: float | None) -> str:
    """Fill a rule's message template; unknown placeholders show as '?'."""
    location = alarm_location(spec, channel)
    where = ""
    if channel is not None and spec is not None:
        where = f" {spec.channel_name} {channel}"
    shown = f"{value:.6g}" if isinstance(value, float) else value
    values = _Blank(location, rule=rule, device=device, field=field, value=shown,
                    channel=channel, where=where)
    try:
        return (template or _DEFAULT[language]).format_map(values)
    except (ValueError, IndexError, AttributeError):  # a bad template must not lose the alarm
        return _DEFAULT[language].format_map(values)
