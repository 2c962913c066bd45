"""Radar settings written when the port opens (``setup:``), and how each is confirmed.

An MR60FDA1 answers a set command by echoing the value it stored, so the answer
itself confirms the setting. A TinyFrame radar (LD6002C, MR60FDA2) answers a set
with a status byte whose meaning is not documented, so its settings are confirmed
by reading the parameters back once all of them are written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import mr60fda1, tinyframe


@dataclass(frozen=True, slots=True)
class Setting:
    """One value to write: its config name, the field the radar reports it under, the command."""

    name: str
    value: float
    field: str
    command: object


@dataclass(frozen=True, slots=True)
class SetupPlan:
    """The commands for a ``setup:`` block; ``readback`` (if any) is sent after them and its
    answer must carry every setting's field."""

    settings: tuple[Setting, ...]
    readback: object | None


NextId = Callable[[], int]

# setting name -> (reported field, command builder(value, next_id))
_MR60FDA1: dict[str, tuple[str, Callable[[float, NextId], object]]] = {
    "fall_detection": ("fall_detection", lambda v, _: mr60fda1.set_fall_detection(bool(v))),
    "fall_sensitivity": ("fall_sensitivity", lambda v, _: mr60fda1.set_fall_sensitivity(int(v))),
}
_TINYFRAME: dict[str, tuple[str, Callable[[float, NextId], object]]] = {
    "mount_height": ("mount_height",
                     lambda v, nid: tinyframe.set_mount_height(v, frame_id=nid())),
    "fall_sensitivity": ("sensitivity",
                         lambda v, nid: tinyframe.set_sensitivity(int(v), frame_id=nid())),
}
_SETTABLE = {"mr60fda1": _MR60FDA1, "ld6002c": _TINYFRAME, "mr60fda2": _TINYFRAME, "mr60bha2": {}}

#: Setting names each protocol can write.
SETTABLE: dict[str, frozenset[str]] = {p: frozenset(table) for p, table in _SETTABLE.items()}

#: Largest value of a setting, where the protocol's field is narrower than the config's.
LIMITS: dict[tuple[str, str], float] = {("mr60fda1", "fall_sensitivity"): 0xFF}


def setup_plan(protocol: str, values: Mapping[str, float], *, next_id: NextId) -> SetupPlan:
    """The commands that write ``values`` on a radar speaking ``protocol``.

    ``next_id`` numbers TinyFrame commands, so a late answer to an earlier command
    never passes for the answer to a later one. Raises ValueError for a setting the
    protocol cannot write.
    """
    table = _SETTABLE[protocol]
    settings = []
    for name, value in values.items():
        if name not in table:
            raise ValueError(f"{protocol} cannot set {name!r}; it can set {sorted(table)}")
        field, build = table[name]
        settings.append(Setting(name, float(value), field, build(value, next_id)))
    readback = None
    if settings and table is _TINYFRAME:
        readback = tinyframe.get_parameters(frame_id=next_id())
    return SetupPlan(tuple(settings), readback)


def confirms(reported: float | None, wanted: float) -> bool:
    """Whether a value the radar reports is the one written (f32 round-trip allowed)."""
    return reported is not None and abs(reported - wanted) <= 1e-5 * max(1.0, abs(wanted))
