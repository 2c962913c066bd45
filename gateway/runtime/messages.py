"""Alarm messages from templates, with the location and the value filled in.

A rule's ``message`` is a template (one string, or ``{en: ..., zh: ...}`` of
which the site's language is taken); without one, each rule kind has a default
in both languages. Placeholders (unknown ones show as ``?``):

- ``{place}``: the location in words ("building 3, unit 2, floor B1, door 1" /
  "3号楼2单元B1层1号门"); ``{building} {unit} {floor} {room}`` and the channel
  under its own name (``{port}``, ``{door}``) or ``{channel}``; ``{where}``: the
  channel alone (" port 3"), as before;
- ``{device} {kind} {rule} {field} {value}``; ``{field_text}``, ``{event}``,
  ``{event_text}``: names in words of the site's language;
- the rule's parameters: ``{limit}`` (above/below), ``{for}``, ``{equals}``,
  ``{count}``, ``{window}``;
- every key of the alarm's ``details`` (an event's attributes: ``{floor_est}``,
  ``{confidence}``, ``{snapshot}`` ...; ``{held_for}``, ``{silent_for}``).
"""

from __future__ import annotations

from typing import Any

from gateway.config.loader import DeviceSpec

_DEFAULT = {
    "en": "{rule} on {device}{where}: {field} = {value}",
    "zh": "{device}{where} 触发 {rule}：{field} = {value}",
}

# Default templates per rule kind (``event_field``: the field form of an event rule).
DEFAULTS: dict[str, dict[str, str]] = {
    "threshold": {"en": "{field_text} {value} at {place} ({device}); limit {limit}",
                  "zh": "{place}（{device}）{field_text} {value}，限值 {limit}"},
    "held": {"en": "{field_text} at {equals} for over {for} s at {place} ({device})",
             "zh": "{place}（{device}）{field_text}为 {equals} 已超过 {for} 秒"},
    "event": {"en": "{event_text} at {place} ({device})",
              "zh": "{place}（{device}）{event_text}"},
    "event_field": {"en": "{field_text} {value} at {place} ({device})",
                    "zh": "{place}（{device}）{field_text} {value}"},
    "count": {"en": "{count} × {event_text} within {window} s at {place} ({device})",
              "zh": "{place}（{device}）{window} 秒内{count}次{event_text}"},
    "absence": {"en": "No data from {device} at {place} for over {for} s",
                "zh": "{place}（{device}）已超过 {for} 秒无数据"},
    "rate": {"en": "{field_text} changing at {value}/s at {place} ({device}); limit {limit}/s",
             "zh": "{place}（{device}）{field_text}变化 {value}/秒，限值 {limit}/秒"},
    "confirm": {"en": "{first_text} confirmed ({then_text} for {for} s) at {place} ({device})",
                "zh": "{place}（{device}）确认{first_text}（{then_text}持续 {for} 秒）"},
    "forced": {"en": "Door forced open at {place} ({device})",
               "zh": "{place}（{device}）门被强行打开"},
}

# Names in words; anything not here is shown with "_" as a space (en) or as is (zh).
_NAMES_ZH = {
    "power": "功率", "voltage": "电压", "current": "电流", "energy": "电量",
    "temperature": "温度", "cabinet_temperature": "柜内温度", "smoke": "烟雾",
    "relay": "继电器", "door_open": "门", "motion": "运动状态", "presence": "有人",
    "fall": "跌倒", "throw": "高空抛物", "forced_open": "门被强行打开", "denied": "刷卡被拒",
    "granted": "授权开门", "exit_button": "出门按钮", "duress": "胁迫报警", "tamper": "防拆报警",
    "held_open": "门长时间未关", "fire": "火警", "emergency_call": "紧急呼叫",
    "emergency_button": "紧急按钮", "burglary": "入侵报警",
}
_CHANNEL_ZH = {"port": "号端口", "door": "号门", "channel": "通道"}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def alarm_location(spec: DeviceSpec | None, channel: int | None) -> dict[str, object]:
    """Building, unit, floor ... plus the channel under its own name (port, door)."""
    location: dict[str, object] = dict(spec.location()) if spec else {}
    if channel is not None:
        location[spec.channel_name if spec else "channel"] = channel
        if spec is not None and channel in spec.channel_places:
            location.update(spec.channel_places[channel])  # a zone's own name and place
    return location


def place_text(location: dict[str, object], language: str, channel_name: str = "channel") -> str:
    """The location in words: "building 3, unit 2, floor B1, port 3" / "3号楼2单元B1层3号端口"."""
    if language == "zh":
        out = []
        for key, suffix, already in (("building", "号楼", "楼栋座"), ("unit", "单元", "单元"),
                                     ("floor", "层", "层楼F")):
            value = location.get(key)
            if value is not None:
                text = str(value)
                out.append(text if text.endswith(tuple(already)) else text + suffix)
        if location.get("room"):
            out.append(str(location["room"]))
        if location.get(channel_name) is not None:
            out.append(f"{location[channel_name]}{_CHANNEL_ZH.get(channel_name, channel_name)}")
        return "".join(out)
    parts = [f"{key} {location[key]}" for key in ("building", "unit", "floor")
             if location.get(key) is not None]
    if location.get("room"):
        parts.append(str(location["room"]))
    if location.get(channel_name) is not None:
        parts.append(f"{channel_name} {location[channel_name]}")
    return ", ".join(parts)


def name_text(name: str | None, language: str) -> str:
    """A field or event name in words of the language."""
    if not name:
        return ""
    if language == "zh":
        return _NAMES_ZH.get(name, name)
    return name.replace("_", " ")


class _Number(float):
    """A number in a template: ``{value}`` shows 6 significant digits, ``{value:.1f}`` works."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return format(float(self), spec or ".6g")

    def __str__(self) -> str:  # {value!s}
        return format(float(self), ".6g")


def _shown(value: object) -> object:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _Number(value)
    return value


def render(template: str | None, *, language: str, rule: str, spec: DeviceSpec | None,
           device: str, channel: int | None, field: str, value: float | None,
           kind: str | None = None, params: dict[str, object] | None = None,
           details: dict[str, object] | None = None) -> str:
    """Fill a template (or the default of the rule ``kind``); unknown placeholders show as '?'."""
    location = alarm_location(spec, channel)
    channel_name = spec.channel_name if spec is not None else "channel"
    where = f" {spec.channel_name} {channel}" if channel is not None and spec is not None else ""
    place = place_text(location, language, channel_name) or device
    values = _Blank({k: _shown(v) for k, v in (details or {}).items()})
    values.update({k: _shown(v) for k, v in (params or {}).items()})
    values.update(location)
    values.update(rule=rule, device=device, kind=spec.kind if spec else "", field=field,
                  value=_shown(value), channel=channel, where=where, place=place,
                  field_text=name_text(field, language), event=field,
                  event_text=name_text(field, language))
    for key in ("first", "then"):
        if key in values:
            values[f"{key}_text"] = name_text(str(values[key]), language)
    fallback = DEFAULTS.get(kind or "", _DEFAULT)[language]
    try:
        return (template or fallback).format_map(values)
    except Exception:  # a bad template ({channel:d} with no channel) must not lose the alarm
        return fallback.format_map(values)


def rule_template(rule: Any, language: str) -> str | None:
    """The rule's own template in the site's language (the other one if only that is given)."""
    message = rule.message
    if message is None or isinstance(message, str):
        return message
    first, other = (message.zh, message.en) if language == "zh" else (message.en, message.zh)
    return first or other


def rule_kind(rule: Any) -> str:
    """Which default template a rule uses."""
    if rule.type == "event" and getattr(rule, "field", None) is not None:
        return "event_field"
    return rule.type


def rule_params(rule: Any) -> dict[str, object]:
    """The rule's parameters that templates may name."""
    out: dict[str, object] = {}
    for name, key in (("above", "limit"), ("below", "limit"), ("for_", "for"), ("equals", "equals"),
                      ("count", "count"), ("window", "window"), ("within", "within")):
        value = getattr(rule, name, None)
        if value is not None and key not in out:
            out[key] = value
    first = getattr(rule, "first", None)
    if first is not None:
        out["first"] = (first.event or [first.field])[0]
        out["then"] = rule.then.field
        out["for"] = rule.then.for_
    return out


def rule_message(rule: Any, *, language: str, spec: DeviceSpec | None, device: str,
                 channel: int | None, field: str, value: float | None,
                 details: dict[str, object] | None = None) -> str:
    """The message of an alarm raised by ``rule``."""
    return render(rule_template(rule, language), language=language, rule=rule.id, spec=spec,
                  device=device, channel=channel, field=field, value=value, kind=rule_kind(rule),
                  params=rule_params(rule), details=details)
