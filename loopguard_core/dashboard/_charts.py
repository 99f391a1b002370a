"""Chart geometry for inline SVG drawn by the templates (no chart library, no script).

The functions only compute coordinates and labels; the templates write the SVG (autoescaped, so a label can
never become markup).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bar", "BarChart", "LineChart", "Tick", "bar_chart", "line_chart"]

WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 78, 24, 14, 26
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    flight_y: float
    flight_height: float
    level: str
    title: str


@dataclass(frozen=True)
class BarChart:
    """One bar per period (used, with what is in flight on top), and the ceiling as a dashed line."""

    title: str
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    limit_y: float | None
    limit_label: str


@dataclass(frozen=True)
class LineChart:
    """A cumulative amount over time as a step line, with the ceiling and "now" marked."""

    title: str
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    points: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    limit_y: float | None
    limit_label: str
    now_x: float | None
    total_label: str


def _level(value: float, limit: float | None) -> str:
    if limit is None:
        return "ok"
    if limit <= 0:
        return "over" if value > 0 else "ok"
    share = value / limit
    return "over" if share >= 1 else ("warn" if share >= 0.8 else "ok")


def _y_ticks(top_value: float, fmt: Callable[[float], str]) -> tuple[Tick, ...]:
    return tuple(Tick(LEFT - 6, TOP + PLOT_H * (1 - f), fmt(top_value * f)) for f in (0.0, 0.5, 1.0))


def bar_chart(
    points: Sequence[tuple[str, float, float]],
    *,
    limit: float | None,
    fmt: Callable[[float], str],
    title: str,
) -> BarChart:
    """``points``: ``(label, used, in_flight)`` per period, oldest first."""
    n = max(len(points), 1)
    highest = max((used + flight for _, used, flight in points), default=0.0)
    top_value = max(highest, limit or 0.0) * 1.1 or 1.0
    step = PLOT_W / n
    bar_w = max(2.0, min(step * 0.7, 48.0))
    bars = []
    x_ticks = []
    label_every = max(1, -(-len(points) // 10))
    for i, (label, used, flight) in enumerate(points):
        x = LEFT + i * step + (step - bar_w) / 2
        h_used = PLOT_H * used / top_value
        h_flight = PLOT_H * flight / top_value
        y_used = TOP + PLOT_H - h_used
        share = f", {100 * (used + flight) / limit:.0f} % of {fmt(limit)}" if limit else ""
        in_flight = f", {fmt(flight)} in flight" if flight else ""
        bars.append(
            Bar(
                round(x, 1),
                round(bar_w, 1),
                round(y_used, 1),
                round(max(h_used, 1.0 if used else 0.0), 1),
                round(y_used - h_flight, 1),
                round(h_flight, 1),
                _level(used + flight, limit),
                f"{label}: {fmt(used)} used{in_flight}{share}",
            )
        )
        if i % label_every == 0 or i == len(points) - 1:
            x_ticks.append(Tick(round(LEFT + i * step + step / 2, 1), TOP + PLOT_H + 16, label))
    limit_y = None if limit is None else round(TOP + PLOT_H * (1 - limit / top_value), 1)
    return BarChart(
        title,
        WIDTH,
        HEIGHT,
        LEFT,
        TOP,
        PLOT_W,
        PLOT_H,
        tuple(bars),
        _y_ticks(top_value, fmt),
        tuple(x_ticks),
        limit_y,
        "" if limit is None else f"limit {fmt(limit)}",
    )


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    start: float,
    end: float,
    now: float,
    limit: float | None,
    fmt: Callable[[float], str],
    title: str,
    tz: dt.tzinfo | None = None,
) -> LineChart:
    """``points``: ``(unix seconds, amount)`` in time order; drawn as the running total."""
    span = max(end - start, 1.0)
    total = sum(v for _, v in points)
    top_value = max(total, limit or 0.0) * 1.1 or 1.0

    def x_of(t: float) -> float:
        return round(LEFT + PLOT_W * min(max((t - start) / span, 0.0), 1.0), 1)

    def y_of(v: float) -> float:
        return round(TOP + PLOT_H * (1 - v / top_value), 1)

    coords = [f"{x_of(start)},{y_of(0)}"]
    running = 0.0
    for t, value in points:
        coords.append(f"{x_of(t)},{y_of(running)}")
        running += value
        coords.append(f"{x_of(t)},{y_of(running)}")
    last = min(max(now, points[-1][0] if points else start), end)
    coords.append(f"{x_of(last)},{y_of(running)}")
    zone = tz or dt.timezone.utc
    long = span > 2 * 86_400
    x_ticks = tuple(
        Tick(
            x_of(t),
            TOP + PLOT_H + 16,
            dt.datetime.fromtimestamp(t, zone).strftime("%m-%d" if long else "%H:%M"),
        )
        for t in (start, start + span / 2, start + span)
    )
    return LineChart(
        title,
        WIDTH,
        HEIGHT,
        LEFT,
        TOP,
        PLOT_W,
        PLOT_H,
        " ".join(coords),
        _y_ticks(top_value, fmt),
        x_ticks,
        None if limit is None else y_of(limit),
        "" if limit is None else f"limit {fmt(limit)}",
        x_of(now) if start <= now <= end else None,
        fmt(total),
    )
