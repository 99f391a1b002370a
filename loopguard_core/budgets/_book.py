"""The budgets one breaker draws from: reserve before a call, settle after it, give back what did not happen."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LoopGuardTripped
from ._budget import Budget, Window
from ._rules import release, reserve, settle, totals
from ._stores import BudgetStore

__all__ = ["BudgetBook", "BudgetReport"]

_MAX_PENDING = 4_096
_KEEP_AFTER_PERIOD = 35 * 86_400  # a finished period stays readable (reports) this long in Redis


@dataclass(frozen=True)
class BudgetReport:
    """One budget's period: what was spent and what is left (``loopguard budgets``, alerts, telemetry)."""

    name: str
    period: str
    window: str
    timezone: str
    resets_at: str | None
    used: dict[str, int]
    in_flight: dict[str, int]
    limits: dict[str, int]

    def remaining(self) -> dict[str, int]:
        return {k: max(0, limit - self.used.get(k, 0) - self.in_flight.get(k, 0)) for k, limit in self.limits.items()}

    def fraction(self) -> dict[str, float]:
        """Spent (with what is in flight) over the ceiling, per ceiling: 0.8 is 80 %."""
        return {
            k: (self.used.get(k, 0) + self.in_flight.get(k, 0)) / limit if limit else 1.0
            for k, limit in self.limits.items()
        }


def key_of(budget: Budget, window: Window) -> str:
    return f"{budget.name}\x1f{window.key}"


class BudgetBook:
    """Reserves each call against every budget at once (all or none), in one store transaction."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        store: BudgetStore,
        *,
        wall_clock: Callable[[], float] | None = None,
        hold_seconds: float = 600.0,
    ) -> None:
        names = [b.name for b in budgets]
        if len(set(names)) != len(names):
            raise ValueError(f"budgets have duplicate names {names}: each budget needs its own name")
        self.budgets = tuple(budgets)
        self.store = store
        # The store's idea of "now" (tests move it; a store may follow a server's clock).
        self._now: Callable[[], float] = (
            wall_clock if wall_clock is not None else getattr(store, "wall_clock", time.time)
        )
        self._hold = hold_seconds
        self._keys: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def reserve(self, rid: str, amounts: dict[str, int], *, count_now: bool, facts: dict[str, Any]) -> None:
        """Reserve ``amounts`` in every budget, or raise ``LoopGuardTripped(reason="budget")`` naming the first
        budget that would be exceeded, its period and when it resets (nothing is reserved then)."""
        now = self._now()
        windows = [(b, b.window(now)) for b in self.budgets]
        keys = [key_of(b, w) for b, w in windows]

        def step(states: list[dict[str, Any]]) -> tuple[tuple[Budget, Window, dict[str, Any]] | None, bool]:
            for (budget, window), state in zip(windows, states):
                refused = reserve(state, budget.ceilings(), rid, amounts, now, self._hold, count_now=count_now)
                if refused is not None:
                    return (budget, window, refused), False  # all or none: nothing is saved
                state["budget"] = budget.describe()
                state["window"] = window.key
                state["resets_at"] = None if window.resets_at is None else window.resets_at.isoformat()
                if window.resets_at is not None:
                    state["ttl_seconds"] = max(60, int(window.resets_at.timestamp() - now) + _KEEP_AFTER_PERIOD)
            return None, True

        refused = self.store.transact(keys, step)
        if refused is not None:
            raise _trip(*refused, facts)
        with self._lock:
            self._keys[rid] = keys
            while len(self._keys) > _MAX_PENDING:
                self._keys.popitem(last=False)

    def settle(self, rid: str, spent: dict[str, int]) -> None:
        keys = self._take(rid)
        if keys:
            self.store.transact(keys, lambda states: (None, _each(states, lambda s: settle(s, rid, spent))))

    def release(self, rid: str) -> None:
        keys = self._take(rid)
        if keys:
            self.store.transact(keys, lambda states: (None, _each(states, lambda s: release(s, rid))))

    def _take(self, rid: str) -> list[str] | None:
        with self._lock:
            return self._keys.pop(rid, None)

    def reports(self) -> list[BudgetReport]:
        now = self._now()
        out = []
        for budget in self.budgets:
            window = budget.window(now)
            key = key_of(budget, window)
            state = self.store.states(key).get(key)
            out.append(report(budget.describe(), window.key, state, window.resets_at))
        return out


def report(described: dict[str, Any], window: str, state: dict[str, Any] | None, resets: Any = None) -> BudgetReport:
    used = {k: int(v) for k, v in (state or {}).get("used", {}).items()}
    everything = totals(state) if state else {}
    in_flight = {k: everything.get(k, 0) - used.get(k, 0) for k in everything}
    budget = Budget(**described)
    resets_at = resets.isoformat() if isinstance(resets, dt.datetime) else (state or {}).get("resets_at")
    return BudgetReport(
        budget.name, budget.period, window, budget.timezone, resets_at, used, in_flight, budget.ceilings()
    )


def _each(states: list[dict[str, Any]], fn: Callable[[dict[str, Any]], None]) -> bool:
    for state in states:
        fn(state)
    return True


_NAMES = {"turns": "max_turns", "tool_calls": "max_tool_calls", "tokens": "max_tokens", "cost_micros": "max_cost_usd"}


def _trip(budget: Budget, window: Window, refused: dict[str, Any], facts: dict[str, Any]) -> LoopGuardTripped:
    amount = refused["amount"]

    def shown(micros_or_count: int) -> float | int:
        return round(micros_or_count / 1_000_000, 6) if amount == "cost_micros" else micros_or_count

    when = "never" if window.resets_at is None else window.resets_at.isoformat(timespec="minutes")
    return LoopGuardTripped(
        "budget",
        terminal=True,
        budget=budget.name,
        period=budget.period,
        window=window.key,
        timezone=budget.timezone,
        resets_at=when,
        ceiling=_NAMES[amount],
        observed=shown(refused["spent"] + refused["in_flight"] + refused["this_call"]),
        spent=shown(refused["spent"]),
        limit=shown(refused["limit"]),
        **facts,
    )
