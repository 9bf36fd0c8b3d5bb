"""Small server-side SVG line charts for the dashboard: no JavaScript library, nothing fetched."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= step), default=step)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(count + 2) if first + i * step <= high + 1e-12]


# Beyond this the axis span (high - low) could overflow to infinity; no real metric is this large.
_LIMIT = 1e300


def _plottable(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= _LIMIT


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        return f"{value:.2g}"
    return f"{value:.4g}"


def _span(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def line_chart(
    times: Sequence[float],
    mean: Sequence[float],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    *,
    title: str,
    units: str = "",
    width: int = 560,
    height: int = 180,
) -> str:
    """Mean as a line, [low, high] as a band; x is seconds before the last point.

    Values that are not finite are left out: a host can report ``inf`` (anyone who can send to gmond can
    choose a value), and an infinite axis has no ticks."""
    left, right, top, bottom = 56, 12, 22, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="{left}" y="14" class="chart-title">'
        f"{escape(title)}{escape(f' ({units})' if units else '')}</text>"
    )
    points = [(t, m) for t, m in zip(times, mean, strict=True) if _plottable(m)]
    if len(points) < 1:
        return head + f'<text x="{left}" y="{top + plot_h / 2}">no data yet</text></svg>'
    values = [m for _, m in points]
    if low is not None and high is not None:
        values += [v for v in low if _plottable(v)] + [v for v in high if _plottable(v)]
    y_low, y_high = min(values), max(values)
    if y_high == y_low:
        y_low, y_high = y_low - 1, y_high + 1
    t_end = times[-1]
    t_start = min(times[0], t_end - 1)

    def x(t: float) -> float:
        return left + (t - t_start) / (t_end - t_start) * plot_w

    def y(v: float) -> float:
        return top + (1 - (v - y_low) / (y_high - y_low)) * plot_h

    parts = [head, f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="chart-frame"/>']
    for tick in _ticks(y_low, y_high):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'class="chart-grid"/>'
            f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" '
            f'class="chart-label">{_fmt(tick)}</text>'
        )
    span = t_end - t_start
    parts.append(
        f'<text x="{left}" y="{height - 8}" class="chart-label">{_span(span)} earlier</text>'
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" class="chart-label">'
        f"{time.strftime('%H:%M:%S', time.localtime(t_end))}</text>"
    )
    if low is not None and high is not None:
        band = [
            (t, lo, hi)
            for t, lo, hi in zip(times, low, high, strict=True)
            if _plottable(lo) and _plottable(hi)
        ]
        if len(band) > 1:
            upper = " ".join(f"{x(t):.1f},{y(hi):.1f}" for t, _, hi in band)
            lower = " ".join(f"{x(t):.1f},{y(lo):.1f}" for t, lo, _ in reversed(band))
            parts.append(f'<polygon points="{upper} {lower}" class="chart-band"/>')
    line = " ".join(f"{x(t):.1f},{y(m):.1f}" for t, m in points)
    if len(points) == 1:
        t, m = points[0]
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(m):.1f}" r="3" class="chart-line"/>')
    else:
        parts.append(f'<polyline points="{line}" class="chart-line" fill="none"/>')
    parts.append("</svg>")
    return "".join(parts)
