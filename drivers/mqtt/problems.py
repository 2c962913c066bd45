"""Bad messages of one device: counted always, logged once when they start and once when they stop.

A kind of problem (malformed JSON, a missing field) is "occurring" from its
first message until ``quiet_after`` seconds pass without another one; a device
that sends every tenth message broken logs two lines, not one per message.
"""

from __future__ import annotations

import logging

from drivers.mqtt.mapping import PROBLEMS

log = logging.getLogger(__name__)

QUIET_AFTER_S = 300.0


class ProblemLog:
    """Counters per problem kind, and the log lines for the changes of state."""

    def __init__(self, device_id: str, *, quiet_after: float = QUIET_AFTER_S,
                 counts: dict[str, int] | None = None):
        self.device_id = device_id
        self.quiet_after = quiet_after
        self.counts: dict[str, int] = counts if counts is not None else {}
        self._last: dict[str, float] = {}  # occurring kind -> when last seen

    def bad(self, kind: str, detail: str, now: float) -> None:
        """Count one problem; log it if this kind was not occurring."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        last = self._last.get(kind)
        if last is None or now - last > self.quiet_after:
            log.warning("%s: %s (%s); %d so far, counted without further log lines while it "
                        "goes on", self.device_id, PROBLEMS.get(kind, kind), detail,
                        self.counts[kind])
        self._last[kind] = now

    def good(self, now: float) -> None:
        """A message without problems: close the kinds that have gone quiet."""
        if not self._last:
            return
        for kind, last in list(self._last.items()):
            if now - last > self.quiet_after:
                del self._last[kind]
                log.info("%s: no more %s for %.0fs (%d in all)", self.device_id,
                         kind.replace("_", " "), now - last, self.counts[kind])
