"""Alarm hosts (intrusion and emergency panels) reporting over IP with SIA DC-09
frames carrying Ademco Contact ID; the gateway is their receiver."""
