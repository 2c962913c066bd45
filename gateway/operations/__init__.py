"""Operating the gateway: the local HTTP API, Prometheus metrics, systemd
notifications and watchdog, liveness checks and log formatting."""
