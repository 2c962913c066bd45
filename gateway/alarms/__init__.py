"""Alarms: their state, their lifecycle, and where they are published."""
