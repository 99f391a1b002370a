"""``loopguard demo``."""

from __future__ import annotations

from typing import Any

import click


def register(group: Any) -> None:
    @group.command()
    @click.option("--db", type=click.Path(dir_okay=False), default=None, help="Where to write the demo ledger.")
    @click.option("--no-frameworks", is_flag=True, help="Skip the per-framework runs.")
    @click.option("--no-review", is_flag=True, help="Do not print the review frame at the end.")
    def demo(db: str | None, no_frameworks: bool, no_review: bool) -> None:
        """Run a scripted runaway agent (no API key) and watch loopguard stop it."""
        from ..demo import run_demo

        report = run_demo(db_path=db, say=click.echo, frameworks=not no_frameworks, review=not no_review)
        if report.result.trip is None:
            raise SystemExit(1)  # the demo exists to show a trip; anything else is a bug
