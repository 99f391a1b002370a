"""``loopguard budgets``: spend per budget and period, from the budget store."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ._ledger import console, fail

__all__ = ["register"]


def _shown(amount: str, value: int) -> str:
    return f"{value / 1_000_000:.6f}" if amount == "cost_micros" else f"{value:,}"


_LABELS = {"cost_micros": "USD", "tokens": "tokens", "turns": "turns", "tool_calls": "tool calls"}


def register(group: Any) -> None:
    @group.command("budgets")
    @click.option(
        "--store",
        "url",
        default=None,
        metavar="URL",
        help="The budget store: sqlite:///PATH or redis://HOST:PORT/DB. Default: $LOOPGUARD_BUDGETS.",
    )
    @click.option("--name", default=None, help="Only this budget.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per budget period.")
    def budgets(url: str | None, name: str | None, as_json: bool) -> None:
        """Spend per budget and period: used, in flight, ceiling, left, and when the period resets."""
        from ..budgets import budget_store, reports
        from ..errors import MissingExtra, StoreError

        url = url or os.environ.get("LOOPGUARD_BUDGETS")
        if not url:
            fail("give the budget store: --store sqlite:///budgets.db (or redis://...), or set $LOOPGUARD_BUDGETS")
        if "://" not in url or url.startswith("sqlite"):
            path = url.split("://", 1)[1].removeprefix("/") if "://" in url else url
            if not os.path.exists(path):
                fail(f"no budget store at {path!r}")
        try:
            items = reports(budget_store(url), name)
        except (StoreError, MissingExtra, ValueError) as exc:
            fail(str(exc))
        if as_json:
            for r in items:
                click.echo(
                    json.dumps(
                        {
                            "name": r.name,
                            "period": r.period,
                            "window": r.window,
                            "timezone": r.timezone,
                            "resets_at": r.resets_at,
                            "used": r.used,
                            "in_flight": r.in_flight,
                            "limits": r.limits,
                            "remaining": r.remaining(),
                        },
                        sort_keys=True,
                    )
                )
            return
        from rich.table import Table

        table = Table(title=f"{url}: {len(items)} budget period(s)", title_justify="left")
        for column, justify in (
            ("budget", "left"),
            ("period", "left"),
            ("ceiling", "left"),
            ("used", "right"),
            ("in flight", "right"),
            ("limit", "right"),
            ("left", "right"),
            ("%", "right"),
            ("resets (local)", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for r in items:
            left, share = r.remaining(), r.fraction()
            for amount, limit in r.limits.items():
                pct = share[amount] * 100
                table.add_row(
                    r.name,
                    f"{r.period} {r.window}",
                    _LABELS[amount],
                    _shown(amount, r.used.get(amount, 0)),
                    _shown(amount, r.in_flight.get(amount, 0)),
                    _shown(amount, limit),
                    _shown(amount, left[amount]),
                    f"{pct:.0f}",
                    (r.resets_at or "never")[:16].replace("T", " "),
                    style="red" if pct >= 100 else ("yellow" if pct >= 80 else None),
                )
        console().print(table)
