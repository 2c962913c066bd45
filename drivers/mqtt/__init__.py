"""MQTT devices: JSON messages mapped to readings and events by a per-profile mapping."""

from drivers.mqtt.device import MqttDeviceSource
from drivers.mqtt.mapping import PROBLEMS, MessageMapping
from drivers.mqtt.profile import MqttProfile
from drivers.mqtt.pseudonym import Pseudonymiser, RawValueLog

__all__ = ["PROBLEMS", "MessageMapping", "MqttDeviceSource", "MqttProfile", "Pseudonymiser",
           "RawValueLog"]
