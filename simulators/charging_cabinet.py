"""Physics model of an EV-bike charging cabinet, as seen over Modbus.

The cabinet has ``ports`` charging ports, each with a PZEM-004T v3 style meter
(one Modbus slave per port), and one cabinet controller slave holding the port
relays (coils), a smoke detector (discrete input) and temperature probes
(input registers). The register layout is the wire contract in
``/work/shared/devices.md`` section 2; the gateway's config profile matches it,
so do not change it without changing the profile.

The model is pure: no I/O, no tasks. Time comes from an injected clock
(``gateway.clock.SystemClock`` or ``FakeClock``), and the state is brought up to
the clock's time lazily whenever anything is read or written, so tests move a
``FakeClock`` instead of sleeping.

Two notions of time:

* clock seconds (``incident_after``): when a scenario's incident starts, so a
  demo at any ``speed`` shows the incident the same number of wall seconds
  after launch;
* simulated seconds (clock seconds x ``speed``): what the physics integrates,
  so ``speed=60`` charges a bike sixty times faster.

Batteries are deliberately tiny (a few minutes from empty to full at
``speed=1``) so a demo shows a whole charge ending in the floating floor.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.clock import SystemClock

Table = Literal["coils", "discrete_inputs", "holding_registers", "input_registers"]

SCENARIOS: dict[str, str] = {
    "normal": "every port charges normally and tapers to its floating floor",
    "overpower": "from incident_after s the scenario port draws 1200-1500 W while its relay is on",
    "overheat": "from incident_after s the scenario port heats past 80 °C while its relay is on, cools when cut",
    "smoke": "from incident_after s the smoke detector fires and the cabinet temperature rises",
}

AMBIENT_C = 25.0
DEFAULT_ALARM_THRESHOLD_W = 2300  # PZEM-004T factory default
FULL_CHARGE_S = 240.0  # simulated seconds from empty to 80 % at rated power / 0.8
CV_KNEE = 0.8  # state of charge where constant power turns into the taper
PORT_HEAT_C_PER_W = 0.025  # steady-state rise of a port's probe per watt drawn
PORT_TAU_S = 60.0  # thermal time constant of a port's probe
CABINET_TAU_S = 120.0
OVERHEAT_EXTRA_C = 80.0  # a bad contact: extra steady-state rise while current flows
FIRE_EXTRA_C = 70.0
MAX_STEP_S = 1.0  # integration step; small against every time constant above


class Clock(Protocol):
    """Anything with a monotonic seconds counter."""

    def monotonic(self) -> float: ...


@dataclass
class Port:
    """One charging port with a bike plugged in."""

    rated_w: float  # what this bike's charger draws in constant-power phase
    floor_w: float  # charger's draw once the battery is full
    capacity_wh: float  # compressed so a charge takes minutes (see module doc)
    soc: float  # state of charge 0..1
    pf: float  # power factor while charging
    relay: bool = True
    energy_wh: float = 0.0
    temp_c: float = AMBIENT_C
    alarm_threshold_w: int = DEFAULT_ALARM_THRESHOLD_W
    address: int = 0  # PZEM holding register 2; stored, not used to re-address


class CabinetModel:
    """A charging cabinet: per-port meters, relays, smoke and temperatures.

    Ports are numbered 1..``ports``. ``scenario`` is a key of ``SCENARIOS``;
    ``scenario_port`` is the port the overpower / overheat fault hits.
    ``silent`` is the fault switch a server honours by not answering at all.
    """

    def __init__(
        self,
        ports: int = 4,
        scenario: str = "normal",
        scenario_port: int = 3,
        incident_after: float = 5.0,
        speed: float = 1.0,
        seed: int | None = None,
        clock: Clock | None = None,
        *,
        meter_base: int = 1,
        controller_id: int = 100,
    ):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}, choose from {sorted(SCENARIOS)}")
        if not 1 <= ports <= 64:
            raise ValueError("ports must be 1..64")
        if not 1 <= scenario_port <= ports:
            raise ValueError(f"scenario_port must be 1..{ports}")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        meter_ids = range(meter_base, meter_base + ports)
        if not (1 <= meter_base and meter_ids[-1] <= 247 and 1 <= controller_id <= 247):
            raise ValueError("slave ids must be 1..247")
        if controller_id in meter_ids:
            raise ValueError("controller_id overlaps the meter ids")
        self.scenario = scenario
        self.scenario_port = scenario_port
        self.incident_after = incident_after
        self.speed = speed
        self.meter_base = meter_base
        self.controller_id = controller_id
        self.silent = False
        self._clock = clock or SystemClock()
        self._rng = random.Random(seed)
        self._ports = [self._new_port(p) for p in range(1, ports + 1)]
        for port in self._ports:  # bikes were already charging: start warm
            port.temp_c = AMBIENT_C + PORT_HEAT_C_PER_W * self._charger_w(port)
        self._overpower_w = self._rng.uniform(1200.0, 1500.0)
        self._cabinet_c = AMBIENT_C + 0.5 * (max(p.temp_c for p in self._ports) - AMBIENT_C)
        self._sim_s = 0.0  # simulated seconds since start
        self._t0 = self._last = self._clock.monotonic()

    def _new_port(self, p: int) -> Port:
        rated = self._rng.uniform(150.0, 350.0)
        return Port(
            rated_w=rated,
            floor_w=self._rng.uniform(5.0, 20.0),
            # capacity follows the charger so every bike takes a few minutes
            capacity_wh=rated * FULL_CHARGE_S / 3600.0,
            soc=self._rng.uniform(0.2, 0.75),
            pf=self._rng.uniform(0.92, 0.99),
            address=self.meter_base + p - 1,
        )

    # ------------------------------------------------------------------ time

    @property
    def ports(self) -> int:
        """Number of ports."""
        return len(self._ports)

    def _incident_active(self) -> bool:
        return (
            self.scenario != "normal"
            and self._last - self._t0 >= self.incident_after
        )

    def update(self) -> None:
        """Integrate the physics up to the clock's current time."""
        now = self._clock.monotonic()
        real_dt = now - self._last
        if real_dt <= 0:
            return
        # Split at the incident onset so the fault starts exactly on time even
        # when a test jumps the clock far past it.
        onset = self._t0 + self.incident_after
        if self.scenario != "normal" and self._last < onset < now:
            self._integrate_to(onset)
        self._integrate_to(now)

    def _integrate_to(self, t: float) -> None:
        sim_total = (t - self._last) * self.speed
        # A long gap (hours idle, or a huge FakeClock jump) would be many small
        # steps; cap the count, everything stays stable with a coarser step.
        steps = max(1, min(math.ceil(sim_total / MAX_STEP_S), 20_000))
        dt = sim_total / steps
        incident = self.scenario != "normal" and t - self._t0 >= self.incident_after
        for _ in range(steps):
            self._step(dt, incident)
        self._sim_s += sim_total
        self._last = t

    def _step(self, dt: float, incident: bool) -> None:
        for p, port in enumerate(self._ports, start=1):
            power = self._power(p, port, incident)
            port.energy_wh += power * dt / 3600.0
            if port.relay and port.soc < 1.0:
                charge_w = max(0.0, self._charger_w(port) - port.floor_w)
                port.soc = min(1.0, port.soc + charge_w * dt / (port.capacity_wh * 3600.0))
                if port.soc > 0.998:  # the charger's end-of-charge detection
                    port.soc = 1.0
            target = AMBIENT_C + PORT_HEAT_C_PER_W * power
            if incident and self.scenario == "overheat" and p == self.scenario_port and port.relay:
                target += OVERHEAT_EXTRA_C
            port.temp_c = _relax(port.temp_c, target, dt, PORT_TAU_S)
        hottest = max(port.temp_c for port in self._ports)
        target = AMBIENT_C + 0.5 * (hottest - AMBIENT_C)
        if incident and self.scenario == "smoke":
            target += FIRE_EXTRA_C
        self._cabinet_c = _relax(self._cabinet_c, target, dt, CABINET_TAU_S)

    @staticmethod
    def _charger_w(port: Port) -> float:
        """Charger draw: constant power, then a taper down to the floating floor."""
        if port.soc >= 1.0:
            return port.floor_w
        if port.soc < CV_KNEE:
            return port.rated_w
        remaining = (1.0 - port.soc) / (1.0 - CV_KNEE)
        return port.floor_w + (port.rated_w - port.floor_w) * remaining

    def _power(self, p: int, port: Port, incident: bool) -> float:
        if not port.relay:
            return 0.0
        if incident and self.scenario == "overpower" and p == self.scenario_port:
            return self._overpower_w
        return self._charger_w(port)

    # ------------------------------------------------- convenience accessors

    def _port(self, p: int) -> Port:
        if not 1 <= p <= len(self._ports):
            raise IndexError(f"port {p} is not 1..{len(self._ports)}")
        return self._ports[p - 1]

    def relay(self, p: int) -> bool:
        """Whether port ``p``'s relay is on (power to the port)."""
        return self._port(p).relay

    def set_relay(self, p: int, on: bool) -> None:
        """Switch port ``p``'s relay, as coil ``p - 1`` of the controller does."""
        self.update()  # the energy drawn so far was drawn with the old state
        self._port(p).relay = bool(on)

    def port_power_w(self, p: int) -> float:
        """True power drawn by port ``p`` now (no measurement noise)."""
        self.update()
        return self._power(p, self._port(p), self._incident_active())

    def port_temp_c(self, p: int) -> float:
        """Temperature of port ``p``'s probe."""
        self.update()
        return self._port(p).temp_c

    def port_soc(self, p: int) -> float:
        """State of charge 0..1 of the bike on port ``p``."""
        self.update()
        return self._port(p).soc

    def port_floor_w(self, p: int) -> float:
        """The floating-floor draw of port ``p``'s charger once full."""
        return self._port(p).floor_w

    def port_energy_wh(self, p: int) -> float:
        """Energy drawn through port ``p`` since start."""
        self.update()
        return self._port(p).energy_wh

    @property
    def cabinet_temp_c(self) -> float:
        """Cabinet temperature."""
        self.update()
        return self._cabinet_c

    @property
    def smoke(self) -> bool:
        """Smoke detector state; latches once the smoke scenario fires."""
        self.update()
        return self.scenario == "smoke" and self._incident_active()

    # ------------------------------------------------------- register level

    def slave_ids(self) -> list[int]:
        """Every slave id on the bus: the meters, then the controller."""
        return [self.meter_base + i for i in range(len(self._ports))] + [self.controller_id]

    def read_table(self, slave: int, table: Table) -> tuple[int, list[int] | list[bool]]:
        """Current contents of one table of one slave as (first address, values).

        Register values are u16 words as they go on the wire; bit tables are
        bools. A table the slave does not have is ``(0, [])``.
        """
        self.update()
        if slave == self.controller_id:
            return self._controller_table(table)
        p = slave - self.meter_base + 1
        if 1 <= p <= len(self._ports):
            return self._meter_table(p, table)
        raise KeyError(f"no slave {slave}")

    def _controller_table(self, table: Table) -> tuple[int, list[int] | list[bool]]:
        if table == "coils":
            return 0, [port.relay for port in self._ports]
        if table == "discrete_inputs":
            return 0, [self.scenario == "smoke" and self._incident_active()]
        if table == "input_registers":
            temps = [self._cabinet_c] + [port.temp_c for port in self._ports]
            return 0, [_i16(round(t * 10)) for t in temps]
        return 0, []

    def _meter_table(self, p: int, table: Table) -> tuple[int, list[int] | list[bool]]:
        port = self._ports[p - 1]
        if table == "holding_registers":
            return 1, [port.alarm_threshold_w, port.address]
        if table != "input_registers":
            return 0, []
        rng = self._rng
        power = self._power(p, port, self._incident_active())
        # The mains is shared by the whole cabinet: a slow wander plus a little
        # per-reading noise, like a real meter's last digit.
        volts = 228.0 + 3.0 * math.sin(self._sim_s / 97.0) + rng.gauss(0.0, 0.3)
        volts = min(235.0, max(220.0, volts))
        hz = 50.0 + rng.gauss(0.0, 0.02)
        if power > 0:
            power *= 1.0 + rng.gauss(0.0, 0.003)
            pf = min(0.99, max(0.9, port.pf + rng.gauss(0.0, 0.003)))
            amps = power / (volts * pf)
        else:
            # no load: PZEM shows 0 A and pf 0.00
            pf = amps = power = 0.0
        alarm = 0xFFFF if power > port.alarm_threshold_w else 0
        return 0, [
            round(volts * 10),
            *_u32_low_first(round(amps * 1000)),
            *_u32_low_first(round(power * 10)),
            *_u32_low_first(int(port.energy_wh)),
            round(hz * 10),
            round(pf * 100),
            alarm,
        ]

    def write_coil(self, slave: int, address: int, value: bool) -> bool:
        """Apply a coil write; False if the slave has no such coil."""
        if slave != self.controller_id or not 0 <= address < len(self._ports):
            return False
        self.set_relay(address + 1, value)
        return True

    def write_holding(self, slave: int, address: int, value: int) -> bool:
        """Apply a holding register write; False if illegal (address or value)."""
        p = slave - self.meter_base + 1
        if not 1 <= p <= len(self._ports):
            return False
        port = self._ports[p - 1]
        if address == 1:
            port.alarm_threshold_w = value
        elif address == 2 and 1 <= value <= 247:
            port.address = value
        else:
            return False
        return True


def _relax(value: float, target: float, dt: float, tau: float) -> float:
    """First-order lag, exact for any step so long gaps stay stable."""
    return target + (value - target) * math.exp(-dt / tau)


def _u32_low_first(value: int) -> tuple[int, int]:
    """Split a u32 into (low word, high word): the PZEM word order."""
    value = max(0, min(value, 0xFFFFFFFF))
    return value & 0xFFFF, value >> 16


def _i16(value: int) -> int:
    """Two's-complement i16 as a u16 register word."""
    return max(-0x8000, min(value, 0x7FFF)) & 0xFFFF
