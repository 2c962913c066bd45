"""The TLS context for a broker connection, from ``mqtt.tls``.

Built at each connect, not at start: a certificate renewed on disk is used at
the next reconnect without a restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

import aiomqtt


class TlsSettings(Protocol):
    """What ``mqtt.tls`` (gateway.config.models.MqttTls) holds; a shared module such as
    this one imports no config."""

    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    insecure: bool


def tls_context(tls: TlsSettings | None) -> ssl.SSLContext | None:
    """A client context that verifies the broker (unless ``insecure``), with the
    client certificate if one is configured; None without TLS."""
    if tls is None:
        return None
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except OSError as exc:  # ssl.SSLError included: a file gone or unreadable since the check
        # A connection error like any other: logged once, retried with backoff.
        raise aiomqtt.MqttError(f"TLS setup failed: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.insecure:
        context.check_hostname = False  # the chain is still verified
    return context
