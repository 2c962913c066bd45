"""``python -m gateway`` is the same program as ``community-gateway``."""

from gateway.cli import main

raise SystemExit(main())
