"""The overview's chart: accepted and delivered per minute over 24 hours, as SVG geometry drawn on the server.

No script draws it, so it works under the console's strict Content-Security-Policy and in a screenshot; the
template turns these numbers into ``<polyline>`` elements. Minutes are counted as whole minutes since the Unix
epoch (the database groups by them), so building the 1,440 points is arithmetic, not date formatting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

WIDTH, HEIGHT = 960, 200
LEFT, BOTTOM = 48, 24
TICK_EVERY_HOURS = 3


@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    points: str
    total: int


@dataclasses.dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: int
    peak: int
    series: list[Series]
    hour_ticks: list[tuple[float, str]]


def epoch_minute(moment: dt.datetime) -> int:
    return int(moment.timestamp()) // 60


def per_minute_chart(now: dt.datetime, minutes: int, named: list[tuple[str, str, dict[int, int]]]) -> Chart:
    """``named`` is (label, css class, counts by epoch minute); one point per minute, oldest on the left."""
    first = epoch_minute(now) - minutes + 1
    plot_width, plot_height = WIDTH - LEFT, HEIGHT - BOTTOM
    step = plot_width / max(1, minutes - 1)
    peak = max([1, *(max(counts.values(), default=0) for _, _, counts in named)])
    series = []
    for label, css_class, counts in named:
        values = [counts.get(first + i, 0) for i in range(minutes)]
        scale = plot_height / peak
        points = " ".join(f"{LEFT + step * i:.1f},{plot_height - scale * v:.1f}" for i, v in enumerate(values))
        series.append(Series(label, css_class, points, sum(values)))
    ticks = []
    for i in range(-(first % 60) % 60, minutes, 60):
        moment = dt.datetime.fromtimestamp((first + i) * 60, dt.UTC)
        if moment.hour % TICK_EVERY_HOURS == 0:
            ticks.append((LEFT + step * i, moment.strftime("%H:%M")))
    return Chart(WIDTH, HEIGHT, LEFT, BOTTOM, peak, series, ticks)
