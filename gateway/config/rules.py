"""Config models for alarm rules and their actions."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from gateway.config.base import Id, Strict


class Selector(Strict):
    """Which devices a rule watches; every criterion given must match."""

    kinds: list[str] = []
    devices: list[Id] = []
    buildings: list[str] = []
    units: list[str] = []


class WriteAction(Strict):
    """Write a value to a device's writable field (cut a port's relay, release a lock).

    ``channels: same`` writes the channel that triggered the rule; ``all`` writes
    that field on every channel of the device.
    """

    write: str
    value: float
    channels: Literal["same", "all"] = "same"
    device: Id | None = Field(default=None, description="another device; default the rule's")


class ThresholdRule(Strict):
    """A value above (or below) a limit, with hysteresis and on/off delays."""

    type: Literal["threshold"]
    id: Id
    select: Selector = Selector()
    field: str
    above: float | None = None
    below: float | None = None
    # Values at or under this floor never count as "below": an empty port reads
    # 0 W and is not a finished charge.
    ignore_at_or_below: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    on_delay: float = Field(default=0.0, ge=0)
    off_delay: float = Field(default=0.0, ge=0)
    severity: int = Field(default=2, ge=1, le=4)
    message: str | None = None
    alarm: bool = Field(default=True, description="false: act and log, raise no alarm")
    latch: bool = False
    actions: list[WriteAction] = []

    @model_validator(mode="after")
    def _one_limit(self) -> "ThresholdRule":
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        if self.ignore_at_or_below is not None and self.below is None:
            raise ValueError("'ignore_at_or_below' goes with 'below'")
        if not self.alarm and not self.actions:
            raise ValueError("a rule with 'alarm: false' needs actions, or it does nothing")
        return self


Rule = Annotated[Union[ThresholdRule], Field(discriminator="type")]
