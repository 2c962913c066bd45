"""The running gateway: the process (app), the reading pipeline, device runners,
actions, config reload and the MQTT link."""
