"""The top of a site config file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.config.base import Id, Secret, Strict
from gateway.config.devices import Bus, Device
from gateway.config.rules import Rule


class SiteInfo(Strict):
    """The compound this gateway serves."""

    id: Id
    name: str | None = None
    subdistrict: str | None = None
    community: str | None = None
    compound: str | None = None
    language: Literal["en", "zh"] = "en"


class MqttConfig(Strict):
    """The broker for alarms, status and (optionally) telemetry."""

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: str = Field(default="community", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    client_id: str | None = Field(default=None, description="default: gateway-<site id>")
    username: str | None = None
    password: Secret | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)


class InfluxConfig(Strict):
    """An InfluxDB v2 write API (InfluxDB, or VictoriaMetrics which accepts it)."""

    url: str = Field(pattern=r"^https?://")
    org: str
    bucket: str
    token: Secret
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval: float = Field(default=1.0, gt=0, le=60)
    timeout: float = Field(default=10.0, gt=0, le=300)


class LocalSeriesConfig(Strict):
    """Keep the time series in a local line-protocol file (no InfluxDB needed)."""

    path: Path
    max_mb: float = Field(default=100, gt=0)


class PipelineConfig(Strict):
    """Queue bounds."""

    queue_size: int = Field(default=10_000, ge=10)
    # Readings held in memory for the upstream while it is slow or down; the
    # oldest are dropped (and counted) past this.
    upstream_buffer: int = Field(default=200_000, ge=100)


class GatewayConfig(Strict):
    """A whole site config file."""

    site: SiteInfo
    mqtt: MqttConfig | None = None
    influxdb: InfluxConfig | None = None
    local_series: LocalSeriesConfig | None = None
    pipeline: PipelineConfig = PipelineConfig()
    buses: list[Bus] = []
    devices: list[Device] = []
    rules: list[Rule] = []
