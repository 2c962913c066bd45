"""Matching a value against a set and an event's attributes against ``where``."""

from __future__ import annotations

from collections.abc import Mapping


def value_set(equals: float | None, in_: list[float] | None, default: float = 1.0) -> frozenset[float]:
    """The values that match: ``in``, else ``equals``, else ``default``.

    Readings of discrete states (door contact, motion state) are exact small
    integers as floats, so set membership is exact.
    """
    if in_ is not None:
        return frozenset(float(v) for v in in_)
    return frozenset((float(default if equals is None else equals),))


def _norm(value: object) -> str:
    # YAML says 38, a JSON event may say "38" or 38.0: compare their plain text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


Compiled = tuple[tuple[str, frozenset[str]], ...]


def compile_where(where: Mapping[str, object]) -> Compiled:
    """``{attr: value or [values]}`` compiled for ``where_matches``."""
    return tuple((attr, frozenset(_norm(v) for v in (want if isinstance(want, list) else [want])))
                 for attr, want in where.items())


def where_matches(compiled: Compiled, attrs: Mapping[str, object]) -> bool:
    """Whether every attribute named in ``where`` has one of its values."""
    for attr, allowed in compiled:
        if attr not in attrs or _norm(attrs[attr]) not in allowed:
            return False
    return True
