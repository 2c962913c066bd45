""""Did you mean ...": the nearest known name for a misspelt key, profile, field or id.

An installer who types ``profile: ev-cabinett`` or ``powr`` should read the right
name in the error, not hunt for it in a list. Names are compared with difflib's
ratio (the share of matching characters); below ``CUTOFF`` nothing is suggested,
because a wrong suggestion costs more than none.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

CUTOFF = 0.6


def nearest(word: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``word``, or None when none is close enough."""
    choices = [k for k in known if k != word]
    found = difflib.get_close_matches(word, choices, n=1, cutoff=CUTOFF)
    if not found:  # case slips ("Power") score low on ratio; compare case-folded too
        folded = {k.casefold(): k for k in choices}
        found = [folded[m] for m in difflib.get_close_matches(word.casefold(), list(folded),
                                                               n=1, cutoff=CUTOFF)]
    return found[0] if found else None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``" (did you mean 'power'?)"`` or ``""``, to append to a problem's message."""
    guess = nearest(word, known)
    return f" (did you mean {guess!r}?)" if guess else ""


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The config model that holds the last key of a pydantic error location.

    ``loc`` is pydantic's, e.g. ``('devices', 0, 'modbus', 'profle')``: list indexes,
    discriminator tags and union member names are stepped through. None when the
    path leaves the models (a dict of free keys).
    """
    current: Any = model
    for item in loc[:-1]:
        current = _step(current, item)
        if current is None:
            return None
    models = [m for m in _members(current) if _is_model(m)]
    return models[0] if len(models) == 1 else None


def known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where ``loc`` points (its last item is the unknown key)."""
    holder = model_at(model, loc)
    return list(holder.model_fields) if holder is not None else []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _members(tp: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / Union."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or isinstance(tp, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_members(arg))
        return out
    return [tp]


def _step(current: Any, item: Any) -> Any:
    """One step down a pydantic location from the type ``current``."""
    members = _members(current)
    if isinstance(item, int):
        for m in members:  # list[X] / tuple[X, ...]
            if typing.get_origin(m) in (list, tuple) and typing.get_args(m):
                return typing.get_args(m)[0]
        return None
    models = [m for m in members if _is_model(m)]
    for m in models:  # a field of one of the models
        if item in m.model_fields:
            return m.model_fields[item].annotation
    for m in models:  # a discriminator tag: the member whose `type` literal is `item`
        tag = m.model_fields.get("type")
        if tag is not None and item in typing.get_args(tag.annotation):
            return m
        if m.__name__ == item:  # a plain union's member, named by its class
            return m
    for m in members:  # dict[str, X]: any key
        if typing.get_origin(m) is dict:
            return typing.get_args(m)[1]
    return None
