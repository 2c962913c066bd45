"""The references stay true: every key of the profile models is documented, and every
relative link in the READMEs and docs/ points at something that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.modbus.register_map import ChannelGroup, ModbusProfile, RegisterField, RequestLimits
from drivers.mqtt.profile import ChannelsFrom, DeviceIdFrom, EventMap, FieldMap, MqttProfile

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "deploy" / "README.md", *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "drivers").glob("*/README.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("models, doc", [
    ((ModbusProfile, RegisterField, ChannelGroup, RequestLimits), "drivers/modbus/README.md"),
    ((MqttProfile, EventMap, FieldMap, ChannelsFrom, DeviceIdFrom), "drivers/mqtt/README.md"),
])
def test_every_profile_key_is_documented(models, doc: str) -> None:
    text = (REPO / doc).read_text()
    missing = [f"{m.__name__}.{key}" for m in models for key in m.model_fields
               if f"`{key}`" not in text and f"`{key}:" not in text and f".{key}`" not in text
               and f"{key}:" not in text]
    assert not missing, f"{doc} does not mention {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = [target for target, _ in LINK.findall(doc.read_text())
              if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, f"{doc.name}: broken links {broken}"


def test_the_readme_links_both_profile_references() -> None:
    text = (REPO / "README.md").read_text()
    assert "(drivers/modbus/README.md)" in text and "(drivers/mqtt/README.md)" in text
