"""Is the gateway alive, and what is down: for the systemd watchdog and ``/healthz``.

The watchdog asks only about the gateway's own machinery (the pipeline makes
progress, the device runners run): a broker or a sensor that is away is not a
reason to restart the process. ``/healthz`` reports everything, naming what is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.views import RunningParts

# A pipeline with work queued that processed nothing for this long is stuck.
STALL_SECONDS = 10.0


class PipelineWatch:
    """Notices a pipeline that has work queued but makes no progress.

    Stalled means: seen with batches queued and nothing processed since, at two
    looks at least ``stall_after`` seconds apart. An idle pipeline (empty queue)
    is alive, however long it has been idle.
    """

    def __init__(self, pipeline: Any, *, stall_after: float = STALL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic):
        # ``pipeline``: its queue and its readings, events and failed counts are read
        self._pipeline = pipeline
        self.stall_after = stall_after
        self._monotonic = monotonic
        self._done = -1
        self._since: float | None = None

    def problem(self) -> str | None:
        """None while the pipeline keeps up, else what is wrong."""
        p = self._pipeline
        done = p.readings + p.events + p.failed  # a skipped item is progress too
        now = self._monotonic()
        if done != self._done or p.queue.empty():
            self._done = done
            self._since = None
            return None
        if self._since is None:
            self._since = now
            return None
        stuck = now - self._since
        if stuck >= self.stall_after:
            return f"pipeline stalled: {p.queue.qsize()} batches queued, none processed for {stuck:.0f}s"
        return None


def watchdog_problem(gateway: RunningParts, watch: PipelineWatch) -> str | None:
    """What keeps the watchdog from being fed: a stalled pipeline or a device task that ended."""
    stalled = watch.problem()
    if stalled is not None:
        return stalled
    ended = [name for name, task in gateway.device_tasks.items() if task.done()]
    if ended:
        return f"device task(s) ended: {', '.join(sorted(ended))}"
    return None


def status_line(gateway: RunningParts) -> str:
    """One line for ``systemctl status``: devices, broker, alarms."""
    offline = sum(1 for r in gateway.runners if r.health.online is False)
    parts = [f"{len(gateway.runners)} devices ({offline} offline)"]
    if gateway.mqtt is not None:
        parts.append("mqtt " + ("connected" if gateway.mqtt.connected else "DOWN"))
    fire = getattr(gateway, "fire_centre", None)
    if fire is not None:
        parts.append("fire centre " + ("connected" if fire.link.connected else "DOWN"))
    parts.append(f"{len(gateway.alarms.open_alarms())} open alarms")
    return ", ".join(parts)


def health_report(gateway: RunningParts, watch: PipelineWatch) -> tuple[bool, dict[str, Any]]:
    """``(healthy, body)`` for ``/healthz``; ``body["down"]`` names each part that is down."""
    down: list[str] = []
    problem = watchdog_problem(gateway, watch)
    if problem is not None:
        down.append(problem)
    mqtt = gateway.mqtt
    if mqtt is not None and not mqtt.connected:
        down.append(f"mqtt: not connected to {mqtt.config.host}:{mqtt.config.port}")
    fire = getattr(gateway, "fire_centre", None)
    if fire is not None and not fire.link.connected:
        down.append(f"fire centre {fire.config.host}:{fire.config.port}: "
                    f"{fire.link.last_error or 'not connected'} "
                    f"({fire.link.stats()['queued']} frames queued)")
    for sink in gateway.sinks:
        if sink.failing:
            down.append(f"sink {sink.name}: {sink.last_error or 'failing'}")
    offline = sorted(r.device_id for r in gateway.runners if r.health.online is False)
    down.extend(f"device {d}: offline" for d in offline)
    body: dict[str, Any] = {
        "status": "down" if down else "ok",
        "site": gateway.site.config.site.id,
        "down": down,
        "devices": {"total": len(gateway.runners), "offline": len(offline)},
    }
    return not down, body
