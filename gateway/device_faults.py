"""How a device tells of its own faults, as a profile declares it (protocol-neutral: shared
by the drivers' profile models and the site config).

A fault is one named condition of the device itself - a detector's fault contact,
a low battery, a dirty smoke chamber, a radar's failed self-test, a meter's error
code - as opposed to what it senses. A profile lists where each comes from:

```yaml
faults:
  - {field: status, bits: {0: detector fault, 3: low battery, 5: dirty chamber}}
  - {field: error_code, codes: {1: probe open circuit, 2: probe short circuit}}
  - {field: tamper, when: 1, fault: cover open}
  - {field: pressure, below: -0.05, fault: sensor loop open}
  - {field: loop_closed, channel: 3, when: 0, fault: beam detector fault}   # site wiring
  - {event: low_battery, clear_on: battery_ok, fault: low battery}
```

Each becomes a ``device_fault`` alarm naming the fault (see gateway.runtime.faults),
raised while the condition holds and cleared when it goes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FaultName = str


class FaultSource(BaseModel):
    """One place a device reports faults: a bit field, a code field, a flag or an event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = Field(default=None, description="a reading field of the profile")
    channel: int | None = Field(default=None, ge=1, le=256,
                                description="only this channel (an input wired to a fault "
                                            "contact); default every channel")
    bits: dict[int, FaultName] | None = Field(default=None, description="bit number -> fault")
    codes: dict[int, FaultName] | None = Field(default=None, description="value -> fault "
                                                                          "(0 means none)")
    when: float | None = Field(default=None, description="the field equals this: the fault")
    below: float | None = Field(default=None, description="the field is under this: the fault "
                                                          "(a 4-20 mA loop under 4 mA is open)")
    event: str | None = Field(default=None, description="an event that raises the fault")
    clear_on: str | None = Field(default=None, description="the event that clears it")
    fault: FaultName | None = Field(default=None, max_length=64,
                                    description="the fault's name (with 'when' or 'event')")

    @field_validator("bits")
    @classmethod
    def _bit_range(cls, bits: dict[int, str] | None) -> dict[int, str] | None:
        if bits and not all(0 <= b <= 31 for b in bits):
            raise ValueError("bits are numbered 0..31")
        return bits

    @model_validator(mode="after")
    def _one_form(self) -> "FaultSource":
        forms = [self.bits is not None, self.codes is not None, self.when is not None,
                 self.below is not None, self.event is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of 'bits', 'codes', 'when' or 'below' (with "
                             "'field'), or 'event'")
        if (self.event is None) == (self.field is None):
            raise ValueError("a field fault needs 'field'; an event fault needs 'event' only")
        if (self.when is not None or self.below is not None or self.event is not None) \
                and not self.fault:
            raise ValueError("'when', 'below' and 'event' need 'fault': the fault's name")
        if self.clear_on is not None and self.event is None:
            raise ValueError("'clear_on' goes with 'event'")
        return self

    def names(self) -> list[str]:
        """Every fault this source can report."""
        if self.bits is not None:
            return list(self.bits.values())
        if self.codes is not None:
            return list(self.codes.values())
        return [self.fault] if self.fault else []

    def active(self, value: float) -> list[str]:
        """The faults a field value shows (field forms)."""
        if self.bits is not None:
            raw = int(value)
            return [name for bit, name in self.bits.items() if raw >> bit & 1]
        if self.codes is not None:
            name = self.codes.get(int(value))
            return [name] if name else []
        if self.below is not None:
            return [self.fault] if self.fault and value < self.below else []
        return [self.fault] if self.fault and value == self.when else []
