"""The hub's config file (``community-gateway hub HUB.yaml``).

A hub file is told from a site file by its top-level ``hub:`` section. It names
the broker (with the hub's own credentials), the scope (a subdistrict,
communities or compounds), where the hub keeps its state, how long history is
kept, where its HTTP API listens, and the webhooks of its own alarms (a gateway
offline or silent). ``commands`` holds the signing key for operators' commands,
used once signed commands land (issue "Trust").

Deliberately free of the gateway's runtime and drivers: the hub process imports
only this, gateway.alarms and the small shared modules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.config.base import Id, Secret, Strict
from gateway.config.models import HttpConfig, MqttTls, WebhookConfig
from gateway.config.yaml_file import read_yaml
from gateway.errors import ConfigError


class HubInfo(Strict):
    """Who this hub is (its MQTT client id is ``hub-<id>`` unless the broker section says)."""

    id: Id
    name: str | None = None
    language: str = "en"


class HubBroker(Strict):
    """The broker the gateways publish to, with the hub's own credentials."""

    host: str
    port: int = Field(default=1883, ge=1, le=65535, description="default 1883, 8883 with tls")
    prefix: str = Field(default="community", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    client_id: str | None = Field(default=None, description="default: hub-<hub id>; two hub "
                                                            "replicas need two ids")
    username: str | None = None
    password: Secret | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    tls: MqttTls | None = None

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("tls") is not None and "port" not in data:
            return {**data, "port": 8883}
        return data


class HubScope(Strict):
    """Which sites the hub serves, by the hierarchy in their ``info``.

    A site is in scope when it matches every part given: its subdistrict is
    ``subdistrict``, its community one of ``communities``, its compound one of
    ``compounds``. ``all: true`` takes every site on the broker (a test bench).
    """

    subdistrict: str | None = None
    communities: list[str] = []
    compounds: list[str] = []
    all: bool = False

    @model_validator(mode="after")
    def _something(self) -> "HubScope":
        given = self.subdistrict is not None or self.communities or self.compounds
        if not given and not self.all:
            raise ValueError("name a subdistrict, communities or compounds "
                             "(or 'all: true' for every site on the broker)")
        if given and self.all:
            raise ValueError("'all: true' goes alone")
        return self

    def covers(self, hierarchy: dict[str, Any] | None) -> bool:
        """Whether a site with this hierarchy (from its info) is in scope."""
        if self.all:
            return True
        if not isinstance(hierarchy, dict):
            return False
        if self.subdistrict is not None and hierarchy.get("subdistrict") != self.subdistrict:
            return False
        if self.communities and hierarchy.get("community") not in self.communities:
            return False
        if self.compounds and hierarchy.get("compound") not in self.compounds:
            return False
        return True

    def describe(self) -> dict[str, Any]:
        """The scope as JSON (for /api/sites)."""
        if self.all:
            return {"all": True}
        out: dict[str, Any] = {}
        if self.subdistrict is not None:
            out["subdistrict"] = self.subdistrict
        if self.communities:
            out["communities"] = list(self.communities)
        if self.compounds:
            out["compounds"] = list(self.compounds)
        return out


class HubHistory(Strict):
    """The hub's own store of every alarm transition from every site."""

    retention_days: float = Field(default=400, gt=0, description="a year and a month: the "
                                                                 "monthly reports and a year back")
    path: Path | None = Field(default=None, description="default: STATE_DIR/hub-history.sqlite3")


class HubAlarms(Strict):
    """The hub's own alarms: a gateway offline (its last will) or silent (no health)."""

    silent_after_intervals: float = Field(
        default=3, ge=1.5, le=100,
        description="a gateway whose health has not arrived for this many of its health "
                    "intervals is silent")
    severity: int = Field(default=2, ge=1, le=4, description="of 'gateway offline / silent'")
    escalate_after: float = Field(default=0, ge=0, le=86400, description="0 = never")
    max_shelve_minutes: float = Field(default=480, gt=0, le=7 * 24 * 60)
    tick_interval: float = Field(default=1.0, gt=0, le=30)


class HubCommands(Strict):
    """Signing of operators' commands sent to gateways (HMAC-SHA256 with a named key)."""

    key_id: Id
    key: Secret
    confirm_timeout: float = Field(default=5.0, gt=0, le=60,
                                   description="a command not confirmed by the gateway's "
                                               "retained state within this is 'not delivered'")


class HubConsole(Strict):
    """Users of the hub console (each with a role and a scope)."""

    users_file: Path


class HubConfig(Strict):
    """A whole hub file."""

    hub: HubInfo
    broker: HubBroker
    scope: HubScope
    state_dir: Path = Field(default_factory=lambda: Path(
        os.environ.get("STATE_DIRECTORY", "/var/lib/community-gateway-hub").split(":")[0]))
    history: HubHistory = HubHistory()
    alarms: HubAlarms = HubAlarms()
    http: HttpConfig | None = None
    console: HubConsole | None = None
    commands: HubCommands | None = None
    webhooks: list[WebhookConfig] = []

    @field_validator("webhooks")
    @classmethod
    def _no_duplicate_urls(cls, hooks: list[WebhookConfig]) -> list[WebhookConfig]:
        urls = [h.url for h in hooks]
        if len(set(urls)) != len(urls):
            raise ValueError("the same webhook url is listed twice")
        return hooks

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"hub-{self.hub.id}"

    @property
    def history_path(self) -> Path:
        return self.history.path or self.state_dir / "hub-history.sqlite3"


def is_hub_file(raw: object) -> bool:
    """Whether parsed YAML is a hub file (it has a top-level ``hub:`` section)."""
    return isinstance(raw, dict) and "hub" in raw


def load_hub_config(path: str | Path) -> HubConfig:
    """Read and validate a hub file; relative paths are taken from its folder."""
    path = Path(path)
    raw = read_yaml(path)
    if not is_hub_file(raw):
        raise ConfigError(str(path), [("hub", "required key is missing (a hub file starts with "
                                              "a 'hub:' section)")])
    try:
        config = HubConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(str(path), problems(exc)) from None
    base = path.resolve().parent
    updates: dict[str, Any] = {}
    if not config.state_dir.is_absolute() and "state_dir" in raw:
        updates["state_dir"] = base / config.state_dir
    if config.history.path is not None and not config.history.path.is_absolute():
        updates["history"] = config.history.model_copy(update={"path": base / config.history.path})
    if config.console is not None and not config.console.users_file.is_absolute():
        updates["console"] = HubConsole(users_file=base / config.console.users_file)
    return config.model_copy(update=updates) if updates else config


def check_secrets(config: HubConfig) -> list[str]:
    """Warnings for secrets that cannot be read now (``check`` reports them)."""
    found: list[tuple[str, Secret]] = []
    if config.broker.password is not None:
        found.append(("broker.password", config.broker.password))
    if config.commands is not None:
        found.append(("commands.key", config.commands.key))
    if config.http is not None and config.http.token is not None:
        found.append(("http.token", config.http.token))
    found += [(f"webhooks[{i}].token", w.token) for i, w in enumerate(config.webhooks) if w.token]
    warnings = []
    for key, secret in found:
        try:
            secret.reveal()
        except ValueError as exc:
            warnings.append(f"{key} ({secret.describe()}): {exc}")
    return warnings


def problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's errors as (key path, what was expected); secrets are never echoed."""
    out = []
    for err in exc.errors():
        path = ""
        for item in err["loc"]:
            path += f"[{item}]" if isinstance(item, int) else ("." if path else "") + str(item)
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            secret = any(w in path.lower() for w in ("password", "token", "key", "secret"))
            if kind not in ("value_error", "assertion_error") and "input" in err and not secret:
                msg += f" (got {err['input']!r})"
        out.append((path, msg))
    return out
