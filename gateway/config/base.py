"""Shared pieces of the config models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config.secrets import check_private

# Ids become MQTT topic segments, InfluxDB tags and task names: keep them plain.
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen."""

    # defer_build: a model builds its validator at its first use, not at import: the
    # root model holds every nested one, so most never need their own (issue 16: ~1 MiB)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Secret(Strict):
    """A secret taken from an environment variable or a file, never written inline.

    The value is read when the gateway starts (``reveal()``), so ``check`` can tell
    that it is missing without printing it. A file must not be accessible by other
    users (mode 0600, or 0640 for a group).
    """

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "Secret":
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' (variable name) or 'file' (path)")
        return self

    def reveal(self) -> str:
        """Return the secret's value; raise ValueError saying where it was looked for."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            check_private(self.file)
            return self.file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from exc

    def describe(self) -> str:
        """Where the secret comes from, safe to print."""
        return f"env {self.env}" if self.env else f"file {self.file}"


class Location(Strict):
    """Where a device is inside the compound; every part optional."""

    building: str | None = None
    unit: str | None = None
    floor: str | None = None
    room: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The parts that are set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}
