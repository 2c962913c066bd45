"""Upstream: time series out of the gateway, read from the durable outbox.

Sinks: InfluxDB v2 line protocol (``influx``), MQTT telemetry JSON
(``mqtt_telemetry``), a local line-protocol file (``local_file``); each fed by a
``SinkRunner`` after its own cursor. ``factory`` builds them from a site config.
"""
