"""Config models for alarm rules and their actions."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from gateway.config.base import Id, Strict


class Selector(Strict):
    """Which devices a rule watches; every criterion given must match."""

    kinds: list[str] = []
    devices: list[Id] = []
    buildings: list[str] = []
    units: list[str] = []
    channels: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        default=[], description="only these channels (inputs, ports, doors) of the devices")


class ActionTargets(Strict):
    """Devices an action writes to, chosen by kind and place instead of one id.

    ``same`` lists location parts that must equal the triggering device's: a fire
    alarm in a charging room cuts every cabinet with ``{kinds: [ev_cabinet], same:
    [building, room]}``. The other criteria are fixed, as in a rule's ``select``.
    """

    kinds: list[str] = []
    devices: list[Id] = []
    buildings: list[str] = []
    units: list[str] = []
    same: list[Literal["building", "unit", "floor", "room"]] = []

    @model_validator(mode="after")
    def _narrowed(self) -> "ActionTargets":
        if not (self.kinds or self.devices or self.buildings or self.units or self.same):
            raise ValueError("name at least one of kinds, devices, buildings, units or same "
                             "(an empty 'targets' would write to every device)")
        return self


class WriteAction(Strict):
    """Write a value to a device's writable field (cut a port's relay, release a lock).

    ``channels: same`` writes the channel that triggered the rule; ``all`` writes
    that field on every channel of the device. ``device`` names another device,
    ``targets`` every device of a kind and place (not both). ``for`` seconds later
    ``then`` is written (a siren or floodlight on for a while; default: 0, or 1
    after a 0).
    """

    write: str
    value: float
    channels: Literal["same", "all"] | int = "same"
    device: Id | None = Field(default=None, description="another device; default the rule's")
    targets: ActionTargets | None = None
    for_: float | None = Field(default=None, alias="for", gt=0, le=86400)
    then: float | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "WriteAction":
        if self.device is not None and self.targets is not None:
            raise ValueError("give 'device' or 'targets', not both")
        if self.then is not None and self.for_ is None:
            raise ValueError("'then' goes with 'for' (seconds until it is written)")
        return self

    @property
    def revert_value(self) -> float:
        """What is written ``for`` seconds later."""
        if self.then is not None:
            return self.then
        return 1.0 if self.value == 0 else 0.0


class LocalizedText(Strict):
    """A message template per language; the site's language picks one."""

    en: str | None = None
    zh: str | None = None

    @model_validator(mode="after")
    def _some_text(self) -> "LocalizedText":
        if self.en is None and self.zh is None:
            raise ValueError("give 'en', 'zh' or both")
        return self


class RuleBase(Strict):
    """What every rule has: what it watches, how urgent it is, what it says and does.

    ``message`` is a template (one string for the site's language, or
    ``{en: ..., zh: ...}``); without it each kind has a default in both languages.
    ``latch``: the alarm stays active until a person resets it. ``escalate_after``:
    seconds an unacknowledged alarm waits before it escalates (0 = never; default:
    the site's ``alarms.escalate_after`` for severity 1, never for the others).
    """

    id: Id
    select: Selector = Selector()
    severity: int = Field(default=2, ge=1, le=4)
    message: str | LocalizedText | None = None
    alarm: bool = Field(default=True, description="false: act and log, raise no alarm")
    latch: bool = False
    escalate_after: float | None = Field(default=None, ge=0)
    actions: list[WriteAction] = []
    armed_by: Id | None = Field(default=None, description="an arming group: the rule raises "
                                                          "only while the group is armed")
    reset_needs_note: bool = Field(default=False, description="a reset must say what was found "
                                                              "(one-key alarms)")

    @model_validator(mode="after")
    def _does_something(self) -> "RuleBase":
        if not self.alarm and not self.actions:
            raise ValueError("a rule with 'alarm: false' needs actions, or it does nothing")
        return self


def _as_list(value: object) -> object:
    """Accept one name where a list of names is expected."""
    return [value] if isinstance(value, str) else value


Names = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_as_list)]
AttrValue = str | int | float | bool
# Event attributes to match: each named attribute equals the value (or one of the values).
Where = dict[str, AttrValue | list[AttrValue]]


class ThresholdRule(RuleBase):
    """A value above (or below) a limit, with hysteresis and on/off delays."""

    type: Literal["threshold"]
    field: str
    above: float | None = None
    below: float | None = None
    # Values at or under this floor never count as "below": an empty port reads
    # 0 W and is not a finished charge.
    ignore_at_or_below: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    on_delay: float = Field(default=0.0, ge=0)
    off_delay: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_limit(self) -> "ThresholdRule":
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        if self.ignore_at_or_below is not None and self.below is None:
            raise ValueError("'ignore_at_or_below' goes with 'below'")
        return self


class HeldRule(RuleBase):
    """A field has held one value for too long (a door open for more than 90 s).

    Active once ``field == equals`` has lasted ``for`` seconds (checked on every
    reading and by the timer, so it fires on time even when the device only reports
    changes); cleared when the value changes.
    """

    type: Literal["held"]
    field: str
    equals: float = 1.0
    for_: float = Field(alias="for", gt=0)


class EventRule(RuleBase):
    """A device event in a set (``event``), or a reading's field in a set of values.

    Event form: ``event: [names]`` and optional ``where: {attr: value or [values]}``.
    An event is momentary: its alarm is raised active and stays active until a
    person acknowledges it (then it closes; with ``latch`` it needs a reset too).
    With ``clear_on: [names]`` it is a condition instead: active from ``event``
    until one of ``clear_on`` arrives from the same device and channel.
    Field form: ``field`` with ``equals`` (default 1) or ``in: [values]``: active
    while the value is in the set, cleared when it leaves it.
    """

    type: Literal["event"]
    event: Names | None = None
    where: Where = {}
    clear_on: Names = []
    field: str | None = None
    equals: float | None = None
    in_: list[float] | None = Field(default=None, alias="in", min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> "EventRule":
        if (self.event is None) == (self.field is None):
            raise ValueError("give exactly one of 'event' (device events) or 'field' (readings)")
        if self.event is not None:
            if not self.event:
                raise ValueError("'event' needs at least one event name")
            if self.equals is not None or self.in_ is not None:
                raise ValueError("'equals' and 'in' go with 'field'; events match with 'where'")
        elif self.where or self.clear_on:
            raise ValueError("'where' and 'clear_on' go with 'event'")
        if self.equals is not None and self.in_ is not None:
            raise ValueError("give one of 'equals' or 'in'")
        return self


class CountRule(RuleBase):
    """``count`` events within ``window`` seconds on one device and channel (five
    denials in 60 s at the same door).

    Fires when the count-th event arrives; the count then starts again, so
    another full burst is a repeat of the alarm (its count goes up). Momentary like
    an event. ``reset_on: [names]`` (e.g. ``granted``) starts the count again.
    """

    type: Literal["count"]
    event: Names = Field(min_length=1)
    where: Where = {}
    count: int = Field(ge=2, le=10_000)
    window: float = Field(gt=0, le=86400)
    reset_on: Names = []


class AbsenceRule(RuleBase):
    """No reading and no event from a device for ``for`` seconds (a device gone quiet).

    Checked by the timer; cleared by the device's next reading or event.
    """

    type: Literal["absence"]
    for_: float = Field(alias="for", gt=0)


class RateRule(RuleBase):
    """A field changing too fast: rate = change of value / seconds, signed.

    ``above: 2``: rising faster than 2 units/s; ``below: -2``: falling faster than
    2 units/s. The rate is taken against the oldest reading within ``window``
    seconds (default: the previous reading). Hysteresis and delays as for
    ``threshold``, applied to the rate.
    """

    type: Literal["rate"]
    field: str
    above: float | None = None
    below: float | None = None
    window: float | None = Field(default=None, gt=0, le=86400)
    hysteresis: float = Field(default=0.0, ge=0)
    on_delay: float = Field(default=0.0, ge=0)
    off_delay: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_limit(self) -> "RateRule":
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self


class Trigger(Strict):
    """What starts a confirmation: a device event, or a field entering a set of values."""

    event: Names | None = None
    where: Where = {}
    field: str | None = None
    equals: float | None = None
    in_: list[float] | None = Field(default=None, alias="in", min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> "Trigger":
        if (self.event is None) == (self.field is None):
            raise ValueError("give exactly one of 'event' or 'field'")
        if self.field is None and (self.equals is not None or self.in_ is not None):
            raise ValueError("'equals' and 'in' go with 'field'")
        if self.event is None and self.where:
            raise ValueError("'where' goes with 'event'")
        if self.equals is not None and self.in_ is not None:
            raise ValueError("give one of 'equals' or 'in'")
        return self


class Hold(Strict):
    """A field that must stay in a set of values for ``for`` seconds."""

    field: str
    equals: float | None = None
    in_: list[float] | None = Field(default=None, alias="in", min_length=1)
    for_: float = Field(alias="for", gt=0)

    @model_validator(mode="after")
    def _one_set(self) -> "Hold":
        if self.equals is not None and self.in_ is not None:
            raise ValueError("give one of 'equals' or 'in'")
        return self


class ConfirmRule(RuleBase):
    """``first`` happens, then ``then`` holds for its ``for`` seconds: a confirmed
    incident at this rule's severity (a fall followed by no motion for 30 s).

    The hold counts from ``first`` (or from when ``then`` starts holding after it);
    if ``then`` stops holding once it held, the confirmation is called off. Waits
    at most ``within`` seconds after ``first`` (default: twice ``then.for``). The
    first sign itself can be alarmed by a separate ``event`` rule. Momentary.
    """

    type: Literal["confirm"]
    first: Trigger
    then: Hold
    within: float | None = Field(default=None, gt=0, le=86400)

    @model_validator(mode="after")
    def _window(self) -> "ConfirmRule":
        if self.within is not None and self.within < self.then.for_:
            raise ValueError("'within' must be at least 'then.for'")
        return self


class ForcedRule(RuleBase):
    """A door opened with no grant shortly before: forced open.

    Fires when ``field`` turns to ``equals`` on a device and channel (door number)
    and none of ``unless_events`` came in the ``within`` seconds before, from the
    same device or from ``grants_from`` (the door's access terminal; its events
    match on the same channel number, or on any door if it reports no channel).
    ``grace`` seconds after the opening still accept a late grant (the terminal's
    event may arrive after the contact's reading); the alarm waits that long.
    Momentary: stays until acknowledged (and reset, with ``latch``).
    """

    type: Literal["forced"]
    field: str = "door_open"
    equals: float = 1.0
    unless_events: Names = ["granted", "exit_button"]
    within: float = Field(default=5.0, gt=0, le=3600)
    grants_from: list[Id] = []
    grace: float = Field(default=0.0, ge=0, le=30)


Rule = Annotated[Union[ThresholdRule, HeldRule, EventRule, CountRule, AbsenceRule, RateRule,
                       ConfirmRule, ForcedRule], Field(discriminator="type")]
