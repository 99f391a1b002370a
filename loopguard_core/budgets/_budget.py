"""A named budget: ceilings that many runs, agents and processes draw from, over a period in a time zone."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from .._bounds import MAX_COUNT, MAX_USD
from ..limits import usd_to_micros

__all__ = ["PERIODS", "Budget", "Window"]

PERIODS: tuple[str, ...] = ("none", "hour", "day", "month")


@dataclass(frozen=True)
class Window:
    """One period of a budget: its key (``2026-12-04``), when it began and when it resets (``None``: never)."""

    key: str
    starts_at: dt.datetime | None
    resets_at: dt.datetime | None


@dataclass(frozen=True)
class Budget:
    """``Budget("tenant-acme", period="day", timezone="Europe/Paris", max_cost_usd=50)``.

    Every guarded call of a breaker given this budget draws from it, together with the run's own limits and
    any other budgets: a tenant's daily spend, an application's monthly one. Ceilings are optional (``None``:
    no limit); at least one must be set. The period starts over at midnight (or the hour, or the first of the
    month) in ``timezone``; ``period="none"`` never resets.
    """

    name: str
    period: str = "none"
    timezone: str = "UTC"
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    max_turns: int | None = None
    max_tool_calls: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            raise TypeError(f"Budget.name must be a non-empty str of at most 200 characters, got {self.name!r}")
        if self.period not in PERIODS:
            raise ValueError(f"Budget.period must be one of {', '.join(PERIODS)}, got {self.period!r}")
        if not isinstance(self.timezone, str):
            raise TypeError(f"Budget.timezone must be an IANA zone name such as 'Europe/Paris', got {self.timezone!r}")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # here: zoneinfo loads sysconfig, not every user needs it

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"Budget.timezone {self.timezone!r} is not a known IANA time zone (e.g. 'UTC', 'Europe/Paris'); "
                "on Windows, install the tzdata package"
            ) from None
        cost = self.max_cost_usd
        if cost is not None:
            if isinstance(cost, bool) or not isinstance(cost, (int, float)):
                raise TypeError(f"Budget.max_cost_usd must be a number of USD, got {cost!r}")
            if not math.isfinite(cost) or not 0 <= cost <= MAX_USD:
                raise ValueError(f"Budget.max_cost_usd must be between 0 and {MAX_USD:,.0f}, got {cost!r}")
        for name in ("max_tokens", "max_turns", "max_tool_calls"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Budget.{name} must be an int, got {value!r}")
            if not 0 <= value <= MAX_COUNT:
                raise ValueError(f"Budget.{name} must be between 0 and {MAX_COUNT:,}, got {value!r}")
        if all(getattr(self, n) is None for n in ("max_cost_usd", "max_tokens", "max_turns", "max_tool_calls")):
            raise ValueError(
                f"Budget {self.name!r} sets no ceiling: give max_cost_usd, max_tokens, max_turns or max_tool_calls"
            )

    @property
    def max_cost_micros(self) -> int | None:
        return None if self.max_cost_usd is None else usd_to_micros(self.max_cost_usd)

    def ceilings(self) -> dict[str, int]:
        """The ceilings that are set, in the units the state counts (micro-USD for cost)."""
        out: dict[str, int] = {}
        if self.max_turns is not None:
            out["turns"] = self.max_turns
        if self.max_tool_calls is not None:
            out["tool_calls"] = self.max_tool_calls
        if self.max_tokens is not None:
            out["tokens"] = self.max_tokens
        micros = self.max_cost_micros
        if micros is not None:
            out["cost_micros"] = micros
        return out

    def window(self, now: float) -> Window:
        """The period that wall-clock time ``now`` (seconds since the epoch) falls in."""
        if self.period == "none":
            return Window("all", None, None)
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.timezone)
        local = dt.datetime.fromtimestamp(now, zone)
        if self.period == "hour":
            start = local.replace(minute=0, second=0, microsecond=0)
            key = start.strftime("%Y-%m-%dT%H")
            end = _add(start, hours=1, zone=zone)
        elif self.period == "day":
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            key = start.strftime("%Y-%m-%d")
            end = _add(start, days=1, zone=zone)
        else:
            start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            key = start.strftime("%Y-%m")
            year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
            end = start.replace(year=year, month=month)
        return Window(key, start, end)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period": self.period,
            "timezone": self.timezone,
            "max_cost_usd": self.max_cost_usd,
            "max_tokens": self.max_tokens,
            "max_turns": self.max_turns,
            "max_tool_calls": self.max_tool_calls,
        }


def _add(start: dt.datetime, *, zone: dt.tzinfo, days: int = 0, hours: int = 0) -> dt.datetime:
    """Local midnight (or hour) after ``start``: by the calendar, so a 23- or 25-hour DST day ends at midnight."""
    if hours:
        # An hour is an hour: add in UTC so the DST fold does not make it two (or zero).
        return (start.astimezone(dt.timezone.utc) + dt.timedelta(hours=hours)).astimezone(zone)
    naive = start.replace(tzinfo=None) + dt.timedelta(days=days)
    return naive.replace(tzinfo=zone)
