"""Upstream: time series out of the gateway (InfluxDB v2 line protocol, a local file)."""
