"""Charts as inline SVG built on the server: the timeline, the heatmap and the bars of top lists.

Pure: data in, `Markup` out. Every text is escaped here; colours come from CSS classes (no style
attribute, so the Content-Security-Policy needs no 'unsafe-inline'); nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from markupsafe import Markup, escape

from sandtrap.analysis.overview import Bucket

WIDTH, HEIGHT = 960, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 10, 24
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LEVELS = 8


def _nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value <= factor * step:
                return factor * step
        step *= 10


def _label(bucket: Bucket, step: timedelta) -> str:
    if step < timedelta(days=1):
        return f"{bucket.start:%d %b %H:%M}"
    return f"{bucket.start:%d %b}"


def timeline_svg(buckets: Sequence[Bucket]) -> Markup:
    """Connections as bars and logins as a line over them, with a y scale and a few x labels."""
    if not buckets:
        return Markup('<p class="empty">No data in this period.</p>')
    step = buckets[1].start - buckets[0].start if len(buckets) > 1 else timedelta(hours=1)
    peak = _nice_max(max(max(b.connections, b.logins) for b in buckets))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(buckets)
    parts = [
        f'<svg class="chart timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        ' aria-label="Connections and logins over time">'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{round(peak * fraction)}</text>"
        )
    points = []
    for i, bucket in enumerate(buckets):
        x = _LEFT + i * slot
        h = plot_h * bucket.connections / peak
        tip = escape(
            f"{_label(bucket, step)}: {bucket.connections} connections, {bucket.logins} logins"
        )
        parts.append(
            f'<rect class="bar" x="{x + slot * 0.1:.1f}" y="{_TOP + plot_h - h:.1f}"'
            f' width="{max(slot * 0.8, 1):.1f}" height="{h:.1f}"><title>{tip}</title></rect>'
        )
        points.append(f"{x + slot / 2:.1f},{_TOP + plot_h * (1 - bucket.logins / peak):.1f}")
    parts.append(f'<polyline class="line" points="{" ".join(points)}"/>')
    every = max(1, len(buckets) // 6)
    # Labels stop short of the right edge, where the last one would be cut.
    for i in range(0, len(buckets) - every // 2, every):
        x = _LEFT + i * slot + slot / 2
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"{escape(_label(buckets[i], step))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def heatmap_svg(grid: Sequence[Sequence[int]]) -> Markup:
    """Weekday rows by UTC hour columns; the cell's class (`q0`..`q8`) sets its shade."""
    cell, gap, left, top = 18, 2, 30, 14
    peak = max((max(row) for row in grid), default=0)
    width = left + 24 * (cell + gap)
    height = top + 7 * (cell + gap)
    parts = [
        f'<svg class="chart heatmap" viewBox="0 0 {width} {height}" role="img"'
        ' aria-label="Connections by weekday and hour (UTC)">'
    ]
    for hour in range(0, 24, 3):
        x = left + hour * (cell + gap) + cell / 2
        parts.append(
            f'<text class="axis" x="{x:.0f}" y="10" text-anchor="middle">{hour:02d}</text>'
        )
    for day, row in enumerate(grid):
        y = top + day * (cell + gap)
        parts.append(f'<text class="axis" x="0" y="{y + cell * 0.65:.0f}">{DAYS[day]}</text>')
        for hour, count in enumerate(row):
            level = 0 if count == 0 or peak == 0 else 1 + (LEVELS - 1) * count // peak
            tip = escape(f"{DAYS[day]} {hour:02d}:00 UTC: {count} connections")
            parts.append(
                f'<rect class="q{min(level, LEVELS)}" x="{left + hour * (cell + gap)}" y="{y}"'
                f' width="{cell}" height="{cell}" rx="3"><title>{tip}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def bar_svg(value: int, peak: int) -> Markup:
    """A thin horizontal bar, `value` of `peak`, for a row of a top list."""
    share = 0.0 if peak <= 0 else 100.0 * value / peak
    return Markup(  # noqa: S704 - numbers only
        '<svg class="minibar" viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="track" width="100" height="6"/><rect class="fill" width="{share:.1f}"'
        ' height="6"/></svg>'
    )
