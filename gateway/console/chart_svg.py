"""A line chart as a self-contained SVG: one line per channel over the last hour.

Drawn on the gateway (no chart library, nothing fetched from a CDN), so the
console shows it as a plain ``<img>``. Each line carries ``data-channel`` and
``data-last`` (its last value) for anyone reading the SVG rather than looking.
"""

from __future__ import annotations

import math
import time
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 96, 16, 28
# Readable on the console's dark panel, and told apart without colour by the legend order.
COLOURS = ("#69b1ff", "#ffa940", "#ff4d4f", "#52c41a", "#b37feb", "#36cfc9", "#f759ab", "#d3adf7")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.001:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _num(value: float) -> str:
    return f"{value:.6g}"


def render_chart(series: dict[str, list[tuple[float, float]]], *, now: float, window: float,
                 unit: str | None = None, title: str = "", empty_text: str = "No readings yet.") -> str:
    """SVG text: ``series`` maps a legend label to (ts, value) points, oldest first."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    start = now - window
    values = [v for points in series.values() for _, v in points]
    ticks = nice_ticks(min(values + [0.0]), max(values + [0.0])) if values else [0.0, 1.0]
    low, high = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1

    def x(ts: float) -> float:
        return LEFT + (ts - start) / window * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (v - low) / (high - low) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="system-ui, sans-serif" font-size="12" '
           f'role="img" aria-label="{escape(title, {chr(34): "&quot;"})}">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#18212b"/>']
    for tick in ticks:
        ty = y(tick)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
                   f'stroke="#2e3b4a"/>')
        out.append(f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" fill="#9aa8b6" text-anchor="end">'
                   f'{escape(_num(tick))}</text>')
    if unit:
        out.append(f'<text x="{LEFT - 6}" y="{TOP - 4}" fill="#9aa8b6" text-anchor="end">'
                   f'{escape(unit)}</text>')
    step = next((m for m in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
                 if window / m <= 6), 7200)
    for k in range(int(window // step) + 1):  # at most 6 time marks, back from now
        ts = now - k * step
        tx = x(ts)
        label = time.strftime("%H:%M" if step >= 60 else "%H:%M:%S", time.localtime(ts))
        out.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                   f'stroke="#2e3b4a" stroke-dasharray="2 4"/>')
        out.append(f'<text x="{tx:.1f}" y="{HEIGHT - 8}" fill="#9aa8b6" text-anchor="middle">'
                   f'{label}</text>')
    if not values:
        out.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" fill="#9aa8b6" '
                   f'text-anchor="middle" font-size="15">{escape(empty_text)}</text>')
    for i, (label, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(ts):.1f},{y(v):.1f}" for ts, v in points if ts >= start)
        if not path:
            continue
        last = points[-1][1]
        out.append(f'<polyline class="series" data-channel="{escape(label)}" data-last="{_num(last)}" '
                   f'points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                   f'stroke-linejoin="round"/>')
        ly = TOP + 10 + i * 18
        out.append(f'<line x1="{WIDTH - RIGHT + 10}" x2="{WIDTH - RIGHT + 26}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 30}" y="{ly + 4}" fill="#e8edf2">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
