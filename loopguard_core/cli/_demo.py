"""``loopguard demo``."""

from __future__ import annotations

import sqlite3
from typing import Any

import click

from ._ledger import fail


def register(group: Any) -> None:
    @group.command()
    @click.option(
        "--db",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="PATH",
        help="Where to write the demo ledger (a SQLite file). Default: ./loopguard-demo.db. A ledger the demo "
        "wrote before gets one more session; any other existing file is left untouched and refused (exit 2).",
    )
    @click.option("--no-frameworks", is_flag=True, help="Skip the per-framework runs.")
    @click.option("--no-review", is_flag=True, help="Do not print the review frame at the end.")
    def demo(db: str | None, no_frameworks: bool, no_review: bool) -> None:
        """Run a scripted runaway agent (no API key) and watch loopguard stop it.

        The ledger goes to ./loopguard-demo.db (or --db), and the commands printed at the end read it."""
        from ..demo import DemoLedgerRefused, run_demo
        from ..ledger import LedgerError

        try:
            report = run_demo(db_path=db, say=click.echo, frameworks=not no_frameworks, review=not no_review)
        except DemoLedgerRefused as exc:
            fail(str(exc))
        except (LedgerError, sqlite3.Error, OSError) as exc:
            fail(f"cannot write the demo ledger: {exc}")
        if report.result.trip is None:
            raise SystemExit(1)  # the demo exists to show a trip; anything else is a bug
