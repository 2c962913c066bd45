"""The gateway's one error hierarchy.

Library exceptions are wrapped where they leave a driver or a sink
(``raise DriverTimeout(...) from exc``) so the runtime only ever handles these.
Each error carries its facts as attributes, not only in its message.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A config file is invalid; ``problems`` lists (key path, what was expected)."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        lines = [f"{file}: {len(problems)} problem(s)"]
        # A problem of the whole file (unreadable, not YAML) has no key path: name the file.
        lines += [f"  {path or file}: {msg}" for path, msg in problems]
        if [path for path, _ in problems] == [""]:
            lines = [f"{file}: {problems[0][1]}"]
        super().__init__("\n".join(lines))


class DriverError(GatewayError):
    """A device could not be read or written."""

    def __init__(self, device: str, detail: str):
        self.device = device
        self.detail = detail
        super().__init__(f"{device}: {detail}")


class DriverConnectError(DriverError):
    """The bus, port or broker behind a device cannot be reached."""


class DriverTimeout(DriverError):
    """The device did not answer in time."""


class DriverProtocolError(DriverError):
    """The device answered with something the protocol does not allow."""


class DeviceException(DriverError):
    """The device answered with an exception (e.g. a Modbus exception code)."""

    def __init__(self, device: str, detail: str, code: int | None = None):
        self.code = code
        super().__init__(device, detail)


class SinkError(GatewayError):
    """An upstream write failed."""

    def __init__(self, sink: str, detail: str, status: int | None = None):
        self.sink = sink
        self.detail = detail
        self.status = status
        super().__init__(f"{sink}: {detail}")


class SinkRetryable(SinkError):
    """A write that may succeed later (network down, 5xx, 429)."""

    def __init__(self, sink: str, detail: str, status: int | None = None,
                 retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(sink, detail, status)


class SinkRejected(SinkError):
    """A write the upstream refuses for good (400, 422): retrying cannot fix it."""


class OutboxError(GatewayError):
    """The durable outbox could not be read or written (disk full, I/O error, permissions).

    ``disk_full`` tells a full disk (or file system quota) from other failures.
    """

    def __init__(self, path: str, detail: str, *, disk_full: bool = False):
        self.path = path
        self.detail = detail
        self.disk_full = disk_full
        super().__init__(f"outbox {path}: {detail}")
