"""The top of a site config file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, PlainValidator, field_validator, model_validator

from gateway.config.schedule import Schedule
from gateway.config.base import Id, Secret, Strict
from gateway.config.secrets import check_private
from gateway.config.devices import Bus, Device
from gateway.config.fire_centre import FireCentreConfig
from gateway.config.rules import Rule


def _network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a network (host bits clear), as pydantic's ``IPvAnyNetwork`` took them."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ValueError("give an address or a network as text, e.g. 10.0.0.0/8")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        raise ValueError("value is not a valid IPv4 or IPv6 network") from None


# Not pydantic's IPvAnyNetwork: importing pydantic.networks (email validation and all
# the URL types) costs a Pi 2.5 MiB for this one field (issue 16).
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, PlainValidator(_network)]

class SiteInfo(Strict):
    """The compound this gateway serves."""

    id: Id
    name: str | None = None
    subdistrict: str | None = None
    community: str | None = None
    compound: str | None = None
    # The building this gateway serves (one gateway per building); a gateway for a small
    # compound leaves it out and its info names the buildings of its devices' locations.
    building: str | None = None
    language: Literal["en", "zh"] = "en"


class MqttTls(Strict):
    """TLS to the broker: the CA that signed its certificate, optionally a client certificate.

    ``tls: {}`` uses the system's CA store. ``insecure`` skips the check that the
    broker's certificate names ``host`` (a test bench with a self-made certificate).
    """

    ca_file: FilePath | None = Field(default=None, description="default: the system's CAs")
    cert_file: FilePath | None = Field(default=None, description="client certificate (PEM)")
    key_file: FilePath | None = Field(default=None, description="its private key (PEM, mode 0600/0640)")
    insecure: bool = False

    @field_validator("key_file")
    @classmethod
    def _key_is_private(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                check_private(path)
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        return path

    @model_validator(mode="after")
    def _cert_with_key(self) -> "MqttTls":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both 'cert_file' and 'key_file'")
        return self


class MqttConfig(Strict):
    """The broker for alarms, status and (optionally) telemetry."""

    host: str
    port: int = Field(default=1883, ge=1, le=65535, description="default 1883, 8883 with tls")
    prefix: str = Field(default="community", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    client_id: str | None = Field(default=None, description="default: gateway-<site id>")
    username: str | None = None
    password: Secret | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    tls: MqttTls | None = None
    commands: MqttCommandsConfig | None = Field(
        default=None, description="operators' signed commands on {prefix}/{site}/alarms/{id}/"
                                  "{ack|reset|shelve|unshelve}; default off (not subscribed)")
    health_interval: float = Field(
        default=30.0, ge=1, le=3600,
        description="seconds between the retained {prefix}/{site}/health messages the hub "
                    "watches (it calls a gateway silent after a few missed ones)")
    telemetry: TelemetryConfig | None = Field(
        default=None, description="publish readings on {prefix}/{site}/telemetry/{device} "
                                  "(QoS 1): `true`, or its settings")

    @field_validator("telemetry", mode="before")
    @classmethod
    def _telemetry_switch(cls, value: object) -> object:
        # `telemetry: true` reads better than `telemetry: {}` in a site file
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: object) -> object:
        # MQTT over TLS has its own well-known port; only an explicit port overrides it.
        if isinstance(data, dict) and data.get("tls") is not None and "port" not in data:
            return {**data, "port": 8883}
        return data


class CommandKey(Strict):
    """A named key that may sign operators' commands (the hub's, a control room's).

    Its name is recorded as who sent a command. The secret (at least 32 characters,
    e.g. ``openssl rand -hex 32``) is shared with the sender only.
    """

    name: Id
    secret: Secret


class MqttCommandsConfig(Strict):
    """Operators' commands over MQTT, each signed with a key named here (docs/alarms.md).

    Unsigned, badly signed, stale (over 60 s), future-dated and replayed commands are
    refused on ``.../{command}/error``.
    """

    enabled: bool = True
    keys: list[CommandKey] = Field(default=[], description="who may send commands")
    max_per_alarm_per_minute: int = Field(default=10, ge=1, le=600,
                                          description="signed commands taken per alarm; "
                                                      "more are refused (429)")

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> "MqttCommandsConfig":
        if self.enabled and not self.keys:
            raise ValueError("'enabled: true' needs at least one entry in 'keys' "
                             "({name: ..., secret: {env: ...}})")
        names = [k.name for k in self.keys]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"key names must be unique; repeated: {', '.join(dup)}")
        return self


class TelemetryConfig(Strict):
    """Readings as JSON over MQTT: one message per device and batch (a JSON array of the
    readings' objects), each confirmed by a PUBACK."""

    batch_size: int = Field(default=20_000, ge=1, le=100_000)  # rows a batch: a second of 1,000 devices x 20 in one round trip
    flush_interval: float = Field(
        default=1.0, gt=0, le=60,
        description="new rows go out at once (no timer); rows still unsent after 5 flush "
                    "intervals are a backlog, drained at outbox.drain_rate_multiple")


class InfluxConfig(Strict):
    """An InfluxDB v2 write API (InfluxDB, or VictoriaMetrics which accepts it).

    InfluxDB v2 needs an API token (``token: {env: INFLUX_TOKEN}``); VictoriaMetrics
    takes writes without one, so ``token`` may be left out.
    """

    url: str = Field(pattern=r"^https?://")
    org: str
    bucket: str
    token: Secret | None = Field(default=None, description="InfluxDB v2's API token; "
                                                          "none for VictoriaMetrics")
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval: float = Field(
        default=1.0, gt=0, le=60,
        description="new rows go out at once (no timer); rows still unsent after 5 flush "
                    "intervals are a backlog, drained at outbox.drain_rate_multiple")
    timeout: float = Field(default=10.0, gt=0, le=300)


class LocalSeriesConfig(Strict):
    """Keep the time series in a local line-protocol file (no InfluxDB needed)."""

    path: Path
    max_mb: float = Field(default=100, gt=0)


class PipelineConfig(Strict):
    """Queue bounds."""

    queue_size: int = Field(default=10_000, ge=10)
    # Rows held in memory while they wait for their commit to the outbox (only
    # many if the disk fails), and the size of the in-memory outbox (outbox.store:
    # memory); the oldest readings are dropped (and counted) past this.
    upstream_buffer: int = Field(default=200_000, ge=100)


class OutboxConfig(Strict):
    """The durable outbox: readings wait in SQLite (WAL) until every upstream confirmed them.

    A relative ``path`` is taken from the config file's folder.
    """

    path: Path | None = Field(default=None, description="default: STATE_DIR/outbox.sqlite")
    max_mb: float = Field(default=1024, gt=0, description="disk budget; past it the oldest "
                                                          "readings go first (events never)")
    commit_interval: float = Field(default=1.0, gt=0, le=60,
                                   description="how often rows some sink has not confirmed are "
                                               "committed (those older than 0.25 s): a "
                                               "reading waits at most this + 0.25 s")
    commit_rows: int = Field(default=5000, ge=1, le=1_000_000,
                             description="commit at once when this many rows wait")
    drain_rate_multiple: float | None = Field(
        default=4.0, ge=1, description="a backlog drains at most this many times the live "
                                       "ingest rate; null: as fast as the upstream takes it")
    drain_min_rate: float = Field(default=500, gt=0,
                                  description="rows/s a backlog may always drain at, however "
                                              "quiet the site")
    store: Literal["sqlite", "memory"] = Field(
        default="sqlite", description="memory: nothing survives a restart; for benchmarks "
                                      "and trials only")


class ConsoleConfig(Strict):
    """The security-room web console, served under /console by the gateway's HTTP server.

    Relative paths are taken from the config file's folder.
    """

    users_file: Path = Field(description="operators and password hashes; "
                                         "`community-gateway user add NAME --role operator`")
    session_minutes: float = Field(default=720, gt=0, le=7 * 24 * 60,
                                   description="a session ends this long after its last use")
    sessions_file: Path | None = Field(default=None, description="keeps logins across restarts; "
                                                                 "default: USERS_FILE.sessions.json")
    audit_file: Path | None = Field(default=None, description="JSON lines of operator actions; "
                                                              "default: none (the log only)")


class HttpConfig(Strict):
    """The local HTTP API: /healthz, /metrics, /api/... (loopback unless told otherwise).

    Writes (acknowledging an alarm) need ``Authorization: Bearer <token>`` and are
    refused when no token is set. Reads under ``/api/`` are open on a loopback
    listener and need the same token on any other (``check`` warns). ``/healthz``
    and ``/metrics`` stay open: keep them behind a firewall.
    """

    listen: str = Field(default="127.0.0.1:8080",
                        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
                        description="HOST:PORT, [IPv6]:PORT")
    token: Secret | None = None
    trusted_proxies: list[Network] = Field(
        default=[], description="reverse proxies (addresses or networks) whose X-Forwarded-For "
                                "names the client; from anyone else the header is ignored")
    max_connections: int = Field(default=256, ge=8, le=65536,
                                 description="open connections at most; more are closed at once "
                                             "(also kept under half the process's file limit)")
    max_streams: int = Field(default=32, ge=1, le=4096,
                             description="live streams (/api/stream, /console/events) at most; "
                                         "more are answered 503")
    idle_timeout: float = Field(default=30.0, gt=0, le=3600,
                                description="seconds a connection may stay open without a request")

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = int(value.rpartition(":")[2])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1..65535")
        return value

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The TCP port to bind."""
        return int(self.listen.rpartition(":")[2])


class AlarmsConfig(Strict):
    """The alarm lifecycle's site-wide settings."""

    escalate_after: float = Field(
        default=300, ge=0, le=86400,
        description="seconds an unacknowledged severity-1 alarm waits before it escalates "
                    "(0 = never); a rule's own escalate_after applies to any severity")
    max_shelve_minutes: float = Field(default=480, gt=0, le=7 * 24 * 60,
                                      description="the longest an operator may shelve an alarm")
    history_days: float = Field(default=90, gt=0, description="transitions kept in the state file")
    tick_interval: float = Field(default=0.2, gt=0, le=5,
                                 description="how often timed rules, shelving and escalation "
                                             "are checked")
    digest_at: str | None = Field(default="08:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                                  description="local time of the daily digest of devices "
                                              "offline or faulty (null: none)")


class WebhookConfig(Strict):
    """An HTTP endpoint (the security room's messaging bot) that gets each alarm
    transition as JSON by POST, retried with backoff until it answers."""

    url: str = Field(pattern=r"^https?://")
    timeout: float = Field(default=5.0, gt=0, le=120)
    min_severity: int = Field(default=4, ge=0, le=4,
                              description="send alarms at this level or more urgent "
                                          "(severity number <= min_severity)")
    events: list[Literal["raised", "repeated", "cleared", "condition_cleared", "acked",
                         "reset", "shelved", "unshelved", "escalated", "closed",
                         "device_digest"]] | None = Field(
        default=None, description="transitions to send (and device_digest, the daily list of "
                                  "devices offline or faulty); default all")
    token: Secret | None = Field(default=None, description="sent as Authorization: Bearer")
    max_retry_interval: float = Field(default=30.0, gt=0, le=3600)


class PrivacyConfig(Strict):
    """Card numbers and person ids: pseudonymised with a keyed hash before they leave.

    ``key`` (HMAC-SHA256, at least 16 characters) comes from an environment
    variable or a file. ``keep_raw: true`` also keeps each pseudonym's raw value
    in ``raw_file`` on the gateway (mode 0600), for looking a card up on site;
    raw values are never sent anywhere either way.
    """

    key: Secret
    keep_raw: bool = False
    raw_file: Path | None = None

    @model_validator(mode="after")
    def _raw_file_with_keep_raw(self) -> "PrivacyConfig":
        if self.keep_raw and self.raw_file is None:
            raise ValueError("'keep_raw: true' needs 'raw_file' (where raw values stay, locally)")
        if not self.keep_raw and self.raw_file is not None:
            raise ValueError("'raw_file' goes with 'keep_raw: true'")
        return self


class ArmingGroup(Strict):
    """Zones armed together: by schedule (local time), and by hand from the console or API.

    ``schedule``: ``always`` (a pump room, 24-hour zones), ``never`` (by hand only),
    or daily windows such as ``["22:00-06:00"]``. Rules name their group with
    ``armed_by``.
    """

    id: Id
    name: str | None = Field(default=None, max_length=64)
    schedule: Literal["always", "never"] | list[str] = "never"

    @field_validator("schedule")
    @classmethod
    def _windows(cls, schedule: object) -> object:
        if isinstance(schedule, list):
            Schedule(schedule)  # raises ValueError naming the bad window
        return schedule


class GatewayConfig(Strict):
    """A whole site config file."""

    site: SiteInfo
    mqtt: MqttConfig | None = None
    influxdb: InfluxConfig | None = None
    local_series: LocalSeriesConfig | None = None
    privacy: PrivacyConfig | None = None
    arming: list[ArmingGroup] = []
    pipeline: PipelineConfig = PipelineConfig()
    outbox: OutboxConfig = OutboxConfig()
    http: HttpConfig | None = None
    console: ConsoleConfig | None = None
    # Local state that must survive a restart (open alarms, the outbox). Default: a folder
    # named after the site id under default_state_root(): two site files never share
    # alarms or sink cursors.
    state_dir: Path = Field(default_factory=lambda: default_state_root() / "unnamed-site")
    alarms: AlarmsConfig = AlarmsConfig()
    webhooks: list[WebhookConfig] = []
    buses: list[Bus] = []
    devices: list[Device] = []
    rules: list[Rule] = []
    fire_centre: FireCentreConfig | None = None  # the city fire remote-monitoring centre (GB/T 26875.3)

    @model_validator(mode="before")
    @classmethod
    def _state_per_site(cls, data: object) -> object:
        if isinstance(data, dict) and "state_dir" not in data:
            site = data.get("site")
            site_id = site.get("id") if isinstance(site, dict) else None
            if isinstance(site_id, str) and site_id and "/" not in site_id and site_id not in (".", ".."):
                return {**data, "state_dir": default_state_root() / site_id}
        return data


def default_state_root() -> Path:
    """Where sites without ``state_dir`` keep their state, one folder per site id:
    $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/community-gateway for
    root, else the user's $XDG_STATE_HOME/community-gateway (~/.local/state/...), so
    that `community-gateway run` works from a clone without root."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    if os.geteuid() == 0:
        return Path("/var/lib/community-gateway")
    home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(home) / "community-gateway"
