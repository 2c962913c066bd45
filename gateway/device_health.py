"""Per-device health counters: kept by the runners; read by the API, console, metrics, demo."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class DeviceHealth:
    """How one device is doing."""

    device: str
    online: bool | None = None  # None until the first poll
    polls: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    last_success: float | None = None
    last_error: str | None = None
    response_time: float | None = None  # seconds, last successful poll
    missed_slots: int = 0  # poll slots skipped because the previous poll (or the loop) ran late

    def to_json(self) -> dict[str, object]:
        """For /api/devices."""
        return {
            "online": self.online, "polls": self.polls, "errors": self.errors,
            "last_success": self.last_success, "last_error": self.last_error,
            "response_time": self.response_time,
        }
