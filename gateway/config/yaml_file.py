"""Reading a YAML config file (a site, a profile, a hub) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError


def read_yaml(path: Path) -> Any:
    """The file's YAML, or ConfigError naming the file (and the line, for bad YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read file: {exc.strerror}")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [("", f"not valid YAML: {at}"
                                           f"{getattr(exc, 'problem', exc)}")]) from None
