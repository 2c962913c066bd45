"""What the terminal tools share to talk to a running gateway's HTTP API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token-env`` / ``--token-file``. A command that writes needs the
    token; one that reads sends it when set, for a gateway whose listener is not loopback."""
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"the gateway's HTTP API, its http.listen (default {DEFAULT_URL})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token-env", metavar="VAR", default="GATEWAY_API_TOKEN",
                       help="environment variable holding the API token, the same secret "
                            "as the config's http.token (default GATEWAY_API_TOKEN)")
    group.add_argument("--token-file", metavar="FILE", type=Path,
                       help="file holding the API token instead")


def api_token(args: argparse.Namespace) -> str | None:
    """The token from ``--token-file`` or ``--token-env``; None (and a message) if absent."""
    if getattr(args, "token_file", None) is not None:
        try:
            return args.token_file.read_text().strip() or None
        except OSError as exc:
            print(f"cannot read {args.token_file}: {exc.strerror}", file=sys.stderr)
            return None
    value = os.environ.get(args.token_env, "").strip()
    if not value:
        print(f"no token: set {args.token_env} (or use --token-file)", file=sys.stderr)
        return None
    return value


def read_headers(args: argparse.Namespace) -> dict[str, str]:
    """``Authorization`` for a read when a token is at hand: a gateway whose listener is
    not loopback wants it for reads too; one on loopback ignores it."""
    if getattr(args, "token_file", None) is not None:
        token = api_token(args)
    else:
        token = os.environ.get(getattr(args, "token_env", "GATEWAY_API_TOKEN"), "").strip() or None
    return {"Authorization": f"Bearer {token}"} if token else {}


def base_url(args: argparse.Namespace) -> str:
    """``--url`` without a trailing slash."""
    return str(args.url).rstrip("/")
