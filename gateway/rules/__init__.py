"""Alarm rules: evaluated on every reading before anything waits on disk or network."""
