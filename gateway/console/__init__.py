"""The security-room web console: live alarms, devices and history, served by the gateway.

``add_console_routes(app, views)`` adds it under ``/console`` to the gateway's
HTTP app (gateway.operations.http_app). Plain HTML, CSS and JavaScript in ``static/``: no build
step, nothing loaded from outside the gateway.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_console_routes"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so the CLI's `user` command does not load the HTTP server.
    if name == "add_console_routes":
        from gateway.console.routes import add_console_routes

        return add_console_routes
    raise AttributeError(name)
