"""Benchmarks of the gateway's targets (design.md, Targets): speed and memory figures.

Run ``python -m bench`` from the repository root (``--quick`` for a smoke run,
``--only NAME`` for one benchmark). Figures are reported, never asserted.
"""
