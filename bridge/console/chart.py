"""The overview's chart: accepted and delivered per minute over 24 hours, as SVG geometry drawn on the server.

No script draws it, so it works under the console's strict Content-Security-Policy and in a screenshot; the
template turns these numbers into ``<polyline>`` elements.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

WIDTH, HEIGHT = 960, 200
LEFT, BOTTOM = 48, 24


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


def per_minute_chart(now: dt.datetime, minutes: int, named: list[tuple[str, str, dict[str, int]]]) -> Chart:
    """``named`` is (label, css class, counts by "YYYY-MM-DD HH:MM"); one point per minute, oldest on the left."""
    start = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes - 1)
    keys = [(start + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M") for i in range(minutes)]
    peak = max([1, *(max(counts.values(), default=0) for _, _, counts in named)])
    plot_width, plot_height = WIDTH - LEFT, HEIGHT - BOTTOM

    def x(i: int) -> float:
        return LEFT + plot_width * i / max(1, minutes - 1)

    series = []
    for label, css_class, counts in named:
        values = [counts.get(key, 0) for key in keys]
        points = " ".join(f"{x(i):.1f},{plot_height - plot_height * v / peak:.1f}" for i, v in enumerate(values))
        series.append(Series(label, css_class, points, sum(values)))
    ticks = [
        (x(i), (start + dt.timedelta(minutes=i)).strftime("%H:%M"))
        for i in range(minutes)
        if (start + dt.timedelta(minutes=i)).minute == 0 and (start + dt.timedelta(minutes=i)).hour % 3 == 0
    ]
    return Chart(WIDTH, HEIGHT, LEFT, BOTTOM, peak, series, ticks)
