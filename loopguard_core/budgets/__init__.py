"""Budgets above the run: ceilings that many runs, agents and processes draw from, per period.

::

    from loopguard_core import Breaker
    from loopguard_core.budgets import Budget

    tenant = Budget("tenant-acme", period="day", timezone="Europe/Paris", max_cost_usd=50)
    app = Budget("support-bot", period="month", max_cost_usd=500)
    breaker = Breaker(max_cost_usd=2, budgets=[tenant, app], budget_store="sqlite:///budgets.db")

Every guarded call is checked pre-flight against the run's limits and every budget it draws from, with the
same reservation semantics (a model call reserves its projected tokens and cost until it reports), atomically
in the budget store: ``memory://`` (this process), ``sqlite:///path`` (processes on one host), ``redis://``
(many hosts). A budget trip (``reason="budget"``) names the budget, its period and when it resets.
"""

from __future__ import annotations

from ._book import BudgetBook, BudgetReport, report
from ._budget import PERIODS, Budget, Window
from ._stores import BudgetStore, MemoryBudgets, RedisBudgets, SQLiteBudgets, budget_store

__all__ = [
    "PERIODS",
    "Budget",
    "BudgetBook",
    "BudgetReport",
    "BudgetStore",
    "MemoryBudgets",
    "RedisBudgets",
    "SQLiteBudgets",
    "Window",
    "budget_store",
    "reports",
]


def reports(store: BudgetStore, name: str | None = None) -> list[BudgetReport]:
    """Every stored period of every budget (or of ``name``), newest last: what ``loopguard budgets`` shows."""
    out = []
    for key, state in store.states("" if name is None else name + "\x1f").items():
        described = state.get("budget")
        if not isinstance(described, dict):
            continue
        out.append(report(described, key.split("\x1f", 1)[1], state))
    return out
